//! The tenant repositories, implemented on [`crate::tenant::SqlTenantTx`].

mod api_keys;
mod roles;
mod sessions;
mod users;
