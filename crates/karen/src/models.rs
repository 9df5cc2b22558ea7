//! Model routing from configuration: every `[[llm.providers]]` entry becomes a
//! provider (behind the SSRF policy and timeouts), and each model id is served
//! by a resilient chain of the providers that list it, in configuration order
//! (retries with backoff, fallback, one circuit breaker per provider). The
//! offline provider always serves its own model id, so embedded mode answers
//! with no network at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use karen_domain::clock::Clock;
use karen_domain::ports::{ChatProvider, ModelRouter, RoutedModel};
use karen_domain::{Error, Result, TenantId};
use karen_llm::{
    BreakerRegistry, ChainMember, OFFLINE_MODEL_ID, OfflineProvider, OutboundPolicy,
    ProviderConfig, ProviderKind, ResilientChat, RetryPolicy, Timeouts, build_chat_provider,
};
use secrecy::SecretString;

use crate::config::LlmConfig;

/// Routes model names (and aliases) to provider chains built from configuration.
pub struct ConfiguredRouter {
    chains: HashMap<String, Arc<dyn ChatProvider>>,
    aliases: BTreeMap<String, String>,
    default_model: String,
}

impl ConfiguredRouter {
    /// Builds every provider and chain; fails naming the provider whose URL or
    /// credential is unusable.
    pub fn from_config(config: &LlmConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let policy = OutboundPolicy::new(config.allow_private_addresses.iter().cloned());
        policy.validate().context("llm.allow_private_addresses")?;
        let timeouts = Timeouts {
            connect: Duration::from_secs(config.connect_timeout_secs),
            request: Duration::from_secs(config.request_timeout_secs),
            stream_idle: Duration::from_secs(config.stream_idle_timeout_secs),
        };
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
        let mut providers: Vec<(Vec<String>, Arc<dyn ChatProvider>)> = Vec::new();
        for (i, entry) in config.providers.iter().enumerate() {
            let kind = match entry.kind.as_str() {
                "anthropic" => ProviderKind::Anthropic,
                _ => ProviderKind::OpenAi,
            };
            let api_key = match (&entry.api_key, &entry.api_key_env) {
                (Some(key), _) => Some(SecretString::from(key.clone())),
                (None, Some(var)) => Some(SecretString::from(std::env::var(var).with_context(
                    || format!("llm.providers[{i}].api_key_env: {var} is not set"),
                )?)),
                (None, None) => None,
            };
            let provider = build_chat_provider(
                &ProviderConfig {
                    name: entry.name.clone(),
                    kind,
                    base_url: Some(entry.base_url.clone()),
                    api_key,
                    models: entry.models.clone(),
                },
                &policy,
                &timeouts,
            )
            .map_err(|e| anyhow::anyhow!("llm.providers[{i}]: {e}"))?;
            providers.push((entry.models.clone(), provider));
        }
        providers.push((
            vec![OFFLINE_MODEL_ID.to_owned()],
            Arc::new(OfflineProvider::new("offline")),
        ));

        let mut chains: HashMap<String, Arc<dyn ChatProvider>> = HashMap::new();
        let mut models: Vec<&String> = providers.iter().flat_map(|(models, _)| models).collect();
        models.dedup();
        for model in models {
            let members: Vec<ChainMember> = providers
                .iter()
                .filter(|(served, _)| served.contains(model))
                .map(|(_, provider)| {
                    ChainMember::new(provider.clone(), breakers.get(provider.name()))
                })
                .collect();
            let name = providers
                .iter()
                .filter(|(served, _)| served.contains(model))
                .map(|(_, provider)| provider.name().to_owned())
                .collect::<Vec<_>>()
                .join(",");
            chains.insert(
                model.clone(),
                Arc::new(ResilientChat::new(name, members, retry)),
            );
        }
        for (alias, target) in &config.aliases {
            if !chains.contains_key(target) {
                anyhow::bail!("llm.aliases.{alias}: no provider serves '{target}'");
            }
        }
        if !chains.contains_key(&config.default_model)
            && !config.aliases.contains_key(&config.default_model)
        {
            anyhow::bail!(
                "llm.default_model: no provider serves '{}'",
                config.default_model
            );
        }
        Ok(Self {
            chains,
            aliases: config.aliases.clone(),
            default_model: config.default_model.clone(),
        })
    }
}

#[async_trait]
impl ModelRouter for ConfiguredRouter {
    async fn route(&self, _tenant: TenantId, model: &str) -> Result<RoutedModel> {
        let upstream = self.aliases.get(model).map_or(model, String::as_str);
        let provider = self.chains.get(upstream).ok_or_else(|| {
            Error::invalid(
                Some("model"),
                format!("the model '{model}' is not available here; GET /v1/models lists the ones you may use"),
            )
        })?;
        Ok(RoutedModel {
            provider: provider.clone(),
            upstream_model: upstream.to_owned(),
        })
    }

    async fn models(&self, _tenant: TenantId) -> Result<Vec<String>> {
        let mut models: Vec<String> = self
            .chains
            .keys()
            .chain(self.aliases.keys())
            .cloned()
            .collect();
        models.sort();
        Ok(models)
    }

    fn default_model(&self) -> String {
        self.default_model.clone()
    }
}
