//! Model routing. Every `[[llm.providers]]` entry and every provider a tenant
//! configures becomes a provider behind the SSRF policy and timeouts; a model
//! is served by a resilient chain of the providers that list it — the
//! tenant's own first (by position), then the platform's in configuration
//! order — with retries, fallback and one circuit breaker per provider. The
//! offline provider always serves its own model id, so embedded mode answers
//! with no network at all. Aliases: the tenant's, then the platform's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use karen_app::cache::{Caching, EpochCache, Topic};
use karen_domain::clock::Clock;
use karen_domain::clock::to_millis;
use karen_domain::ports::{
    ChatProvider, Counters, EmbeddingProvider, LlmError, ModelRouter, RoutedEmbeddings,
    RoutedModel, Store,
};
use karen_domain::providers::TenantProvider;
use karen_domain::{Error, ProviderId, Result, SystemReason, TenantId, TenantScope};
use karen_llm::{
    BreakerRegistry, BreakerState, ChainMember, CircuitBreaker, EmbeddingChainMember,
    EmbeddingProviderConfig, EmbeddingProviderKind, Endpoint, OFFLINE_MODEL_ID, OfflineProvider,
    OutboundPolicy, ProviderConfig, ProviderKind, ResilientChat, ResilientEmbeddings, RetryPolicy,
    Timeouts, build_chat_provider, build_embedding_provider,
};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::config::LlmConfig;
use crate::telemetry::MeteredProvider;

/// A built provider and the models it serves.
struct Served {
    models: Vec<String>,
    provider: Arc<dyn ChatProvider>,
}

/// Tenant providers already built, by id, with the change time they were built from.
type BuiltProviders = HashMap<ProviderId, (OffsetDateTime, Arc<dyn ChatProvider>)>;
/// The same for their embeddings client.
type BuiltEmbedders = HashMap<ProviderId, (OffsetDateTime, Arc<dyn EmbeddingProvider>)>;

/// The outbound timeouts `[llm]` sets (chat and embedding providers alike).
/// Each model the platform's providers serve, with those providers in the
/// order they are tried and the aliases that name it (for insights).
pub fn model_chains(config: &LlmConfig) -> Vec<karen_app::insights::ModelChain> {
    let mut chains: Vec<karen_app::insights::ModelChain> = Vec::new();
    for provider in &config.providers {
        for model in &provider.models {
            match chains.iter_mut().find(|c| &c.model == model) {
                Some(chain) => chain.providers.push(provider.name.clone()),
                None => chains.push(karen_app::insights::ModelChain {
                    model: model.clone(),
                    providers: vec![provider.name.clone()],
                    aliases: config
                        .aliases
                        .iter()
                        .filter(|(_, target)| *target == model)
                        .map(|(alias, _)| alias.clone())
                        .collect(),
                }),
            }
        }
    }
    chains
}

pub(crate) fn timeouts(config: &LlmConfig) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(config.connect_timeout_secs),
        request: Duration::from_secs(config.request_timeout_secs),
        stream_idle: Duration::from_secs(config.stream_idle_timeout_secs),
    }
}

/// Routes model names to provider chains for each tenant.
pub struct ConfiguredRouter {
    store: Arc<dyn Store>,
    /// The outbound policy of tenants' providers (never the platform's allowlist).
    tenant_policy: OutboundPolicy,
    timeouts: Timeouts,
    retry: RetryPolicy,
    breakers: BreakerRegistry,
    /// Every breaker handed to a chain, by provider label, for the circuit gauge.
    watched: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
    platform: Vec<Served>,
    aliases: BTreeMap<String, String>,
    default_model: String,
    /// Tenant providers already built, by id and last change.
    built: Mutex<BuiltProviders>,
    /// Their embeddings clients, likewise.
    built_embedders: Mutex<BuiltEmbedders>,
    /// Resolved routes by tenant and model name, until the tenant's providers
    /// or aliases change (on any replica).
    routes: EpochCache<(TenantId, String), RoutedModel>,
    /// Resolved embedding routes (`None`: no provider of the tenant serves the model).
    embedding_routes: EpochCache<(TenantId, String), Option<RoutedEmbeddings>>,
    /// Each tenant's providers and aliases (what `GET /v1/models` lists and
    /// routes are built from), until they change (on any replica).
    tenant_configs: EpochCache<TenantId, Arc<TenantConfig>>,
    counters: Arc<dyn Counters>,
}

/// A tenant's own providers and its model aliases.
type TenantConfig = (Vec<TenantProvider>, BTreeMap<String, String>);

/// Tenants whose provider configuration is remembered.
const TENANT_CONFIG_CACHE_CAPACITY: usize = 10_000;

