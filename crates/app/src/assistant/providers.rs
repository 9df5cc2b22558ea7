//! A tenant's own model providers (base URL, credential, models) and model
//! aliases, on top of the platform's. Credentials are write-only.

use crate::audit::Record;
use std::sync::Arc;

use karen_domain::chat::parse_model_name;
use karen_domain::permission::Permission;
use karen_domain::providers::{ModelAlias, TenantProvider, validate_provider};
use karen_domain::{Error, ProviderId, Result, TenantContext};
use secrecy::SecretString;

use crate::Deps;

/// A provider to create, or changes (absent fields stay).
#[derive(Default)]
pub struct ProviderInput {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub base_url: Option<String>,
    /// `Some(None)` removes the credential.
    pub api_key: Option<Option<String>>,
    pub models: Option<Vec<String>>,
    pub position: Option<i32>,
}

/// The provider service.
#[derive(Clone)]
pub struct ProviderService {
    deps: Arc<Deps>,
}

impl ProviderService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    fn check(&self, provider: &mut TenantProvider) -> Result<()> {
        provider.models = validate_provider(
            &provider.name,
            &provider.kind,
            &provider.base_url,
            &provider.models,
        )?;
        self.deps.router.check_provider_url(&provider.base_url)?;
        if provider.kind == "anthropic" && provider.api_key.is_none() {
            return Err(Error::invalid(
                Some("api_key"),
                "an Anthropic provider needs an api_key",
            ));
        }
        Ok(())
    }

    /// The tenant's providers (never their credentials).
    pub async fn list(&self, ctx: &TenantContext) -> Result<Vec<TenantProvider>> {
        ctx.require(Permission::TenantRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let providers = tx.providers().list_providers().await?;
        tx.commit().await?;
        Ok(providers)
    }

    /// Adds a provider.
    pub async fn create(
        &self,
        ctx: &TenantContext,
        input: ProviderInput,
    ) -> Result<TenantProvider> {
        ctx.require(Permission::TenantManage)?;
        let now = self.deps.clock.now();
        let required = |value: Option<String>, field: &str| {
            value.ok_or_else(|| Error::invalid(Some(field), format!("{field} is required")))
        };
        let mut provider = TenantProvider {
            id: ProviderId::generate(),
            tenant_id: ctx.tenant_id(),
            name: required(input.name, "name")?,
            kind: input.kind.unwrap_or_else(|| "openai".into()),
            base_url: required(input.base_url, "base_url")?,
            api_key: input.api_key.flatten().map(SecretString::from),
            models: input.models.unwrap_or_default(),
            position: input.position.unwrap_or(0),
            created_at: now,
            updated_at: now,
        };
        self.check(&mut provider)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        tx.providers().insert_provider(&provider).await?;
        let audit = Record::new("provider.create")
            .target("provider", provider.id)
            .after(&provider_json(&provider));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.deps.routes_changed(ctx.tenant_id()).await;
        Ok(provider)
    }

    /// Changes a provider.
    pub async fn update(
        &self,
        ctx: &TenantContext,
        id: ProviderId,
        input: ProviderInput,
    ) -> Result<TenantProvider> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        let mut provider = tx
            .providers()
            .provider(id)
            .await?
            .ok_or(Error::NotFound("provider"))?;
        let before = provider_json(&provider);
        if let Some(name) = input.name {
            provider.name = name;
        }
        if let Some(kind) = input.kind {
            provider.kind = kind;
        }
        if let Some(base_url) = input.base_url {
            // A stored credential only ever goes to the URL it was entered for.
            if base_url != provider.base_url
                && provider.api_key.is_some()
                && input.api_key.is_none()
            {
                return Err(Error::invalid(
                    Some("api_key"),
                    "changing base_url needs the api_key again (or api_key: null to drop it)",
                ));
            }
            provider.base_url = base_url;
        }
        if let Some(api_key) = input.api_key {
            provider.api_key = api_key.map(SecretString::from);
        }
        if let Some(models) = input.models {
            provider.models = models;
        }
        if let Some(position) = input.position {
            provider.position = position;
        }
        self.check(&mut provider)?;
        provider.updated_at = self.deps.clock.now();
        tx.providers().update_provider(&provider).await?;
        let audit = Record::new("provider.update")
            .target("provider", id)
            .before(&before)
            .after(&provider_json(&provider));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.deps.routes_changed(ctx.tenant_id()).await;
        Ok(provider)
    }

    /// Removes a provider.
    pub async fn delete(&self, ctx: &TenantContext, id: ProviderId) -> Result<()> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        if !tx.providers().delete_provider(id).await? {
            return Err(Error::NotFound("provider"));
        }
        let audit = Record::new("provider.delete").target("provider", id);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.deps.routes_changed(ctx.tenant_id()).await;
        Ok(())
    }

    /// The tenant's aliases.
    pub async fn aliases(&self, ctx: &TenantContext) -> Result<Vec<ModelAlias>> {
        ctx.require(Permission::TenantRead)?;
        let mut tx = self.deps.store.tenant_read(ctx.scope()).await?;
        let aliases = tx.providers().list_aliases().await?;
        tx.commit().await?;
        Ok(aliases)
    }

    /// Creates or replaces an alias for a model the tenant may use.
    pub async fn put_alias(
        &self,
        ctx: &TenantContext,
        alias: &str,
        target: &str,
    ) -> Result<ModelAlias> {
        ctx.require(Permission::TenantManage)?;
        let alias = parse_model_name(alias)
            .map_err(|_| Error::invalid(Some("alias"), "not a valid alias name"))?;
        let target = parse_model_name(target)?;
        let available = self.deps.router.models(ctx.tenant_id()).await?;
        if !available.contains(&target) {
            return Err(Error::invalid(
                Some("target"),
                format!(
                    "no provider serves '{}'; GET /v1/models lists them",
                    karen_domain::values::printable(target.as_ref(), 100)
                ),
            ));
        }
        if alias == target {
            return Err(Error::invalid(
                Some("alias"),
                "an alias must differ from its target",
            ));
        }
        let alias = ModelAlias {
            tenant_id: ctx.tenant_id(),
            alias,
            target,
            created_at: self.deps.clock.now(),
        };
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        tx.providers().put_alias(&alias).await?;
        let audit = Record::new("model_alias.put")
            .target("model_alias", &alias.alias)
            .after(&serde_json::json!({"target": alias.target}));
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.deps.routes_changed(ctx.tenant_id()).await;
        Ok(alias)
    }

    /// Removes an alias.
    pub async fn delete_alias(&self, ctx: &TenantContext, alias: &str) -> Result<()> {
        ctx.require(Permission::TenantManage)?;
        let mut tx = self.deps.store.tenant(ctx.scope()).await?;
        if !tx.providers().delete_alias(alias).await? {
            return Err(Error::NotFound("alias"));
        }
        let audit = Record::new("model_alias.delete").target("model_alias", alias);
        self.deps
            .audit(&mut *tx, ctx.scope().actor(), audit)
            .await?;
        tx.commit().await?;
        self.deps.routes_changed(ctx.tenant_id()).await;
        Ok(())
    }
}

/// A provider as recorded in audit diffs: whether it has a credential, never the credential.
fn provider_json(provider: &TenantProvider) -> serde_json::Value {
    serde_json::json!({
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "api_key_set": provider.api_key.is_some(),
        "models": provider.models,
        "position": provider.position,
    })
}
