//! Configuration: built-in defaults, then `karen.toml`, then `KAREN_*`
//! environment variables (nested keys joined by `__`, e.g.
//! `KAREN_DATABASE__URL`). Validated as a whole at start; every problem names
//! its key.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::traces::{OtlpProtocol, TracingConfig};

/// Deployment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Embedded everything: SQLite in the data dir, in-process cache. The default.
    Minimal,
    /// PostgreSQL (row-level security) and Redis; stateless replicas.
    Standard,
    /// Standard plus every optional component that is switched on under `[features]`.
    Full,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// Where embedded state lives (SQLite file, per-tenant directories).
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub features: Features,
    pub llm: LlmConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
    pub metrics: MetricsConfig,
    pub memory: crate::indexes::MemoryConfig,
    pub rate_limits: crate::rate_limits::RateLimitConfig,
    pub audit: AuditConfig,
    pub retention: crate::retention::RetentionConfig,
    pub encryption: crate::encryption::EncryptionConfig,
    pub sso: crate::sso::SsoConfig,
    pub cache: CacheConfig,
}

/// `[cache]`: the in-process caches (see docs/operations.md, "Caches").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Off only to measure what the caches save (`bench/caching.sh`): every
    /// lookup then reads the store and every embedding is computed afresh.
    pub enabled: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl CacheConfig {
    /// The switch the services take.
    pub fn caching(&self) -> karen_app::cache::Caching {
        karen_app::cache::Caching {
            enabled: self.enabled,
        }
    }
}

/// `[audit]`: checkpoints of the tamper-evident audit trail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 key (PKCS#8 DER) that signs checkpoints. Default
    /// `<data_dir>/audit-signing.key`, created (mode 0600) on first start in
    /// minimal mode; in scale-out modes every replica must be given the same file.
    pub signing_key_file: Option<PathBuf>,
    /// Raw Ed25519 public keys (64 hex digits each) of earlier signing keys:
    /// checkpoints they signed still verify after the key is rotated.
    pub retired_public_keys: Vec<String>,
    /// Sign a checkpoint after every this many events of a tenant (0: never by count).
    pub checkpoint_every: u64,
    /// Sign a checkpoint of every tenant with new events this often (0: never by time).
    pub checkpoint_interval_secs: u64,
    /// Copies of the trail sent to an external collector.
    pub forward: crate::audit_forward::AuditForwardConfig,
}

impl AuditConfig {
    /// The retired public keys, parsed.
    pub fn retired_keys(&self) -> Result<Vec<Vec<u8>>, karen_domain::Error> {
        self.retired_public_keys
            .iter()
            .map(|key| karen_domain::audit::parse_public_key(key))
            .collect()
    }

    fn problems(&self) -> Vec<String> {
        self.retired_public_keys
            .iter()
            .enumerate()
            .filter(|(_, key)| karen_domain::audit::parse_public_key(key).is_err())
            .map(|(index, _)| {
                format!(
                    "audit.retired_public_keys[{index}]: 64 hex digits (a raw Ed25519 public key, \
                     as `karen audit keygen` prints it)"
                )
            })
            .collect()
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            retired_public_keys: Vec::new(),
            checkpoint_every: 1000,
            checkpoint_interval_secs: 3600,
            forward: crate::audit_forward::AuditForwardConfig::default(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Minimal,
            data_dir: PathBuf::from("karen-data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            auth: AuthConfig::default(),
            features: Features::default(),
            llm: LlmConfig::default(),
            log: LogConfig::default(),
            tracing: TracingConfig::default(),
            metrics: MetricsConfig::default(),
            memory: crate::indexes::MemoryConfig::default(),
            rate_limits: crate::rate_limits::RateLimitConfig::default(),
            audit: AuditConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
            encryption: crate::encryption::EncryptionConfig::default(),
            sso: crate::sso::SsoConfig::default(),
            cache: CacheConfig::default(),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Requests taking longer are abandoned with a 503 problem.
    pub request_timeout_secs: u64,
    /// After SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub shutdown_grace_secs: u64,
    /// Reverse proxies in front of Karen that append to X-Forwarded-For (0 = none).
    pub trusted_proxy_hops: usize,
    /// Send Strict-Transport-Security. Unset: on exactly when `[server.tls]`
    /// is configured; set it to `true` behind a proxy that terminates TLS.
    pub hsts: Option<bool>,
    /// Browser origins allowed to call the API (CORS), e.g.
    /// `["https://console.example.com"]`: exact `scheme://host[:port]`, no
    /// wildcard. Empty (the default): no cross-origin browser access.
    pub cors_allowed_origins: Vec<String>,
    pub tls: ServerTlsConfig,
}

/// `[server.tls]`: HTTPS served by Karen itself (rustls). Both files set turns
/// it on; they are re-read when they change, without a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for changes.
    pub reload_interval_secs: u64,
    /// A TLS handshake must finish within this time.
    pub handshake_timeout_secs: u64,
}

impl Default for ServerTlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            reload_interval_secs: 10,
            handshake_timeout_secs: 10,
        }
    }
}

impl ServerConfig {
    /// Whether Karen terminates TLS itself.
    pub fn tls_enabled(&self) -> bool {
        self.tls.cert_file.is_some() && self.tls.key_file.is_some()
    }