/// Routes remembered (tenants × models in use).
const ROUTE_CACHE_CAPACITY: usize = 50_000;
/// The bound on staleness should an invalidation be lost.
const ROUTE_CACHE_TTL: Duration = Duration::from_secs(30);

fn kind_of(name: &str) -> ProviderKind {
    match name {
        "anthropic" => ProviderKind::Anthropic,
        _ => ProviderKind::OpenAi,
    }
}

impl ConfiguredRouter {
    /// Builds the platform's providers; fails naming the provider whose URL or
    /// credential is unusable.
    pub fn from_config(
        config: &LlmConfig,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        counters: Arc<dyn Counters>,
        caching: Caching,
    ) -> anyhow::Result<Self> {
        let policy = OutboundPolicy::new(config.allow_private_addresses.iter().cloned());
        policy.validate().context("llm.allow_private_addresses")?;
        let tenant_policy =
            OutboundPolicy::new(config.tenant_allow_private_addresses.iter().cloned());
        tenant_policy
            .validate()
            .context("llm.tenant_allow_private_addresses")?;
        let timeouts = timeouts(config);
        let retry = RetryPolicy {
            attempts_per_provider: config.retry_attempts,
            base_delay: Duration::from_millis(config.retry_base_delay_ms),
            max_delay: Duration::from_millis(config.retry_max_delay_ms),
        };
        let breakers = BreakerRegistry::new(
            config.breaker_failures,
            Duration::from_secs(config.breaker_open_secs),
            clock,
        );
        let mut platform = Vec::new();
        for (i, entry) in config.providers.iter().enumerate() {
            let api_key = match (&entry.api_key, &entry.api_key_env) {
                (Some(key), _) => Some(SecretString::from(key.clone())),
                (None, Some(var)) => Some(SecretString::from(std::env::var(var).with_context(
                    || format!("llm.providers[{i}].api_key_env: {var} is not set"),
                )?)),
                (None, None) => None,
            };
            let config = ProviderConfig {
                name: entry.name.clone(),
                kind: kind_of(&entry.kind),
                base_url: Some(entry.base_url.clone()),
                api_key,
                models: entry.models.clone(),
            };
            let provider = build_chat_provider(&config, &policy, &timeouts)
                .map_err(|e| anyhow::anyhow!("llm.providers[{i}]: {e}"))?;
            platform.push(Served {
                models: entry.models.clone(),
                provider: MeteredProvider::wrap(provider, false),
            });
        }
        platform.push(Served {
            models: vec![OFFLINE_MODEL_ID.to_owned()],
            provider: MeteredProvider::wrap(Arc::new(OfflineProvider::new("offline")), false),
        });
        let served: BTreeSet<&String> = platform.iter().flat_map(|s| &s.models).collect();
        for (alias, target) in &config.aliases {
            if !served.contains(target) {
                anyhow::bail!("llm.aliases.{alias}: no provider serves '{target}'");
            }
        }
        if !served.contains(&config.default_model)
            && !config.aliases.contains_key(&config.default_model)
        {
            anyhow::bail!(
                "llm.default_model: no provider serves '{}'",
                config.default_model
            );
        }
        Ok(Self {
            store,
            tenant_policy,
            timeouts,
            retry,
            breakers,
            watched: Mutex::new(HashMap::new()),
            platform,
            aliases: config.aliases.clone(),
            default_model: config.default_model.clone(),
            built: Mutex::new(HashMap::new()),
            built_embedders: Mutex::new(HashMap::new()),
            routes: EpochCache::new(
                "routes",
                Topic::Routes,
                ROUTE_CACHE_CAPACITY,
                ROUTE_CACHE_TTL,
            )
            .switched(caching),
            embedding_routes: EpochCache::new(
                "embedding_routes",
                Topic::Routes,
                ROUTE_CACHE_CAPACITY,
                ROUTE_CACHE_TTL,
            )
            .switched(caching),
            tenant_configs: EpochCache::new(
                "tenant_models",
                Topic::Routes,
                TENANT_CONFIG_CACHE_CAPACITY,
                ROUTE_CACHE_TTL,
            )
            .switched(caching),
            counters,
        })
    }

    /// The tenant's providers and aliases.
    async fn tenant_config(&self, tenant: TenantId) -> Result<Arc<TenantConfig>> {
        self.tenant_configs
            .get_or_load(self.counters.as_ref(), tenant, tenant, || async {
                self.load_tenant_config(tenant).await.map(Arc::new)
            })
            .await
    }

