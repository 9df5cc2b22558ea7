//! The tenant repositories, implemented on [`crate::tenant::SqlTenantTx`].

mod api_keys;
mod budgets;
mod conversations;
mod personas;
mod roles;
mod sessions;
mod usage;
mod users;
