//! The tenant repositories, implemented on [`crate::tenant::SqlTenantTx`].

mod api_keys;
mod audit;
mod batch;
mod budgets;
mod conversations;
mod embedding_jobs;
mod erasure;
mod library;
mod memories;
mod mfa;
mod password_tokens;
mod personas;
mod platform_audit;
mod providers;
mod retention;
mod roles;
mod scim;
mod sessions;
mod sso;
mod tenant_keys;
mod usage;
mod users;

/// A count for an INTEGER column: counts beyond `i32::MAX` (never met in
/// practice) are stored saturated rather than refused.
fn i32_of(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Binds the columns that name one provider call, in the order usage records
/// and budget reservations both store them: id, user, API key, conversation,
/// provider, model, prompt tokens.
#[allow(clippy::too_many_arguments)]
fn bind_call(
    q: crate::conn::Query,
    id: uuid::Uuid,
    user: Option<karen_domain::UserId>,
    key: Option<karen_domain::ApiKeyId>,
    conversation: Option<karen_domain::ConversationId>,
    provider: &str,
    model: &str,
    prompt_tokens: u32,
) -> crate::conn::Query {
    q.bind(id)
        .bind(user.map(|u| u.as_uuid()))
        .bind(key.map(|k| k.as_uuid()))
        .bind(conversation.map(|c| c.as_uuid()))
        .bind(provider.to_owned())
        .bind(model.to_owned())
        .bind(i32_of(prompt_tokens))
}
