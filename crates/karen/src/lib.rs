//! The composition root: reads the configuration, connects the adapters the
//! deployment mode calls for, builds the services and serves HTTP. The CLI in
//! `main.rs` and the test kit both start Karen through [`Karen::open`].

pub mod audit;
pub mod audit_forward;
pub mod config;
pub mod encryption;
pub mod indexes;
pub mod logging;
pub mod maintenance;
pub mod models;
pub mod rate_limits;
pub mod retention;
pub mod sso;
pub mod telemetry;
pub mod tls;
pub mod traces;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use karen_app::assistant::{AssistantPolicy, ModelPrice};
use karen_app::{AuthPolicy, Deps, Services};
use karen_cache::{CounterNamespace, MemoryCounters, RedisCounters, RedisOptions};
use karen_crypto::{Argon2Hasher, Argon2Params, JwtConfig, JwtTokens};
use karen_domain::clock::Clock;
use karen_domain::ports::{Counters, Store, TenantNamespace};
use karen_files::TenantDirectories;
use karen_http::HttpConfig;
use karen_sql::{Backend, SqlOptions, SqlStore};
use tokio::net::TcpListener;
use tracing::Instrument as _;

use crate::config::{Config, Mode};

/// A running Karen's parts.
pub struct Karen {
    pub config: Config,
    pub store: Arc<SqlStore>,
    pub counters: Arc<dyn Counters>,
    pub namespaces: Vec<Arc<dyn TenantNamespace>>,
    /// The vector and text indexes and the embedder of memory and retrieval.
    pub indexes: indexes::SearchIndexes,
    pub services: Services,
    /// What `/metrics` serves (`None` when metrics are off).
    pub metrics: Option<Arc<dyn karen_http::MetricsSource>>,
    /// Sends copies of the audit trail to the configured collectors (`None`: none).
    pub audit_forwarder: Option<karen_app::audit_forward::AuditForwarder>,
}

/// Connects to the store that migrations run on: the owner URL on PostgreSQL,
/// the database file on SQLite.
pub async fn migration_store(config: &Config) -> anyhow::Result<SqlStore> {
    let url = config.database_url();
    let url = match Backend::of_url(&url)? {
        Backend::Sqlite => url,
        Backend::Postgres => postgres_tls_url(
            &config.database.migration_url.clone().context(
                "database.migration_url: set the PostgreSQL owner URL to run migrations (the serving URL is the application role)",
            )?,
            &config.database,
        )?,
    };
    Ok(SqlStore::connect(&SqlOptions::new(url)).await?)
}

/// Applies pending migrations and (PostgreSQL) grants the application role.
pub async fn migrate_up(config: &Config) -> anyhow::Result<()> {
    let store = migration_store(config).await?;
    store.migrate_up().await?;
    store.grant_app_role(&config.database.app_role).await?;
    store.close().await;
    Ok(())
}