    /// Whether responses carry Strict-Transport-Security.
    pub fn hsts_enabled(&self) -> bool {
        self.hsts.unwrap_or_else(|| self.tls_enabled())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            shutdown_grace_secs: 20,
            trusted_proxy_hops: 0,
            hsts: None,
            cors_allowed_origins: Vec::new(),
            tls: ServerTlsConfig::default(),
        }
    }
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Serving connection. Default: `sqlite://<data_dir>/karen.db`. On PostgreSQL
    /// this is the application role (not owner, not superuser, no BYPASSRLS).
    pub url: Option<String>,
    /// PostgreSQL owner connection used for migrations (and to grant `app_role`).
    pub migration_url: Option<String>,
    /// The application role that `karen migrate up` grants data access to.
    pub app_role: String,
    /// Pool size.
    pub max_connections: u32,
    /// Apply pending migrations when `karen serve` starts (SQLite always; PostgreSQL
    /// only when `migration_url` is set).
    pub auto_migrate: bool,
    /// PostgreSQL TLS: `disable`, `allow`, `prefer`, `require`, `verify-ca` or
    /// `verify-full` (applies to `url` and `migration_url`; unset: the URL's
    /// `sslmode`, else `prefer`). Use `verify-full` across a network.
    pub ssl_mode: Option<String>,
    /// PEM file of the CA that signed the PostgreSQL server's certificate.
    pub ssl_root_cert: Option<PathBuf>,
}

/// The PostgreSQL TLS modes `database.ssl_mode` accepts.
pub const PG_SSL_MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            migration_url: None,
            app_role: "karen_app".into(),
            max_connections: 10,
            auto_migrate: true,
            ssl_mode: None,
            ssl_root_cert: None,
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:6379/0`; required in standard and full modes.
    pub url: Option<String>,
    /// Prefix of every key (to share one Redis between deployments).
    pub key_prefix: String,
    /// Per-command timeout.
    pub timeout_ms: u64,
    /// PEM file of the CA that signed the Redis server's certificate, for a
    /// `rediss://` URL (unset: the system's trusted roots).
    pub tls_root_cert: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "karen:".into(),
            timeout_ms: 2000,
            tls_root_cert: None,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Access-token lifetime.
    pub access_token_ttl_secs: u64,
    /// Session (refresh-token family) lifetime.
    pub session_ttl_days: u64,
    /// A session whose refresh token goes unused this long ends.
    pub session_idle_timeout_hours: u64,
    /// Failed logins after which each attempt must wait (doubling, up to `max_delay_secs`).
    pub delay_after_failures: i32,
    pub max_delay_secs: u64,
    /// Failed logins that lock an account, and for how long.
    pub lockout_after_failures: i32,
    pub lockout_minutes: u64,
    /// Failed logins from one address within the window before it is refused.
    pub ip_max_failures: u64,
    pub ip_window_secs: u64,
    /// `iss` and `aud` of access tokens.
    pub issuer: String,
    /// argon2id cost.
    pub password_hash_memory_kib: u32,
    pub password_hash_iterations: u32,
    /// How long a password setup or reset token stays usable.
    pub password_setup_ttl_hours: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 900,
            session_ttl_days: 30,
            session_idle_timeout_hours: 72,
            delay_after_failures: 3,
            max_delay_secs: 60,
            lockout_after_failures: 10,
            lockout_minutes: 15,
            ip_max_failures: 50,
            ip_window_secs: 900,
            issuer: "karen".into(),
            password_hash_memory_kib: 19_456,
            password_hash_iterations: 2,
            password_setup_ttl_hours: 24,
        }
    }
}

/// `[llm]`: model providers, routing and resilience.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// The model used when neither the request nor the persona names one.
    pub default_model: String,
    /// Earlier messages sent as context with each turn.
    pub history_messages: u32,
    /// Private, loopback or link-local destinations providers may use anyway
    /// (`host:port`, `host`, or a CIDR such as `10.0.0.0/8`): e.g. a local Ollama.
    pub allow_private_addresses: Vec<String>,
    /// The same, for providers that tenants configure (empty by default: a
    /// tenant admin must not reach the operator's internal network).
    pub tenant_allow_private_addresses: Vec<String>,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    /// Longest silence between two events of a streamed answer.
    pub stream_idle_timeout_secs: u64,
    /// Attempts per provider before falling back to the next.
    pub retry_attempts: u32,
    pub retry_base_delay_ms: u64,
    pub retry_max_delay_ms: u64,
    /// Consecutive failures that open a provider's circuit, and for how long.
    pub breaker_failures: u32,
    pub breaker_open_secs: u64,
    /// Platform providers, tried in this order for a model they serve.
    pub providers: Vec<ProviderEntry>,
    /// Other names for models: `fast = "gpt-4o-mini"`.
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Prices per model, for usage cost.
    pub prices: Vec<PriceEntry>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            default_model: "karen-offline-extractive".into(),
            history_messages: 40,
            allow_private_addresses: Vec::new(),
            tenant_allow_private_addresses: Vec::new(),
            connect_timeout_secs: 5,
            request_timeout_secs: 120,
            stream_idle_timeout_secs: 60,
            retry_attempts: 2,
            retry_base_delay_ms: 200,
            retry_max_delay_ms: 5_000,
            breaker_failures: 5,
            breaker_open_secs: 30,
            providers: Vec::new(),
            aliases: std::collections::BTreeMap::new(),
            prices: Vec::new(),
        }
    }
}