    /// Reads the tenant's providers and aliases from the store.
    async fn load_tenant_config(&self, tenant: TenantId) -> Result<TenantConfig> {
        let mut tx = self
            .store
            .tenant_read(TenantScope::system(tenant, SystemReason::Routing))
            .await?;
        let providers = tx.providers().list_providers().await?;
        let aliases = tx
            .providers()
            .list_aliases()
            .await?
            .into_iter()
            .map(|a| (a.alias, a.target))
            .collect();
        tx.commit().await?;
        Ok((providers, aliases))
    }

    /// The built provider of a tenant's configuration (rebuilt when it changed).
    fn tenant_provider(&self, provider: &TenantProvider) -> Result<Arc<dyn ChatProvider>> {
        let mut built = self
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((changed, ready)) = built.get(&provider.id)
            && *changed == provider.updated_at
        {
            return Ok(ready.clone());
        }
        let config = ProviderConfig {
            // Tenant names are prefixed so they never share a circuit breaker with the platform's.
            name: format!("tenant:{}", provider.name),
            kind: kind_of(&provider.kind),
            base_url: Some(provider.base_url.clone()),
            api_key: provider.api_key.clone(),
            models: provider.models.clone(),
        };
        let ready = build_chat_provider(&config, &self.tenant_policy, &self.timeouts)
            .map_err(|e| refused(&e))?;
        let ready = MeteredProvider::wrap(ready, true);
        built.insert(provider.id, (provider.updated_at, ready.clone()));
        Ok(ready)
    }

    /// The embeddings client of a tenant's OpenAI-compatible provider (rebuilt when it changed).
    fn tenant_embedder(&self, provider: &TenantProvider) -> Result<Arc<dyn EmbeddingProvider>> {
        let mut built = self
            .built_embedders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((changed, ready)) = built.get(&provider.id)
            && *changed == provider.updated_at
        {
            return Ok(ready.clone());
        }
        let config = EmbeddingProviderConfig {
            // The chat client's name: both share the tenant's breaker for this server.
            name: format!("tenant:{}", provider.name),
            kind: EmbeddingProviderKind::OpenAi,
            base_url: Some(provider.base_url.clone()),
            api_key: provider.api_key.clone(),
            batch_size: None,
            model_dir: None,
        };
        let ready = build_embedding_provider(&config, &self.tenant_policy, &self.timeouts)
            .map_err(|e| refused(&e))?;
        built.insert(provider.id, (provider.updated_at, ready.clone()));
        Ok(ready)
    }