impl Karen {
    /// Connects everything the configuration names, applying migrations when
    /// allowed, and refuses to start on a role that would bypass row-level security.
    pub async fn open(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.validate()?;
        let url = config.database_url();
        let backend = Backend::of_url(&url)?;
        let url = match backend {
            Backend::Sqlite => url,
            Backend::Postgres => postgres_tls_url(&url, &config.database)?,
        };
        let may_migrate = config.database.auto_migrate
            && (backend == Backend::Sqlite || config.database.migration_url.is_some());
        if may_migrate {
            migrate_up(&config).await.context("applying migrations")?;
        }
        let options = SqlOptions {
            max_connections: config.database.max_connections,
            ..SqlOptions::new(url)
        };
        let store = Arc::new(
            SqlStore::connect(&options)
                .await
                .context("connecting to the database")?
                .with_encryption(encryption::store_encryption(&config, clock.clone())?),
        );
        store.ensure_serving_role_is_confined().await?;
        store.ensure_schema_current().await?;

        let redis = match (&config.mode, &config.redis.url) {
            (Mode::Minimal, _) | (_, None) => None,
            (Mode::Standard | Mode::Full, Some(redis_url)) => {
                let options = RedisOptions {
                    url: redis_url.clone(),
                    key_prefix: config.redis.key_prefix.clone(),
                    timeout: Duration::from_millis(config.redis.timeout_ms),
                    tls_root_cert: match &config.redis.tls_root_cert {
                        Some(path) => Some(tokio::fs::read(path).await.with_context(|| {
                            format!("redis.tls_root_cert: cannot read {}", path.display())
                        })?),
                        None => None,
                    },
                };
                Some(
                    RedisCounters::connect(&options)
                        .await
                        .context("connecting to Redis")?,
                )
            }
        };
        let rate_limiters = rate_limits::limiters(redis.as_ref(), clock.clone());
        let counters: Arc<dyn Counters> = match redis {
            Some(redis) => Arc::new(redis),
            None => Arc::new(MemoryCounters::new(clock.clone())),
        };
        let indexes = indexes::SearchIndexes::open(&config, &store).await?;
        let mut namespaces: Vec<Arc<dyn TenantNamespace>> =
            vec![Arc::new(CounterNamespace(counters.clone()))];
        // Before the tenant directories: the embedded indexes close their
        // files in there before the directory goes.
        namespaces.extend(indexes.namespaces());
        if config.mode == Mode::Minimal {
            // Embedded per-tenant state lives on this one machine's disk.
            namespaces.push(Arc::new(TenantDirectories::new(&config.data_dir)));
        }
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let hasher = Arc::new(Argon2Hasher::new(
            Argon2Params {
                memory_kib: config.auth.password_hash_memory_kib,
                iterations: config.auth.password_hash_iterations,
            },
            cores,
        )?);
        let store_port: Arc<dyn Store> = store.clone();
        let audit_forwarder = config
            .audit
            .forward
            .forwarder(store_port.clone(), clock.clone())
            .context("setting up audit forwarding")?;
        let audit = Arc::new(
            karen_app::audit::AuditTrail::new(
                store_port.clone(),
                clock.clone(),
                audit_signer(&config)?,
                karen_app::audit::AuditPolicy {
                    checkpoint_every: config.audit.checkpoint_every,
                    checkpoint_interval: (config.audit.checkpoint_interval_secs > 0)
                        .then(|| Duration::from_secs(config.audit.checkpoint_interval_secs)),
                },
            )
            .with_retired_keys(
                config
                    .audit
                    .retired_keys()
                    .context("audit.retired_public_keys")?,
            ),
        );
        let ttl = Duration::from_secs(config.auth.access_token_ttl_secs);
        let tokens = Arc::new(
            JwtTokens::new(
                store_port.clone(),
                clock.clone(),
                JwtConfig {
                    issuer: config.auth.issuer.clone(),
                    audience: config.auth.issuer.clone(),
                    ttl,
                },
            )
            .await
            .context("loading token signing keys")?,
        );
        let policy = AuthPolicy {
            access_token_ttl: ttl,
            session_ttl: Duration::from_secs(config.auth.session_ttl_days * 86_400),
            session_idle_timeout: Duration::from_secs(
                config.auth.session_idle_timeout_hours * 3600,
            ),
            delay_after_failures: config.auth.delay_after_failures,
            max_delay: Duration::from_secs(config.auth.max_delay_secs),
            lockout_after_failures: config.auth.lockout_after_failures,
            lockout_duration: Duration::from_secs(config.auth.lockout_minutes * 60),
            ip_max_failures: config.auth.ip_max_failures,
            ip_window: Duration::from_secs(config.auth.ip_window_secs),
            self_signup: config.features.self_signup,
            password_setup_ttl: Duration::from_secs(config.auth.password_setup_ttl_hours * 3600),
        };
        let clock_for_router = clock.clone();
        let store_for_router = store_port.clone();
        let router = Arc::new(models::ConfiguredRouter::from_config(
            &config.llm,
            clock_for_router,
            store_for_router,
            counters.clone(),
            config.cache.caching(),
        )?);
        let recorders = if config.metrics.enabled {
            Some(
                telemetry::recorder(config.metrics.insights_window_minutes)
                    .map_err(|e| anyhow::anyhow!(e))?,
            )
        } else {
            None
        };
        let sso_ports = config.sso.ports(config.features.sso, clock.clone())?;
        let services = Services::new(Deps {
            store: store_port,
            clock,
            hasher,
            tokens,
            counters: counters.clone(),
            namespaces: namespaces.clone(),
            policy,
            router: router.clone(),
            search: karen_app::memory::SearchPorts {
                vector: indexes.vector.clone(),
                text: indexes.text.clone(),
                embedders: indexes.embedders.clone(),
                extractor: Arc::new(karen_docs::DocumentParser::new()),
                chunking: karen_domain::documents::ChunkingConfig::default(),
                max_document_bytes: config.memory.max_document_bytes,
                recall: config.memory.recall.policy(),
                extraction: karen_app::memory::ExtractionMode::parse(&config.memory.extraction)
                    .unwrap_or_default(),
                jobs: Arc::default(),
            },
            tenant_series: Arc::new(karen_app::telemetry::TenantSeries::new(
                config.metrics.tenant_series,
                Duration::from_secs(60),
            )),
            insights: karen_app::insights::InsightPorts {
                collector: recorders.as_ref().map(|r| r.insights.clone()),
                chains: models::model_chains(&config.llm),
            },
            rate_limits: config.rate_limits.policy(),
            rate_limiters,
            audit,
            compliance: karen_app::compliance::PlatformFacts {
                transport_tls: config.server.tls_enabled(),
                encryption_at_rest: config.encryption.enabled,
            },
            retention: config.retention.settings(),
            sso: sso_ports,
            caching: config.cache.caching(),
            assistant: AssistantPolicy {
                history_messages: i64::from(config.llm.history_messages),
                prices: config
                    .llm
                    .prices
                    .iter()
                    .map(|p| ModelPrice {
                        model: p.model.clone(),
                        prompt_micros_per_1k: p.prompt_per_1k_micros,
                        completion_micros_per_1k: p.completion_per_1k_micros,
                    })
                    .collect(),
            },
        });
        let metrics: Option<Arc<dyn karen_http::MetricsSource>> = recorders.map(|recorders| {
            Arc::new(telemetry::KarenMetrics::new(
                recorders.prometheus,
                store.clone(),
                services.clone(),
                router,
            )) as Arc<dyn karen_http::MetricsSource>
        });
        Ok(Self {
            config,
            store,
            counters,
            namespaces,
            indexes,
            services,
            metrics,
            audit_forwarder,
        })
    }