/// `[[llm.providers]]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// A name for logs and usage records.
    pub name: String,
    /// `openai` (any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama's /v1) or `anthropic`.
    pub kind: String,
    /// E.g. `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`, `https://api.anthropic.com`.
    pub base_url: String,
    /// The credential. Prefer `api_key_env`, so no secret sits in a file.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The name of an environment variable holding the credential.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The model ids this provider serves.
    pub models: Vec<String>,
}

impl std::fmt::Debug for ProviderEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderEntry")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("api_key_env", &self.api_key_env)
            .field("models", &self.models)
            .finish()
    }
}

/// `[[llm.prices]]`: millionths of the currency unit per 1,000 tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub model: String,
    pub prompt_per_1k_micros: i64,
    pub completion_per_1k_micros: i64,
}

/// `[features]`: one toggle per optional component.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Features {
    /// Anyone may create a tenant with `POST /v1/signup`.
    pub self_signup: bool,
    /// Single sign-on (OIDC) for tenants that configure a connection (default on).
    pub sso: bool,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            self_signup: false,
            sso: true,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object per line) or `pretty` (for a terminal).
    pub format: LogFormat,
    /// Level, or per-module directives: `info,karen_sql=debug`. The
    /// environment variable `KAREN_LOG` (else `RUST_LOG`), when set, replaces it.
    pub level: String,
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `/metrics`.
    pub enabled: bool,
    /// A separate address for `/metrics` (e.g. `127.0.0.1:9464`, reachable by
    /// the scraper only); empty serves it on the main listener.
    pub listen: String,
    /// Tenants with per-tenant series of their own (the busiest); the rest are `other`.
    pub tenant_series: usize,
    /// Minutes of per-minute history the insight report can cover (1–1440).
    pub insights_window_minutes: u32,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: String::new(),
            tenant_series: 20,
            insights_window_minutes: karen_app::insights::DEFAULT_WINDOW_MINUTES,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Problems found in a configuration, each naming its key.
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads defaults, then `path` (if given it must exist; otherwise `karen.toml`
    /// is read when present), then `KAREN_*` variables; then validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(
            path,
            // `KAREN_LOG` is a log filter (see `logging`), not the `[log]` section;
            // `KAREN_MASTER_KEY` is the master key itself (see `encryption`).
            Env::prefixed("KAREN_")
                .split("__")
                .ignore(&["config", "log", "master_key"]),
        )
    }

    /// As [`Config::load`], with an explicit environment provider (for tests).
    pub fn load_from(path: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(path) if !path.exists() => {
                return Err(ConfigError(vec![format!(
                    "config file {} does not exist",
                    path.display()
                )]));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("karen.toml").exists() => {
                figment = figment.merge(Toml::file_exact("karen.toml"))
            }
            None => {}
        }
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|error| ConfigError(error.into_iter().map(|e| e.to_string()).collect()))?;
        config.validate()?;
        Ok(config)
    }

    /// Whether traces are exported: `tracing.enabled`, or when unset, only in mode `full`.
    pub fn tracing_enabled(&self) -> bool {
        self.tracing.enabled.unwrap_or(self.mode == Mode::Full)
    }

    /// The serving database URL (with the embedded default).
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("karen.db").display()))
    }

    /// Checks the configuration as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems
                .push("metrics.listen: must be host:port, e.g. 127.0.0.1:9464 (or empty)".into());
        }
        if self.metrics.tenant_series > 1000 {
            problems.push("metrics.tenant_series: at most 1000 (each tenant adds series)".into());
        }
        let window = self.metrics.insights_window_minutes;
        if !(1..=karen_app::insights::MAX_WINDOW_MINUTES).contains(&window) {
            problems.push(format!(
                "metrics.insights_window_minutes: between 1 and {} (got {window})",
                karen_app::insights::MAX_WINDOW_MINUTES
            ));
        }
        let url = self.database_url();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !postgres && !url.starts_with("sqlite:") {
            problems.push("database.url: must start with sqlite:// or postgres://".to_owned());
        }
        problems.extend(self.memory.problems(self.mode, postgres));
        problems.extend(self.tracing.problems());
        problems.extend(self.rate_limits.problems());
        problems.extend(self.audit.forward.problems());
        problems.extend(self.audit.problems());
        problems.extend(self.retention.problems());
        problems.extend(self.sso.problems());
        problems.extend(self.encryption.problems());
        match self.mode {
            Mode::Minimal => {
                if postgres {
                    problems.push("database.url: mode 'minimal' runs on the embedded SQLite store; set mode = \"standard\" to use PostgreSQL".into());
                }
                if self.redis.url.is_some() {
                    problems.push("redis.url: mode 'minimal' uses in-process limits; set mode = \"standard\" to use Redis".into());
                }
            }
            Mode::Standard | Mode::Full => {
                if !postgres {
                    problems.push(format!(
                        "database.url: mode '{}' needs a postgres:// URL (the application role)",
                        self.mode_name()
                    ));
                }
                match &self.redis.url {
                    None => problems.push(format!(
                        "redis.url: mode '{}' needs Redis (redis://host:6379)",
                        self.mode_name()
                    )),
                    Some(r) if !(r.starts_with("redis://") || r.starts_with("rediss://")) => {
                        problems.push("redis.url: must start with redis:// or rediss://".into());
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(m) = &self.database.migration_url
            && !(m.starts_with("postgres://") || m.starts_with("postgresql://"))
        {
            problems.push(
                "database.migration_url: only PostgreSQL needs a separate owner URL (postgres://…)"
                    .into(),
            );
        }
        problems.extend(self.transport_problems(postgres));
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen: '{}' is not an address like 127.0.0.1:8080",
                self.server.listen
            ));
        }
        let ranges: [(&str, u64, u64, u64); 11] = [
            (
                "server.body_limit_bytes",
                self.server.body_limit_bytes as u64,
                1024,
                1 << 30,
            ),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
                1,
                3600,
            ),
            (
                "server.shutdown_grace_secs",
                self.server.shutdown_grace_secs,
                1,
                600,
            ),
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
                1,
                1000,
            ),
            (
                "auth.access_token_ttl_secs",
                self.auth.access_token_ttl_secs,
                60,
                86_400,
            ),
            ("auth.session_ttl_days", self.auth.session_ttl_days, 1, 365),
            (
                "auth.session_idle_timeout_hours",
                self.auth.session_idle_timeout_hours,
                1,
                8760,
            ),
            (
                "auth.password_setup_ttl_hours",
                self.auth.password_setup_ttl_hours,
                1,
                720,
            ),
            (
                "auth.password_hash_memory_kib",
                u64::from(self.auth.password_hash_memory_kib),
                8_192,
                1 << 21,
            ),
            (
                "auth.password_hash_iterations",
                u64::from(self.auth.password_hash_iterations),
                1,
                20,
            ),
            ("redis.timeout_ms", self.redis.timeout_ms, 10, 60_000),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                problems.push(format!("{key}: {value} is out of range ({min}–{max})"));
            }
        }
        if self.auth.lockout_after_failures < 1 || self.auth.delay_after_failures < 0 {
            problems.push("auth.lockout_after_failures must be at least 1 and auth.delay_after_failures at least 0".into());
        }
        if self.auth.ip_max_failures < 1
            || self.auth.ip_window_secs < 1
            || self.auth.max_delay_secs < 1
        {
            problems.push("auth.ip_max_failures, auth.ip_window_secs and auth.max_delay_secs must be at least 1".into());
        }
        for (i, provider) in self.llm.providers.iter().enumerate() {
            let key = format!("llm.providers[{i}]");
            if !matches!(provider.kind.as_str(), "openai" | "anthropic") {
                problems.push(format!(
                    "{key}.kind: '{}' is not openai or anthropic",
                    provider.kind
                ));
            }
            if !(provider.base_url.starts_with("https://")
                || provider.base_url.starts_with("http://"))
            {
                problems.push(format!(
                    "{key}.base_url: must be an http:// or https:// URL"
                ));
            }
            if provider.models.is_empty() {
                problems.push(format!(
                    "{key}.models: list the model ids this provider serves"
                ));
            }
            if provider.api_key.is_some() && provider.api_key_env.is_some() {
                problems.push(format!("{key}: set api_key or api_key_env, not both"));
            }
            if let Some(var) = &provider.api_key_env
                && std::env::var_os(var).is_none()
            {
                problems.push(format!(
                    "{key}.api_key_env: the environment variable {var} is not set"
                ));
            }
        }
        if self.llm.retry_attempts < 1 || self.llm.breaker_failures < 1 {
            problems.push("llm.retry_attempts and llm.breaker_failures must be at least 1".into());
        }
        if self.llm.history_messages > 1000 {
            problems.push("llm.history_messages: at most 1000".into());
        }
        if self.auth.issuer.trim().is_empty() {
            problems.push("auth.issuer: must not be empty".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!(
                "log.level: '{}' is not a level or a list of module=level directives",
                self.log.level
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }

    /// Problems of the TLS and CORS settings.
    fn transport_problems(&self, postgres: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let tls = &self.server.tls;
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) | (None, Some(_)) => problems.push(
                "server.tls: set both cert_file and key_file (or neither, for plain HTTP)".into(),
            ),
            _ => {}
        }
        for (key, file) in [
            ("server.tls.cert_file", &tls.cert_file),
            ("server.tls.key_file", &tls.key_file),
            ("database.ssl_root_cert", &self.database.ssl_root_cert),
            ("redis.tls_root_cert", &self.redis.tls_root_cert),
        ] {
            if let Some(file) = file
                && !file.is_file()
            {
                problems.push(format!("{key}: {} is not a readable file", file.display()));
            }
        }
        if !(1..=3600).contains(&tls.reload_interval_secs) {
            problems.push("server.tls.reload_interval_secs: between 1 and 3600".into());
        }
        if !(1..=120).contains(&tls.handshake_timeout_secs) {
            problems.push("server.tls.handshake_timeout_secs: between 1 and 120".into());
        }
        if let Some(mode) = &self.database.ssl_mode
            && !PG_SSL_MODES.contains(&mode.as_str())
        {
            problems.push(format!(
                "database.ssl_mode: '{mode}' is not one of {}",
                PG_SSL_MODES.join(", ")
            ));
        }
        if !postgres && (self.database.ssl_mode.is_some() || self.database.ssl_root_cert.is_some())
        {
            problems.push(
                "database.ssl_mode, database.ssl_root_cert: only PostgreSQL connections use TLS"
                    .into(),
            );
        }
        if self.redis.tls_root_cert.is_some()
            && !self
                .redis
                .url
                .as_deref()
                .is_some_and(|url| url.starts_with("rediss://"))
        {
            problems.push("redis.tls_root_cert: needs a rediss:// URL (TLS)".into());
        }
        for origin in &self.server.cors_allowed_origins {
            if let Some(problem) = cors_origin_problem(origin) {
                problems.push(format!("server.cors_allowed_origins: '{origin}' {problem}"));
            }
        }
        problems
    }

    pub(crate) fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Minimal => "minimal",
            Mode::Standard => "standard",
            Mode::Full => "full",
        }
    }

    /// The effective configuration as TOML, with passwords in URLs replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = Some(redact_url(&self.database_url()));
        shown.database.migration_url = self.database.migration_url.as_deref().map(redact_url);
        shown.redis.url = self.redis.url.as_deref().map(redact_url);
        for provider in &mut shown.llm.providers {
            if provider.api_key.is_some() {
                provider.api_key = Some("***".into());
            }
        }
        toml::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Why `origin` cannot be a CORS origin, if it cannot: it must be exactly