    /// Sets `karen_llm_circuit_open{provider}`: 1 while the circuit of the
    /// provider is open for any tenant (tenants' own providers count as
    /// `tenant`), 0 for every platform provider otherwise.
    pub fn publish_circuit_states(&self) {
        let mut open: BTreeMap<String, bool> = self
            .platform
            .iter()
            .map(|served| (served.provider.name().to_owned(), false))
            .collect();
        let watched = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, breaker) in watched.iter() {
            let provider = key.split_once('/').map_or(key.as_str(), |(_, name)| name);
            let label = if provider.starts_with("tenant:") {
                "tenant"
            } else {
                provider
            };
            let is_open = breaker.state() == BreakerState::Open;
            *open.entry(label.to_owned()).or_default() |= is_open;
        }
        drop(watched);
        for (provider, is_open) in open {
            metrics::gauge!("karen_llm_circuit_open", "provider" => provider).set(if is_open {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Breakers count failures per tenant: one tenant's requests (a slow model
    /// with a huge max_tokens, malformed tools) must not open a shared
    /// provider's circuit for everyone.
    fn breaker_key(tenant: TenantId, provider: &str) -> String {
        format!("{tenant}/{provider}")
    }

    /// The breaker of `provider` for `tenant`, watched for the circuit gauge.
    fn breaker(&self, tenant: TenantId, provider: &str) -> Arc<CircuitBreaker> {
        let key = Self::breaker_key(tenant, provider);
        let breaker = self.breakers.get(&key);
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| breaker.clone());
        breaker
    }
}

/// Whether a tenant provider speaks an API with embeddings (OpenAI's does, Anthropic's not).
fn embeds(provider: &TenantProvider) -> bool {
    provider.kind == "openai"
}

fn refused(error: &LlmError) -> Error {
    match error {
        LlmError::Refused(reason) => Error::invalid(Some("base_url"), reason.clone()),
        other => Error::invalid(Some("base_url"), other.to_string()),
    }
}

#[async_trait]
impl ModelRouter for ConfiguredRouter {
    async fn route(&self, tenant: TenantId, model: &str) -> Result<RoutedModel> {
        let key = (tenant, model.to_owned());
        self.routes
            .get_or_load(self.counters.as_ref(), tenant, key, || {
                self.build_route(tenant, model)
            })
            .await
    }

    async fn models(&self, tenant: TenantId) -> Result<Vec<String>> {
        self.list_models(tenant).await
    }

    async fn route_embeddings(
        &self,
        tenant: TenantId,
        model: &str,
    ) -> Result<Option<RoutedEmbeddings>> {
        let key = (tenant, model.to_owned());
        self.embedding_routes
            .get_or_load(self.counters.as_ref(), tenant, key, || {
                self.build_embedding_route(tenant, model)
            })
            .await
    }

    async fn embedding_models(&self, tenant: TenantId) -> Result<Vec<String>> {
        let config = self.tenant_config(tenant).await?;
        let providers = &config.0;
        let mut models: Vec<String> = Vec::new();
        for model in providers
            .iter()
            .filter(|p| embeds(p))
            .flat_map(|p| p.models.iter())
        {
            if !models.contains(model) {
                models.push(model.clone());
            }
        }
        Ok(models)
    }

    fn default_model(&self) -> String {
        self.default_model.clone()
    }

    fn check_provider_url(&self, base_url: &str) -> Result<()> {
        Endpoint::parse(base_url, &self.tenant_policy)
            .map(drop)
            .map_err(|e| refused(&e))
    }
}

impl ConfiguredRouter {
    /// The chain serving `model` for the tenant, read from its configuration.
    async fn build_route(&self, tenant: TenantId, model: &str) -> Result<RoutedModel> {
        let config = self.tenant_config(tenant).await?;
        let (providers, tenant_aliases) = (&config.0, &config.1);
        let upstream = tenant_aliases
            .get(model)
            .or_else(|| self.aliases.get(model))
            .map_or(model, String::as_str);
        let mut members: Vec<Arc<dyn ChatProvider>> = Vec::new();
        for provider in providers
            .iter()
            .filter(|p| p.models.iter().any(|m| m == upstream))
        {
            members.push(self.tenant_provider(provider)?);
        }
        members.extend(
            self.platform
                .iter()
                .filter(|s| s.models.iter().any(|m| m == upstream))
                .map(|s| s.provider.clone()),
        );
        if members.is_empty() {
            return Err(Error::ModelNotFound(model.to_owned()));
        }
        let name = members
            .iter()
            .map(|p| p.name().to_owned())
            .collect::<Vec<_>>()
            .join(",");
        let chain = members
            .into_iter()
            .map(|provider| {
                let breaker = self.breaker(tenant, provider.name());
                ChainMember::new(provider, breaker)
            })
            .collect();
        Ok(RoutedModel {
            provider: Arc::new(ResilientChat::new(name, chain, self.retry)),
            upstream_model: upstream.to_owned(),
        })
    }

    /// The chain of the tenant's OpenAI-compatible providers listing `model`
    /// (by position). Aliases do not apply: they name chat models.
    async fn build_embedding_route(
        &self,
        tenant: TenantId,
        model: &str,
    ) -> Result<Option<RoutedEmbeddings>> {
        let config = self.tenant_config(tenant).await?;
        let providers = &config.0;
        let serving: Vec<&TenantProvider> = providers
            .iter()
            .filter(|p| embeds(p) && p.models.iter().any(|m| m == model))
            .collect();
        if serving.is_empty() {
            return Ok(None);
        }
        let mut members = Vec::with_capacity(serving.len());
        for provider in &serving {
            let embedder = self.tenant_embedder(provider)?;
            let breaker = self.breaker(tenant, embedder.name());
            members.push(EmbeddingChainMember::new(embedder, breaker));
        }
        let name = members
            .iter()
            .map(|m| m.provider.name().to_owned())
            .collect::<Vec<_>>()
            .join(",");
        // Vectors are cached per provider configuration: a provider pointed
        // elsewhere (or replaced) never serves the old server's vectors.
        let configuration = serving
            .iter()
            .map(|p| format!("{}.{}", p.id, to_millis(p.updated_at)))
            .collect::<Vec<_>>()
            .join("+");
        Ok(Some(RoutedEmbeddings {
            provider: Arc::new(ResilientEmbeddings::new(name, members, self.retry)),
            upstream_model: model.to_owned(),
            cache_key: format!("{model}@tenant-provider:{configuration}"),
        }))
    }

    /// Every model and alias the tenant may name.
    async fn list_models(&self, tenant: TenantId) -> Result<Vec<String>> {
        let config = self.tenant_config(tenant).await?;
        let (providers, tenant_aliases) = (&config.0, &config.1);
        let mut models: BTreeSet<String> = self
            .platform
            .iter()
            .flat_map(|s| s.models.iter().cloned())
            .collect();
        models.extend(providers.iter().flat_map(|p| p.models.iter().cloned()));
        models.extend(self.aliases.keys().cloned());
        models.extend(tenant_aliases.keys().cloned());
        Ok(models.into_iter().collect())
    }
}