    /// The HTTP application.
    pub fn router(&self) -> axum::Router {
        let metrics_here = self.config.metrics.listen.is_empty();
        karen_http::router(
            self.services.clone(),
            HttpConfig {
                body_limit: self.config.server.body_limit_bytes,
                document_limit: self.config.memory.max_document_bytes,
                request_timeout: Duration::from_secs(self.config.server.request_timeout_secs),
                trusted_proxy_hops: self.config.server.trusted_proxy_hops,
                hsts: self.config.server.hsts_enabled(),
                cors_allowed_origins: self.config.server.cors_allowed_origins.clone(),
                metrics: self.metrics.clone().filter(|_| metrics_here),
            },
        )
    }

    /// Serves `/metrics` on `metrics.listen` when it is set, until `stop` resolves.
    async fn serve_metrics_apart(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
        let Some(source) = self.metrics.clone() else {
            return Ok(None);
        };
        if self.config.metrics.listen.is_empty() {
            return Ok(None);
        }
        let address = &self.config.metrics.listen;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("metrics.listen: cannot listen on {address}"))?;
        tracing::info!(address = %address, "serving metrics");
        let app = karen_http::metrics_router(source);
        Ok(Some(tokio::spawn(async move {
            let mut stop = stop;
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "the metrics listener failed");
            }
        })))
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish
    /// for at most `server.shutdown_grace_secs`.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.config.server.shutdown_grace_secs);
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let app = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        let health = self.services.health.clone();
        let signalled = async move {
            shutdown.await;
            health.begin_draining();
            tracing::info!("shutdown requested; draining in-flight requests");
            let _ = signalled_tx.send(());
        };
        let mut cert_watcher = None;
        let server: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
            match tls::TlsFiles::from_config(&self.config.server.tls) {
                Some(files) => {
                    let handshake_timeout = files.handshake_timeout;
                    let resolver = tls::ReloadingCertResolver::load(files).await?;
                    let listener = tls::TlsListener::new(
                        listener,
                        resolver.server_config()?,
                        handshake_timeout,
                    )
                    .context("server.tls: starting the TLS listener")?
                    // No-op tap: gives the listener axum's peer-address plumbing.
                    .tap_io(|_| {});
                    cert_watcher = Some(resolver.watch());
                    tracing::info!("serving HTTPS");
                    Box::pin(
                        axum::serve(listener, app)
                            .with_graceful_shutdown(signalled)
                            .into_future(),
                    )
                }
                None => {
                    // Small writes (SSE events, short answers) must not wait for Nagle's algorithm.
                    let listener = listener.tap_io(|stream| {
                        if let Err(error) = stream.set_nodelay(true) {
                            tracing::debug!(%error, "could not set TCP_NODELAY");
                        }
                    });
                    Box::pin(
                        axum::serve(listener, app)
                            .with_graceful_shutdown(signalled)
                            .into_future(),
                    )
                }
            };
        // Started once the listener is ready (a certificate that does not load
        // stops the start before any background task runs).
        let reconciler = self.spawn_reconciler();
        let reembedder = self.spawn_reembedder();
        let checkpointer = self.spawn_checkpointer();
        let forwarder = self
            .audit_forwarder
            .clone()
            .map(|forwarder| tokio::spawn(async move { forwarder.run().await }));
        let retention = self.spawn_retention();
        let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
        let metrics_server = self.serve_metrics_apart(metrics_stopped).await?;
        metrics::gauge!(karen_app::health::READY).set(1.0);
        let deadline = async move {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result.context("serving HTTP")?,
            () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "drain deadline passed; closing remaining connections"),
        }
        reconciler.abort();
        reembedder.abort();
        checkpointer.abort();
        if let Some(forwarder) = forwarder {
            forwarder.abort();
        }
        retention.abort();
        if let Some(cert_watcher) = cert_watcher {
            cert_watcher.abort();
        }
        let _ = stop_metrics.send(true);
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        // The usage of calls answered during the drain is committed before the pool closes.
        self.services.assistant.stop_metering().await;
        self.store.close().await;
        Ok(())
    }

    /// Runs the tenants' re-embedding jobs (a change of embedding model):
    /// those a restart interrupted at once, new ones as they are recorded.
    fn spawn_reembedder(&self) -> tokio::task::JoinHandle<()> {
        let worker = self.services.memory.reembed.clone();
        tokio::spawn(async move { worker.run().await })
    }

    /// Signs, every `audit.checkpoint_interval_secs`, a checkpoint of each
    /// tenant whose audit trail grew since its last one.
    fn spawn_checkpointer(&self) -> tokio::task::JoinHandle<()> {
        let services = self.services.clone();
        let Some(period) = services.audit.policy().checkpoint_interval else {
            return tokio::spawn(async {});
        };
        spawn_periodic("audit_checkpoint", period, false, move || {
            let services = services.clone();
            async move { audit::checkpoint_all(&services, None).await.map(drop) }
        })
    }

    /// Enforces every tenant's retention policy every `retention.interval_secs`
    /// (the first run one interval after the start).
    fn spawn_retention(&self) -> tokio::task::JoinHandle<()> {
        let services = self.services.clone();
        let period = self.config.retention.interval_secs;
        if period == 0 {
            return tokio::spawn(async {});
        }
        spawn_periodic("retention", Duration::from_secs(period), false, move || {
            let services = services.clone();
            async move { retention::run(&services, None, false).await.map(drop) }
        })
    }

    /// Settles, every minute, the budget reservations of calls that never
    /// finished (a crash mid-call): each becomes an `interrupted` usage record.
    fn spawn_reconciler(&self) -> tokio::task::JoinHandle<()> {
        let budgets = self.services.assistant.budgets.clone();
        spawn_periodic(
            "budget_reconcile",
            Duration::from_secs(60),
            true,
            move || {
                let budgets = budgets.clone();
                async move {
                    let settled = budgets.reconcile_all().await?;
                    if settled > 0 {
                        tracing::warn!(
                            settled,
                            "settled reservations of calls that never finished"
                        );
                    }
                    Ok::<_, karen_domain::Error>(())
                }
            },
        )
    }
}

