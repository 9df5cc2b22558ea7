//! Karen's integration tests: whole servers on both backends, driven over HTTP
//! (plus direct checks of the stores where a rule is about the stores).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Generates, for each `case(backend)` function, a `sqlite` and a `postgres` test.
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$case(karen_testkit::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$case(karen_testkit::Backend::Postgres).await;
                }
            }
        )+
    };
}

mod api_keys;
mod assistant;
mod assistant_upstream;
mod audit;
mod audit_batch;
mod audit_forward;
mod audit_platform;
mod auth;
mod auth_tokens;
mod budgets;
mod compliance;
mod contract;
mod doc_import;
mod embedding_models;
mod embeddings;
mod encryption;
mod erasure;
mod http;
mod indexes;
mod insights;
mod isolation;
mod llm;
mod memory;
mod metering;
mod metrics;
mod mfa;
mod migrations;
mod observability;
mod openai_api;
mod password_tokens;
mod passwords;
mod privacy;
mod providers;
mod ratelimit;
mod raw_store;
mod rbac;
mod rbac_fields;
mod recall;
mod retention;
mod rls;
mod scim;
mod sessions;
mod sso;
mod sso_saml;
mod tenants;
mod tls;
