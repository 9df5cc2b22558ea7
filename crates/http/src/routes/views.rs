//! Response bodies shared by several areas.

use karen_domain::chat::{Citation, CitedSource};
use karen_domain::credentials::ApiKeyRecord;
use karen_domain::page::Page;
use karen_domain::tenant::{Tenant, TenantSettings};
use karen_domain::user::User;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// One page of a list. Pass `next_cursor` as `after` to get the next page.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    /// `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> Paged<T> {
    pub(crate) fn from_page<U>(page: Page<U>, view: impl FnMut(U) -> T) -> Self {
        let page = page.map(view);
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// A single-use password token, shown only here: its holder sets the
/// account's password with it at `POST /v1/auth/password` before it expires.
#[derive(Serialize, ToSchema)]
pub(crate) struct PasswordSetupView {
    /// `kps_…`; works once.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<karen_app::auth::PasswordSetup> for PasswordSetupView {
    fn from(setup: karen_app::auth::PasswordSetup) -> Self {
        Self {
            token: secrecy::ExposeSecret::expose_secret(&setup.token).to_owned(),
            expires_at: setup.expires_at,
        }
    }
}

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub roles: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id.as_uuid(),
            email: user.email.into(),
            display_name: user.display_name.map(Into::into),
            status: user.status.as_str().into(),
            roles: user.roles.into_iter().map(Into::into).collect(),
            last_login_at: user.last_login_at,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// Tenant-wide settings.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsView {
    /// The role given to users created without explicit roles.
    pub default_role: String,
    /// If not empty, users may only have emails in these domains.
    pub allowed_email_domains: Vec<String>,
    /// The embedding model of the tenant's memories and documents (one the
    /// platform configures); null: the platform default. Changing it
    /// re-embeds everything.
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// Whether chat turns write new memories back (default true).
    #[serde(default = "enabled")]
    pub memory_extraction: bool,
    /// Who must sign in with a second factor: `off` (default), `admins` (users
    /// holding users, roles, tenant or billing management) or `everyone`.
    #[serde(default = "mfa_off")]
    pub mfa_required: String,
    /// Whether everyone but owners must sign in through single sign-on
    /// (default false; needs an enabled connection, see /v1/tenant/sso/oidc).
    #[serde(default)]
    pub sso_required: bool,
}

fn mfa_off() -> String {
    karen_domain::mfa::MfaRequirement::Off.as_str().to_owned()
}

fn enabled() -> bool {
    true
}

impl From<TenantSettings> for SettingsView {
    fn from(settings: TenantSettings) -> Self {
        Self {
            default_role: settings.default_role.into(),
            allowed_email_domains: settings.allowed_email_domains,
            embedding_model: settings.embedding_model,
            memory_extraction: settings.memory_extraction,
            mfa_required: settings.mfa_required.as_str().to_owned(),
            sso_required: settings.sso_required,
        }
    }
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub plan: String,
    /// `active`, `suspended` or `deleting`.
    pub status: String,
    pub settings: SettingsView,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Tenant> for TenantView {
    fn from(tenant: Tenant) -> Self {
        Self {
            id: tenant.id.as_uuid(),
            slug: tenant.slug.into(),
            name: tenant.name.into(),
            plan: tenant.plan.into(),
            status: tenant.status.as_str().into(),
            settings: tenant.settings.into(),
            created_at: tenant.created_at,
            updated_at: tenant.updated_at,
        }
    }
}

/// An API key (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiKeyView {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// Whose rights the key carries.
    pub user_id: Uuid,
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(key: ApiKeyRecord) -> Self {
        Self {
            id: key.id.as_uuid(),
            name: key.name.into(),
            prefix: key.display_prefix,
            user_id: key.user_id.as_uuid(),
            scopes: key.scopes.names(),
            expires_at: key.expires_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
            created_at: key.created_at,
        }
    }
}

/// Paging parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Items per page (1–200, default 50).
    pub limit: Option<u32>,
}

impl PageParams {
    pub(crate) fn request(&self) -> Result<karen_domain::page::PageRequest, karen_domain::Error> {
        karen_domain::page::PageRequest::parse(self.after.as_deref(), self.limit)
    }
}

/// Material an answer was given: a memory or a document passage, under the
/// marker `[n]` the prompt gave it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CitationView {
    /// The `n` of the marker `[n]`.
    pub marker: u32,
    /// `memory` or `passage`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_title: Option<String>,
    /// Position of the passage in its document, from 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// Relevance as recall ranked it, 0 to 1.
    pub score: f64,
}

impl From<Citation> for CitationView {
    fn from(citation: Citation) -> Self {
        let mut view = Self {
            marker: citation.marker,
            kind: "memory",
            memory_id: None,
            document_id: None,
            chunk_id: None,
            document_title: None,
            ordinal: None,
            heading: None,
            score: citation.score,
        };
        match citation.source {
            CitedSource::Memory { memory_id } => view.memory_id = Some(memory_id.as_uuid()),
            CitedSource::Passage {
                document_id,
                chunk_id,
                document_title,
                ordinal,
                heading,
            } => {
                view.kind = "passage";
                view.document_id = Some(document_id.as_uuid());
                view.chunk_id = Some(chunk_id.as_uuid());
                view.document_title = Some(document_title);
                view.ordinal = Some(ordinal);
                view.heading = heading;
            }
        }
        view
    }
}

/// The views of `citations`.
pub(crate) fn citation_views(citations: Vec<Citation>) -> Vec<CitationView> {
    citations.into_iter().map(CitationView::from).collect()
}

/// Most names in one list of a request (roles, permissions, scopes): more than
/// there could ever be distinct ones, few enough to keep each request cheap.
pub(crate) const MAX_LIST_ITEMS: usize = 64;

/// Deserialises a list of at most [`MAX_LIST_ITEMS`] items; a longer one is
/// refused as a 422 naming the field.
pub(crate) fn bounded_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    let items = <Vec<T> as serde::Deserialize>::deserialize(deserializer)?;
    if items.len() > MAX_LIST_ITEMS {
        return Err(serde::de::Error::custom(format!(
            "at most {MAX_LIST_ITEMS} items are accepted (got {})",
            items.len()
        )));
    }
    Ok(items)
}

/// As [`bounded_list`], for an optional list (use with `#[serde(default)]`).
pub(crate) fn bounded_optional_list<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    bounded_list(deserializer).map(Some)
}

/// Longest credential (e.g. a provider API key) accepted, in characters.
pub(crate) const MAX_CREDENTIAL_CHARS: usize = 4096;

/// A field that may be absent, `null` or a credential of at most
/// [`MAX_CREDENTIAL_CHARS`] (use with `#[serde(default)]`): absent is `None`,
/// `null` is `Some(None)`.
pub(crate) fn bounded_credential<'de, D>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = <Option<String> as serde::Deserialize>::deserialize(deserializer)?;
    if let Some(text) = &value {
        let count = text.chars().count();
        if count > MAX_CREDENTIAL_CHARS {
            return Err(serde::de::Error::custom(format!(
                "at most {MAX_CREDENTIAL_CHARS} characters are accepted (got {count})"
            )));
        }
    }
    Ok(Some(value))
}