/// Runs `job` every `period` (at once first when `first_at_once`, otherwise
/// one period after the start), each run a trace of its own (no request is
/// its parent), counted in the job metrics, its failure logged.
fn spawn_periodic<F, Fut, E>(
    name: &'static str,
    period: Duration,
    first_at_once: bool,
    job: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        if !first_at_once {
            every.tick().await;
        }
        loop {
            every.tick().await;
            let started = std::time::Instant::now();
            let span = tracing::info_span!(
                parent: None,
                "job",
                otel.name = %format_args!("job {name}"),
                job.name = name
            );
            let result = job().instrument(span).await;
            karen_app::telemetry::job_finished(name, result.is_ok(), started.elapsed());
            if let Err(error) = result {
                tracing::warn!(job = name, %error, "background job failed");
            }
        }
    })
}

/// `url` with `database.ssl_mode` and `database.ssl_root_cert` applied as the
/// `sslmode` and `sslrootcert` parameters sqlx reads (replacing any the URL has).
pub fn postgres_tls_url(url: &str, database: &config::DatabaseConfig) -> anyhow::Result<String> {
    if database.ssl_mode.is_none() && database.ssl_root_cert.is_none() {
        return Ok(url.to_owned());
    }
    let mut parsed = url::Url::parse(url)
        .map_err(|_| anyhow::anyhow!("database.url: not a valid PostgreSQL URL"))?;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(name, _)| {
            !(database.ssl_mode.is_some() && name == "sslmode"
                || database.ssl_root_cert.is_some() && name == "sslrootcert")
        })
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (name, value) in &kept {
            query.append_pair(name, value);
        }
        if let Some(mode) = &database.ssl_mode {
            query.append_pair("sslmode", mode);
        }
        if let Some(root) = &database.ssl_root_cert {
            query.append_pair("sslrootcert", &root.to_string_lossy());
        }
    }
    Ok(parsed.into())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// The checkpoint signer: the configured key file, or `<data_dir>/audit-signing.key`
/// (created on first start in minimal mode). Without a key in scale-out
/// modes, checkpoints are off (with a warning).
fn audit_signer(
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn karen_domain::ports::AuditSigner>>> {
    let path = config
        .audit
        .signing_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("audit-signing.key"));
    let create = config.mode == Mode::Minimal && config.audit.signing_key_file.is_none();
    if !create && !path.exists() {
        if config.audit.signing_key_file.is_some() {
            anyhow::bail!(
                "audit.signing_key_file: {} does not exist; create one with `karen audit keygen`",
                path.display()
            );
        }
        tracing::warn!(
            "no audit.signing_key_file in a scale-out mode: audit checkpoints are not signed; \
             give every replica the same key file"
        );
        return Ok(None);
    }
    let signer = karen_crypto::FileAuditSigner::load_or_create(&path, create)
        .context("loading the audit checkpoint signing key")?;
    Ok(Some(Arc::new(signer)))
}