/// `http(s)://host[:port]`, never a wildcard, a path or a `null` origin.
fn cors_origin_problem(origin: &str) -> Option<&'static str> {
    if origin.contains('*') {
        return Some("is a wildcard; list each origin");
    }
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return Some("must start with https:// (or http:// for local development)");
    };
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@', ' '])
        || !rest.is_ascii()
        || rest.chars().any(|c| c.is_ascii_control())
    {
        return Some("must be scheme://host[:port] with no path, query or user");
    }
    None
}

/// Replaces the password of `scheme://user:password@host…` (and any query
/// parameter whose name contains `password`) with `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find('/')
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let redacted: Vec<String> = tail
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().contains("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    // `Jail` closures must return `figment::Error`, which is large by design.
    #![allow(clippy::result_large_err)]

    use figment::Jail;

    use super::*;

    /// An environment provider that reads nothing (no variable has this prefix).
    fn no_env() -> Env {
        Env::prefixed("KAREN_CONFIG_TEST_UNSET_").split("__")
    }

    /// Loads `toml` as the configuration file, with no environment overrides.
    fn load_toml(toml: &str) -> Result<Config, ConfigError> {
        let mut result = None;
        Jail::expect_with(|jail| {
            jail.create_file("test.toml", toml)?;
            result = Some(Config::load_from(Some(Path::new("test.toml")), no_env()));
            Ok(())
        });
        result.expect("the jail ran")
    }

    /// The problems of a configuration that must be rejected, as one text.
    #[track_caller]
    fn rejected(result: Result<Config, ConfigError>) -> String {
        match result {
            Ok(config) => panic!("configuration accepted: {config:?}"),
            Err(error) => {
                assert!(!error.0.is_empty(), "a rejection lists its problems");
                error.to_string()
            }
        }
    }

    #[track_caller]
    fn problems_of(config: &Config) -> String {
        rejected(config.validate().map(|()| config.clone()))
    }

    #[test]
    fn defaults_validate_and_run_minimal_on_sqlite_in_the_data_dir() {
        let config = Config::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.mode, Mode::Minimal);
        assert!(config.database.url.is_none());
        assert!(config.redis.url.is_none());
        let expected = format!("sqlite://{}", config.data_dir.join("karen.db").display());
        assert_eq!(config.database_url(), expected);
        assert!(config.database_url().starts_with("sqlite://"));
        assert!(config.database_url().contains("karen-data"));

        let moved = Config {
            data_dir: PathBuf::from("/var/lib/karen"),
            ..Config::default()
        };
        assert_eq!(moved.database_url(), "sqlite:///var/lib/karen/karen.db");
        moved.validate().expect("another data dir is valid");
    }

    #[test]
    fn loading_nothing_gives_the_defaults() {
        Jail::expect_with(|_jail| {
            // The jail's working directory is empty: no karen.toml.
            let config = Config::load_from(None, no_env()).expect("defaults load");
            assert_eq!(config.mode, Mode::Minimal);
            assert_eq!(config.server.listen, ServerConfig::default().listen);
            assert_eq!(config.database_url(), Config::default().database_url());
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_defaults_and_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "karen.toml",
                "[server]\nlisten = \"127.0.0.1:1111\"\n[database]\nmax_connections = 3\n",
            )?;
            jail.set_env("KAREN_SERVER__LISTEN", "0.0.0.0:9090");
            jail.set_env("KAREN_DATABASE__MAX_CONNECTIONS", "42");
            let config = Config::load(None).expect("valid configuration");
            assert_eq!(config.server.listen, "0.0.0.0:9090");
            assert_eq!(config.database.max_connections, 42);
            // Untouched keys keep their defaults.
            assert_eq!(config.server.request_timeout_secs, 30);
            Ok(())
        });
    }

    #[test]
    fn environment_values_are_validated_too() {
        Jail::expect_with(|jail| {
            jail.set_env("KAREN_DATABASE__MAX_CONNECTIONS", "0");
            let message = rejected(Config::load(None));
            assert!(message.contains("database.max_connections"), "{message}");
            jail.set_env("KAREN_DATABASE__MAX_CONNECTIONS", "many");
            // Named as the variable spells it (upper case).
            let message = rejected(Config::load(None)).to_lowercase();
            assert!(message.contains("database.max_connections"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn a_file_is_read_and_a_missing_named_file_is_an_error() {
        let config = load_toml("mode = \"minimal\"\n[server]\nlisten = \"127.0.0.1:7070\"\n")
            .expect("valid file");
        assert_eq!(config.server.listen, "127.0.0.1:7070");
        Jail::expect_with(|_jail| {
            let message = rejected(Config::load_from(
                Some(Path::new("does-not-exist.toml")),
                no_env(),
            ));
            assert!(message.contains("does-not-exist.toml"), "{message}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        let message = rejected(load_toml(
            "[server]\nlisten = \"127.0.0.1:8080\"\nlisten_port = 8080\n",
        ));
        assert!(message.contains("listen_port"), "{message}");
        let message = rejected(load_toml("colour = \"blue\"\n"));
        assert!(message.contains("colour"), "{message}");
        let message = rejected(load_toml("[cache]\nsize = 1\n"));
        assert!(message.contains("cache"), "{message}");
    }

    #[test]
    fn wrong_types_are_rejected_naming_the_key() {
        let message = rejected(load_toml("[server]\nrequest_timeout_secs = \"soon\"\n"));
        assert!(message.contains("request_timeout_secs"), "{message}");
        let message = rejected(load_toml("mode = \"huge\"\n"));
        assert!(message.contains("mode"), "{message}");
        let message = rejected(load_toml("[auth]\naccess_token_ttl_secs = -5\n"));
        assert!(message.contains("access_token_ttl_secs"), "{message}");
    }

    #[test]
    fn standard_mode_needs_both_database_and_redis_urls() {
        let config = Config {
            mode: Mode::Standard,
            ..Config::default()
        };
        let message = problems_of(&config);
        assert!(message.contains("database.url"), "{message}");
        assert!(message.contains("redis.url"), "{message}");

        let message = rejected(load_toml("mode = \"full\"\n"));
        assert!(message.contains("database.url"), "{message}");
        assert!(message.contains("redis.url"), "{message}");

        let mut complete = Config {
            mode: Mode::Standard,
            ..Config::default()
        };
        complete.database.url = Some("postgres://karen_app@db:5432/karen".into());
        complete.redis.url = Some("redis://cache:6379/0".into());
        complete
            .validate()
            .expect("standard with both URLs is valid");
        complete.redis.url = Some("http://cache:6379".into());
        let message = problems_of(&complete);
        assert!(message.contains("redis.url"), "{message}");
    }

    #[test]
    fn minimal_mode_refuses_postgres_and_redis() {
        let mut config = Config::default();
        config.database.url = Some("postgres://karen@db:5432/karen".into());
        let message = problems_of(&config);
        assert!(message.contains("database.url"), "{message}");

        let mut config = Config::default();
        config.redis.url = Some("redis://cache:6379".into());
        let message = problems_of(&config);
        assert!(message.contains("redis.url"), "{message}");

        let mut config = Config::default();
        config.database.url = Some("mysql://karen@db/karen".into());
        let message = problems_of(&config);
        assert!(message.contains("database.url"), "{message}");
    }

    #[test]
    fn a_listen_value_that_is_not_an_address_is_rejected() {
        for listen in ["nope", "localhost", "127.0.0.1", ":8080", "127.0.0.1:99999"] {
            let mut config = Config::default();
            config.server.listen = listen.into();
            let message = problems_of(&config);
            assert!(message.contains("server.listen"), "{listen}: {message}");
        }
        let message = rejected(load_toml("[server]\nlisten = \"nope\"\n"));
        assert!(message.contains("server.listen"), "{message}");
    }

    #[test]
    fn out_of_range_values_are_rejected_naming_the_key() {
        type Change = fn(&mut Config);
        let cases: [(&str, Change); 14] = [
            ("auth.access_token_ttl_secs", |c| {
                c.auth.access_token_ttl_secs = 5
            }),
            ("auth.access_token_ttl_secs", |c| {
                c.auth.access_token_ttl_secs = 86_401
            }),
            ("server.body_limit_bytes", |c| {
                c.server.body_limit_bytes = 10
            }),
            ("server.request_timeout_secs", |c| {
                c.server.request_timeout_secs = 0
            }),
            ("database.max_connections", |c| {
                c.database.max_connections = 0
            }),
            ("auth.session_ttl_days", |c| c.auth.session_ttl_days = 0),
            ("auth.session_idle_timeout_hours", |c| {
                c.auth.session_idle_timeout_hours = 0
            }),
            ("auth.password_hash_memory_kib", |c| {
                c.auth.password_hash_memory_kib = 64
            }),
            ("auth.password_setup_ttl_hours", |c| {
                c.auth.password_setup_ttl_hours = 0
            }),
            ("auth.password_setup_ttl_hours", |c| {
                c.auth.password_setup_ttl_hours = 721
            }),
            ("redis.timeout_ms", |c| c.redis.timeout_ms = 1),
            ("log.level", |c| c.log.level = "loud,,=".into()),
            ("metrics.insights_window_minutes", |c| {
                c.metrics.insights_window_minutes = 0
            }),
            ("metrics.insights_window_minutes", |c| {
                c.metrics.insights_window_minutes = 1441
            }),
        ];
        for (key, change) in cases {
            let mut config = Config::default();
            change(&mut config);
            let message = problems_of(&config);
            assert!(message.contains(key), "{key}: {message}");
        }
        let message = rejected(load_toml("[auth]\naccess_token_ttl_secs = 5\n"));
        assert!(message.contains("auth.access_token_ttl_secs"), "{message}");
    }

    #[test]
    fn tracing_is_off_unless_set_or_full_and_its_values_are_checked() {
        let config = Config::default();
        assert!(!config.tracing_enabled(), "off in minimal by default");
        let mut full = Config {
            mode: Mode::Full,
            ..Config::default()
        };
        assert!(full.tracing_enabled(), "on in full unless set");
        full.tracing.enabled = Some(false);
        assert!(!full.tracing_enabled());
        let config = load_toml(
            "[tracing]\nenabled = true\nprotocol = \"grpc\"\nendpoint = \"http://collector:4317\"\nsampling_ratio = 0.25\n",
        )
        .expect("valid tracing section");
        assert!(config.tracing_enabled());
        assert_eq!(config.tracing.protocol, OtlpProtocol::Grpc);
        assert_eq!(config.tracing.traces_endpoint(), "http://collector:4317");
        let mut http = TracingConfig::default();
        assert_eq!(http.traces_endpoint(), "http://localhost:4318/v1/traces");
        http.endpoint = "https://collector:4318/".into();
        assert_eq!(http.traces_endpoint(), "https://collector:4318/v1/traces");
        http.endpoint = "https://collector:4318/v1/traces".into();
        assert_eq!(http.traces_endpoint(), "https://collector:4318/v1/traces");

        let message = rejected(load_toml("[tracing]\nprotocol = \"thrift\"\n"));
        assert!(message.contains("protocol"), "{message}");
        type Change = fn(&mut Config);
        let cases: [(&str, Change); 5] = [
            ("tracing.sampling_ratio", |c| c.tracing.sampling_ratio = 1.5),
            ("tracing.sampling_ratio", |c| {
                c.tracing.sampling_ratio = -0.1
            }),
            ("tracing.endpoint", |c| {
                c.tracing.endpoint = "collector:4318".into()
            }),
            ("tracing.service_name", |c| {
                c.tracing.service_name = " ".into()
            }),
            ("tracing.export_timeout_secs", |c| {
                c.tracing.export_timeout_secs = 0
            }),
        ];
        for (key, change) in cases {
            let mut config = Config::default();
            change(&mut config);
            let message = problems_of(&config);
            assert!(message.contains(key), "{key}: {message}");
        }
    }

    #[test]
    fn transport_settings_are_checked() {
        let config = Config::default();
        assert!(!config.server.tls_enabled());
        assert!(!config.server.hsts_enabled(), "no HSTS over plain HTTP");

        let dir = std::env::temp_dir().join(format!("karen-config-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, "x").expect("cert");
        std::fs::write(&key, "x").expect("key");
        let mut tls = Config::default();
        tls.server.tls.cert_file = Some(cert.clone());
        tls.server.tls.key_file = Some(key.clone());
        tls.validate().expect("both files set and present");
        assert!(tls.server.tls_enabled());
        assert!(tls.server.hsts_enabled(), "HSTS follows TLS");
        tls.server.hsts = Some(false);
        assert!(!tls.server.hsts_enabled(), "unless switched off");

        type Change = fn(&mut Config, &Path);
        let cases: [(&str, Change); 9] = [
            ("server.tls", |c, d| {
                c.server.tls.cert_file = Some(d.join("cert.pem"))
            }),
            ("server.tls.cert_file", |c, d| {
                c.server.tls.cert_file = Some(d.join("missing.pem"));
                c.server.tls.key_file = Some(d.join("key.pem"));
            }),
            ("server.tls.reload_interval_secs", |c, _| {
                c.server.tls.reload_interval_secs = 0
            }),
            ("server.cors_allowed_origins", |c, _| {
                c.server.cors_allowed_origins = vec!["*".into()]
            }),
            ("server.cors_allowed_origins", |c, _| {
                c.server.cors_allowed_origins = vec!["https://*.example.com".into()]
            }),
            ("server.cors_allowed_origins", |c, _| {
                c.server.cors_allowed_origins = vec!["https://example.com/app".into()]
            }),
            ("server.cors_allowed_origins", |c, _| {
                c.server.cors_allowed_origins = vec!["example.com".into()]
            }),
            ("database.ssl_mode", |c, _| {
                c.database.ssl_mode = Some("require".into())
            }),
            ("redis.tls_root_cert", |c, d| {
                c.redis.tls_root_cert = Some(d.join("cert.pem"))
            }),
        ];
        for (key, change) in cases {
            let mut config = Config::default();
            change(&mut config, &dir);
            let message = problems_of(&config);
            assert!(message.contains(key), "{key}: {message}");
        }

        let mut standard = Config {
            mode: Mode::Standard,
            ..Config::default()
        };
        standard.database.url = Some("postgres://karen_app@db/karen".into());
        standard.redis.url = Some("rediss://cache:6380".into());
        standard.database.ssl_mode = Some("verify-full".into());
        standard.database.ssl_root_cert = Some(cert.clone());
        standard.redis.tls_root_cert = Some(cert);
        standard.server.cors_allowed_origins = vec![
            "https://console.example.com".into(),
            "http://localhost:5173".into(),
        ];
        standard
            .validate()
            .expect("TLS everywhere and a CORS list are valid");
        standard.database.ssl_mode = Some("verify_full".into());
        let message = problems_of(&standard);
        assert!(message.contains("database.ssl_mode"), "{message}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn postgres_tls_settings_become_url_parameters() {
        let mut database = DatabaseConfig::default();
        let url = "postgres://u:p@db:5432/karen?application_name=k&sslmode=disable";
        assert_eq!(crate::postgres_tls_url(url, &database).expect("url"), url);
        database.ssl_mode = Some("verify-full".into());
        database.ssl_root_cert = Some(PathBuf::from("/etc/karen/ca.pem"));
        let tls = crate::postgres_tls_url(url, &database).expect("url");
        assert!(tls.starts_with("postgres://u:p@db:5432/karen?"), "{tls}");
        assert!(tls.contains("application_name=k"), "{tls}");
        assert!(tls.contains("sslmode=verify-full"), "{tls}");
        assert!(!tls.contains("sslmode=disable"), "{tls}");
        assert!(tls.contains("sslrootcert=%2Fetc%2Fkaren%2Fca.pem"), "{tls}");
    }

    #[test]
    fn karen_log_is_not_read_as_the_log_section() {
        Jail::expect_with(|jail| {
            jail.set_env("KAREN_LOG", "debug");
            jail.set_env("KAREN_LOG__FORMAT", "pretty");
            let config = Config::load(None).expect("KAREN_LOG is a filter, not a section");
            assert_eq!(config.log.format, LogFormat::Pretty);
            Ok(())
        });
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut config = Config {
            mode: Mode::Standard,
            ..Config::default()
        };
        config.server.listen = "nope".into();
        config.auth.access_token_ttl_secs = 5;
        let Err(error) = config.validate() else {
            panic!("invalid configuration accepted");
        };
        let message = error.to_string();
        for key in [
            "database.url",
            "redis.url",
            "server.listen",
            "auth.access_token_ttl_secs",
        ] {
            assert!(message.contains(key), "{key}: {message}");
        }
        assert!(error.0.len() >= 4, "{message}");
    }

    #[test]
    fn redact_url_hides_passwords_in_userinfo_and_query() {
        let redacted = redact_url("postgres://u:secret@h:5432/db?password=x");
        assert!(!redacted.contains("secret"), "{redacted}");
        assert!(!redacted.contains("password=x"), "{redacted}");
        assert_eq!(redacted, "postgres://u:***@h:5432/db?password=***");

        let redacted =
            redact_url("postgres://karen@h/db?sslmode=require&PASSWORD=hunter2&application_name=k");
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(redacted.contains("sslmode=require"), "{redacted}");
        assert!(redacted.contains("application_name=k"), "{redacted}");

        let redacted = redact_url("redis://:redispass@cache:6379/0");
        assert!(!redacted.contains("redispass"), "{redacted}");
        let redacted = redact_url("postgres://u:p@ss@h/db");
        assert!(!redacted.contains("p@ss"), "{redacted}");
        assert!(redacted.ends_with("@h/db"), "{redacted}");

        // Nothing secret: unchanged.
        for plain in [
            "postgres://karen_app@db:5432/karen",
            "sqlite://karen-data/karen.db",
            "redis://cache:6379",
        ] {
            assert_eq!(redact_url(plain), plain);
        }
    }

    #[test]
    fn redacted_toml_never_contains_a_password() {
        let mut config = Config {
            mode: Mode::Standard,
            ..Config::default()
        };
        config.database.url = Some("postgres://karen_app:app-secret@db:5432/karen".into());
        config.database.migration_url =
            Some("postgres://karen_owner:owner-secret@db:5432/karen?password=query-secret".into());
        config.redis.url = Some("rediss://default:redis-secret@cache:6380/0".into());
        config.validate().expect("valid configuration");
        let shown = config.to_redacted_toml();
        for secret in ["app-secret", "owner-secret", "query-secret", "redis-secret"] {
            assert!(!shown.contains(secret), "'{secret}' leaked: {shown}");
        }
        assert!(shown.contains("***"), "{shown}");
        assert!(
            shown.contains("karen_app"),
            "the user stays visible: {shown}"
        );
        // The original is untouched.
        assert_eq!(
            config.database.url.as_deref(),
            Some("postgres://karen_app:app-secret@db:5432/karen")
        );
    }

    #[test]
    fn redacted_toml_of_the_defaults_loads_back() {
        let shown = Config::default().to_redacted_toml();
        assert!(shown.contains("sqlite://"), "{shown}");
        let config = load_toml(&shown).expect("the shown configuration is a valid file");
        assert_eq!(config.mode, Mode::Minimal);
        assert_eq!(config.database_url(), Config::default().database_url());
    }
}
