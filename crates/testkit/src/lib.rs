//! Test support: [`spawn`] starts a whole Karen in-process on its own loopback
//! port, on the embedded backend (SQLite file + in-process cache) or the
//! scale-out one (a fresh PostgreSQL database served through the confined
//! application role, plus Redis with a per-test key prefix), and returns an
//! HTTP client for it. With `CI` set, a missing PostgreSQL or Redis fails the
//! test instead of skipping it.

// Test support: failing loudly at the first surprise is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod clock;
pub mod fake_llm;
pub mod oidc_provider;
mod reply;
pub mod saml_idp;
mod services;
mod totp;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use karen::Karen;
use karen::config::{Config, Mode};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use uuid::Uuid;

pub use clock::TestClock;
pub use reply::Reply;
pub use services::{PgDatabase, delete_redis_prefix, redis_url};
pub use totp::totp_code;

/// Which stores a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file and in-process counters (mode `minimal`).
    Sqlite,
    /// PostgreSQL with row-level security and Redis (mode `standard`).
    Postgres,
}

/// A password that satisfies the policy, used for test accounts.
pub const PASSWORD: &str = "correct horse battery staple";

/// A running test server.
pub struct TestApp {
    pub backend: Backend,
    pub base_url: String,
    pub http: reqwest::Client,
    /// The bootstrap operator key.
    pub operator_key: String,
    pub clock: Arc<TestClock>,
    pub karen: Arc<Karen>,
    pub postgres: Option<PgDatabase>,
    pub redis_prefix: Option<String>,
    pub data_dir: PathBuf,
    /// The configuration it was started with (replicas share it).
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A tenant created through the operator API, with its owner logged in.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: Uuid,
    pub slug: String,
    pub owner_id: Uuid,
    pub owner_email: String,
    pub owner_token: String,
    pub owner_refresh: String,
}

/// Starts Karen on `backend`; `None` only when the backend's services are
/// missing and `CI` is not set (the test then skips, saying why).
pub async fn spawn(backend: Backend) -> Option<TestApp> {
    spawn_with(backend, |_| {}).await
}

