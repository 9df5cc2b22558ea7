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