/// As [`spawn`], letting the test adjust the configuration first.
pub async fn spawn_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Option<TestApp> {
    karen_crypto::install_crypto_provider();
    let data_dir = std::env::temp_dir().join(format!("karen-test-{}", Uuid::now_v7().simple()));
    let mut config = Config {
        data_dir: data_dir.clone(),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    // Real argon2id, at a cost that keeps hundreds of logins fast.
    config.auth.password_hash_memory_kib = 8192;
    config.auth.password_hash_iterations = 1;
    config.log.level = "warn".into();
    let mut postgres = None;
    let mut redis_prefix = None;
    match backend {
        Backend::Sqlite => {
            config.mode = Mode::Minimal;
        }
        Backend::Postgres => {
            let database = PgDatabase::create().await?;
            let redis = redis_url().await?;
            let milvus = services::milvus_url().await?;
            let prefix = format!("karen-test-{}:", Uuid::now_v7().simple());
            config.mode = Mode::Standard;
            config.database.url = Some(database.app_url.clone());
            config.database.migration_url = Some(database.owner_url.clone());
            config.database.app_role = services::APP_ROLE.into();
            config.database.max_connections = 8;
            config.redis.url = Some(redis);
            config.redis.key_prefix = prefix.clone();
            // Scale-out search: Milvus for vectors, PostgreSQL full text.
            config.memory.milvus.url = milvus;
            config.memory.milvus.collection_prefix = "karen_kit".into();
            config.memory.milvus.partitions = 8;
            // Replicas share one checkpoint signing key, made ahead as an operator would.
            let audit_key = data_dir.join("audit-signing.key");
            karen_crypto::FileAuditSigner::load_or_create(&audit_key, true)
                .expect("audit signing key");
            config.audit.signing_key_file = Some(audit_key);
            // And one master key for encryption at rest.
            let master_key = data_dir.join("master.key");
            karen_crypto::LocalKeyProvider::generate_file(&master_key).expect("master key");
            config.encryption.master_key_file = Some(master_key);
            postgres = Some(database);
            redis_prefix = Some(prefix);
        }
    }
    configure(&mut config);
    let clock = Arc::new(TestClock::default());
    let (karen, base_url, shutdown, server) = start(config.clone(), clock.clone()).await;
    let operator_key = karen
        .services
        .auth
        .bootstrap_operator_key()
        .await
        .expect("bootstrap key")
        .map(|k| secrecy::ExposeSecret::expose_secret(&k).to_owned())
        .expect("fresh installation creates an operator key");
    Some(TestApp {
        backend,
        base_url,
        http: http_client(),
        operator_key,
        clock,
        karen,
        postgres,
        redis_prefix,
        data_dir,
        config,
        shutdown: Some(shutdown),
        server: Some(server),
    })
}

type Started = (
    Arc<Karen>,
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
);

/// Opens Karen with `config` and serves it on a free loopback port.
async fn start(config: Config, clock: Arc<TestClock>) -> Started {
    let tls = config.server.tls_enabled();
    let karen = Arc::new(Karen::open(config, clock).await.expect("karen starts"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // With `[server.tls]` set, the server speaks HTTPS on this port.
    let scheme = if tls { "https" } else { "http" };
    let base_url = format!("{scheme}://{}", listener.local_addr().expect("addr"));
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = karen.clone();
    let server = tokio::spawn(async move {
        let _ = server
            .serve(listener, async move {
                let _ = shutdown_rx.await;
            })
            .await;
    });
    (karen, base_url, shutdown_tx, server)
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl TestApp {
    /// A second server on the same database and Redis (scale-out replicas);
    /// stopping it leaves the shared stores to the first.
    pub async fn replica(&self) -> TestApp {
        self.replica_with(|_| {}).await
    }

    /// As [`TestApp::replica`], letting the test adjust the replica's
    /// configuration first (e.g. reach Redis through a proxy it can cut).
    pub async fn replica_with(&self, configure: impl FnOnce(&mut Config)) -> TestApp {
        let data_dir = std::env::temp_dir().join(format!("karen-test-{}", Uuid::now_v7().simple()));
        let mut config = Config {
            data_dir: data_dir.clone(),
            ..self.config.clone()
        };
        configure(&mut config);
        let (karen, base_url, shutdown, server) = start(config.clone(), self.clock.clone()).await;
        TestApp {
            backend: self.backend,
            base_url,
            http: http_client(),
            operator_key: self.operator_key.clone(),
            clock: self.clock.clone(),
            karen,
            postgres: None,
            redis_prefix: None,
            data_dir,
            config,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Stops the server gracefully and starts a new one over the same data
    /// directory, database and Redis prefix (as a restart of the process
    /// does); the clock and operator key carry over.
    pub async fn restart(self) -> TestApp {
        self.restart_after(Duration::ZERO).await
    }

    /// Like [`TestApp::restart`], with the test clock moved forward by
    /// `down_for` while no server runs (leases and timers of the old
    /// process run out without it seeing them).
    pub async fn restart_after(mut self, down_for: Duration) -> TestApp {
        self.shutdown_gracefully().await;
        self.clock.advance(down_for);
        let postgres = self.postgres.take();
        let redis_prefix = self.redis_prefix.take();
        let config = self.config.clone();
        let clock = self.clock.clone();
        let operator_key = self.operator_key.clone();
        let backend = self.backend;
        // Let go of the old instance (and the files of its embedded indexes);
        // `data_dir` is emptied so that its drop removes nothing.
        let data_dir = std::mem::take(&mut self.data_dir);
        drop(self);
        let (karen, base_url, shutdown, server) = start(config.clone(), clock.clone()).await;
        TestApp {
            backend,
            base_url,
            http: http_client(),
            operator_key,
            clock,
            karen,
            postgres,
            redis_prefix,
            data_dir,
            config,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("request reaches the server")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("PATCH", path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("PUT", path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call("DELETE", path, Some(token), None).await
    }

    /// Posts a JSON body without a credential, as if from `ip` behind one proxy
    /// (`X-Forwarded-For`; needs `server.trusted_proxy_hops = 1`).
    pub async fn post_from(&self, ip: &str, path: &str, body: Value) -> Reply {
        let request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("x-forwarded-for", ip)
            .json(&body);
        Reply::read(request.send().await.expect("request reaches the server")).await
    }

    /// Logs in; returns the token response body.
    pub async fn login(&self, tenant: &str, email: &str, password: &str) -> Reply {
        self.call(
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"tenant": tenant, "email": email, "password": password})),
        )
        .await
    }

    /// Logs in and returns the access token, failing the test otherwise.
    pub async fn token(&self, tenant: &str, email: &str, password: &str) -> String {
        let reply = self.login(tenant, email, password).await;
        reply.expect(200);
        reply.str("access_token").to_owned()
    }

    /// Creates a tenant (owner password [`PASSWORD`]) and logs its owner in.
    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        let owner_email = format!("owner@{slug}.test");
        let reply = self
            .post(
                "/v1/platform/tenants",
                &self.operator_key,
                json!({"slug": slug, "name": format!("{slug} Inc."), "owner_email": owner_email, "owner_password": PASSWORD}),
            )
            .await;
        reply.expect(201);
        let login = self.login(slug, &owner_email, PASSWORD).await;
        login.expect(200);
        TestTenant {
            id: reply.uuid("/tenant/id"),
            slug: slug.to_owned(),
            owner_id: reply.uuid("/owner/id"),
            owner_email,
            owner_token: login.str("access_token").to_owned(),
            owner_refresh: login.str("refresh_token").to_owned(),
        }
    }

    /// Creates a user with `roles` (password [`PASSWORD`]); returns its id and an access token.
    pub async fn create_user(
        &self,
        tenant: &TestTenant,
        email: &str,
        roles: &[&str],
    ) -> (Uuid, String) {
        let reply = self
            .post(
                "/v1/users",
                &tenant.owner_token,
                json!({"email": email, "password": PASSWORD, "roles": roles}),
            )
            .await;
        reply.expect(201);
        (
            reply.uuid("/user/id"),
            self.token(&tenant.slug, email, PASSWORD).await,
        )
    }

    /// Creates an API key as `token`; returns its id and secret.
    pub async fn create_api_key(&self, token: &str, body: Value) -> (Uuid, String) {
        let reply = self.post("/v1/api-keys", token, body).await;
        reply.expect(201);
        (reply.uuid("/api_key/id"), reply.str("key").to_owned())
    }

    /// Signals shutdown (as SIGTERM does) and waits until the server has drained
    /// its in-flight requests and stopped.
    pub async fn shutdown_gracefully(&mut self) {
        self.shutdown_now();
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }

    /// Gives `tenant` rows in every tenant table: a member with a custom role,
    /// an API key, a rotated refresh token (sessions and refresh tokens), a
    /// persona, a conversation with one turn (messages, usage), a budget, the
    /// reservation of a call in flight, a model provider and an alias, a
    /// retention policy, a legal hold and a retention run, the member's
    /// second factor (authenticator, recovery codes, a login challenge), a
    /// pending password reset token, an
    /// SSO connection with a pending login and a linked identity, and a
    /// SCIM-provisioned user in a group that grants it a role.
    pub async fn populate(&self, tenant: &TestTenant) {
        let email = format!("member@{}.test", tenant.slug);
        let (user, token) = self.create_user(tenant, &email, &["member"]).await;
        self.create_api_key(&token, json!({"name": "populated"}))
            .await;
        let role = json!({"name": "extra", "permissions": ["chat:read"]});
        self.post("/v1/roles", &tenant.owner_token, role)
            .await
            .expect(201);
        let roles = json!({"roles": ["member", "extra"]});
        self.put(
            &format!("/v1/users/{user}/roles"),
            &tenant.owner_token,
            roles,
        )
        .await
        .expect(200);
        let login = self.login(&tenant.slug, &email, PASSWORD).await;
        let refresh = json!({"refresh_token": login.expect(200).str("refresh_token")});
        self.call("POST", "/v1/auth/refresh", None, Some(refresh))
            .await
            .expect(200);
        let persona = json!({"name": "populated", "system_prompt": "Be brief."});
        self.post("/v1/personas", &token, persona).await.expect(201);
        let chat = self
            .post("/v1/conversations", &token, json!({"title": "populated"}))
            .await;
        let chat = chat.expect(201).str("id").to_owned();
        let turn = json!({"content": "hello"});
        self.post(&format!("/v1/conversations/{chat}/messages"), &token, turn)
            .await
            .expect(200);
        let budget = json!({"scope": "tenant", "metric": "tokens", "period": "month", "limit": 1_000_000, "enforcement": "soft"});
        self.post("/v1/budgets", &tenant.owner_token, budget)
            .await
            .expect(201);
        let provider = json!({"name": "populated", "base_url": "https://llm.example.com/v1",
            "api_key": "sk-populated", "models": ["populated-model"]});
        self.post("/v1/providers", &tenant.owner_token, provider)
            .await
            .expect(201);
        let alias = json!({"target": "populated-model"});
        self.put("/v1/model-aliases/populated", &tenant.owner_token, alias)
            .await
            .expect(200);
        self.reserve_in_flight(tenant).await;
        self.record_cancelled_embedding_job(tenant).await;
        // Memory and retrieval: a memory (and its cached embedding), a
        // document with passages, entries in both search indexes.
        let memory = json!({"content": format!("The {} team ships on Fridays", tenant.slug)});
        self.post("/v1/memories", &token, memory).await.expect(201);
        let document = format!(
            "# Handbook of {}\n\nVacation requests go to the people team.",
            tenant.slug
        );
        self.upload(
            &tenant.owner_token,
            "?file_name=handbook.md",
            "text/markdown",
            document.into_bytes(),
        )
        .await
        .expect(201);
        // Retention: a policy (long enough to delete nothing), a legal hold
        // on the conversation, and a recorded run.
        let policy = json!({"conversations_days": 3650, "usage_days": 3650});
        self.put("/v1/tenant/retention", &tenant.owner_token, policy)
            .await
            .expect(200);
        let hold = json!({"scope": "conversation", "target_id": chat, "reason": "populated"});
        self.post("/v1/legal-holds", &tenant.owner_token, hold)
            .await
            .expect(201);
        self.post("/v1/tenant/retention/run", &tenant.owner_token, json!({}))
            .await
            .expect(200);
        // Second factors: the member enrolls an authenticator (recovery codes),
        // then a password login leaves a pending challenge.
        let enrollment = self.post("/v1/auth/mfa/totp", &token, json!({})).await;
        let secret = enrollment.expect(200).str("secret").to_owned();
        let now = karen_domain::Clock::now(self.clock.as_ref());
        let code = json!({"code": totp_code(&secret, now)});
        self.post("/v1/auth/mfa/totp/confirm", &token, code)
            .await
            .expect(200);
        let challenge = self.login(&tenant.slug, &email, PASSWORD).await;
        assert_eq!(challenge.expect(200).str("status"), "mfa_required");
        // A pending password reset token for the member (their password stays).
        let reset = format!("/v1/users/{user}/password-reset");
        self.post(&reset, &tenant.owner_token, json!({}))
            .await
            .expect(201);
        // Single sign-on: a connection, a pending login and the member's
        // linked identity (written directly: no identity provider runs here).
        self.record_sso_rows(tenant, user).await;
        // SCIM: a provisioned user in a group named like a role (which grants it).
        let user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": format!("scim@{}.test", tenant.slug), "externalId": "idp-1"});
        let user = self.post("/scim/v2/Users", &tenant.owner_token, user).await;
        let user = user.expect(201).str("id").to_owned();
        let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "viewer", "members": [{"value": user}]});
        self.post("/scim/v2/Groups", &tenant.owner_token, group)
            .await
            .expect(201);
        // The audit trail has events by now; sign a checkpoint of them.
        self.post("/v1/audit/checkpoints", &tenant.owner_token, json!({}))
            .await
            .expect(200);
    }

    /// Uploads a document as `token` (raw body with its media type).
    pub async fn upload(&self, token: &str, query: &str, media_type: &str, body: Vec<u8>) -> Reply {
        let request = self
            .http
            .post(format!("{}/v1/documents{query}", self.base_url))
            .bearer_auth(token)
            .header("content-type", media_type)
            .body(body);
        Reply::read(request.send().await.expect("request reaches the server")).await
    }

    /// Records a re-embedding job, cancelled at once (as a change of the
    /// tenant's embedding model that was changed back would leave), and an
    /// audit collector's forwarding cursor.
    pub async fn record_cancelled_embedding_job(&self, tenant: &TestTenant) {
        use karen_domain::ports::Store as _;
        let id = karen_domain::TenantId::from_uuid(tenant.id);
        let now = karen_domain::Clock::now(self.clock.as_ref());
        let scope = karen_domain::TenantScope::system(id, karen_domain::SystemReason::Cli);
        let mut tx = self
            .karen
            .store
            .tenant(scope)
            .await
            .expect("tenant transaction");
        let model = karen_llm::HASH_EMBEDDING_MODEL_ID.to_owned();
        let job = karen_domain::library::EmbeddingJob {
            id: Uuid::now_v7(),
            tenant_id: id,
            from_model: model.clone(),
            to_model: model,
            state: karen_domain::library::EmbeddingJobState::Cancelled,
            total: 0,
            done: 0,
            cursor: None,
            dims: None,
            attempts: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
            finished_at: Some(now),
        };
        tx.embedding_jobs().insert_job(&job).await.expect("job");
        // And an external audit collector's forwarding cursor.
        tx.audit()
            .set_forwarded_up_to("populated", 1, now)
            .await
            .expect("forwarding cursor");
        tx.commit().await.expect("commit");
    }

    /// Writes the budget reservation of a call still in flight (as a running
    /// call would) for `tenant`'s owner.
    pub async fn reserve_in_flight(&self, tenant: &TestTenant) {
        use karen_domain::ports::Store as _;
        let id = karen_domain::TenantId::from_uuid(tenant.id);
        let now = karen_domain::Clock::now(self.clock.as_ref());
        let scope = karen_domain::TenantScope::system(id, karen_domain::SystemReason::Cli);
        let mut tx = self
            .karen
            .store
            .tenant(scope)
            .await
            .expect("tenant transaction");
        let reservation = karen_domain::ports::Reservation {
            id: karen_domain::ReservationId::generate(),
            tenant_id: id,
            user_id: Some(karen_domain::UserId::from_uuid(tenant.owner_id)),
            api_key_id: None,
            conversation_id: None,
            provider: "offline".into(),
            model: "karen-offline-extractive".into(),
            prompt_tokens: 10,
            completion_allowance: 90,
            cost_micros: 0,
            created_at: now,
            expires_at: now + time::Duration::minutes(15),
        };
        tx.budgets()
            .insert_reservation(&reservation)
            .await
            .expect("reservation");
        tx.commit().await.expect("commit");
    }

    /// Stops the server and removes the test's database, keys and files.
    pub async fn stop(mut self) {
        self.shutdown_now();
        if let Some(database) = self.postgres.take() {
            database.drop_database().await;
        }
        if let Some(prefix) = self.redis_prefix.take() {
            services::delete_redis_prefix(&prefix).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.data_dir).await;
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A test that panicked did not call `stop`: clean up from a plain thread.
        self.shutdown_now();
        let database = self.postgres.take();
        let prefix = self.redis_prefix.take();
        let dir = self.data_dir.clone();
        if dir.as_os_str().is_empty() {
            // Handed over to a restarted server.
            return;
        }
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(async move {
                    if let Some(database) = database {
                        database.drop_database().await;
                    }
                    if let Some(prefix) = prefix {
                        services::delete_redis_prefix(&prefix).await;
                    }
                });
            }
            let _ = std::fs::remove_dir_all(dir);
        })
        .join();
    }
}
