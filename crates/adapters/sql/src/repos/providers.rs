//! A tenant's model providers and aliases.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::ports::ProviderRepo;
use karen_domain::providers::{ModelAlias, TenantProvider};
use karen_domain::{ProviderId, Result, TenantId};
use secrecy::{ExposeSecret, SecretString};
use sqlx::types::Json;
use uuid::Uuid;

use crate::conn::Row;
use crate::content::{KeyRing, Slot};
use crate::rows;
use crate::tenant::SqlTenantTx;

fn provider(row: &Row, keys: &KeyRing) -> Result<TenantProvider> {
    let tenant_id = TenantId::from_uuid(row.get("tenant_id")?);
    let id: Uuid = row.get("id")?;
    let api_key = row
        .get::<Option<Vec<u8>>>("api_key")?
        .map(|sealed| {
            keys.open(Slot::new("tenant_providers", "api_key", id), &sealed)
                .map(SecretString::from)
        })
        .transpose()?;
    Ok(TenantProvider {
        id: ProviderId::from_uuid(id),
        tenant_id,
        name: row.get("name")?,
        kind: row.get("kind")?,
        base_url: row.get("base_url")?,
        api_key,
        models: row.get::<Json<Vec<String>>>("models")?.0,
        position: row.get("position")?,
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
    })
}

fn alias(row: &Row) -> Result<ModelAlias> {
    Ok(ModelAlias {
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        alias: row.get("alias")?,
        target: row.get("target")?,
        created_at: rows::time(row, "created_at")?,
    })
}

fn sealed_key(keys: &KeyRing, p: &TenantProvider) -> Result<Option<Vec<u8>>> {
    p.api_key
        .as_ref()
        .map(|key| {
            keys.seal(
                Slot::new("tenant_providers", "api_key", p.id.as_uuid()),
                key.expose_secret(),
            )
        })
        .transpose()
}

#[async_trait]
impl ProviderRepo for SqlTenantTx {
    async fn list_providers(&mut self) -> Result<Vec<TenantProvider>> {
        let q =
            self.q("SELECT * FROM tenant_providers WHERE tenant_id = $1 ORDER BY position, name");
        self.fetch_all_sealed(q, provider).await
    }

    async fn provider(&mut self, id: ProviderId) -> Result<Option<TenantProvider>> {
        let q = self
            .q("SELECT * FROM tenant_providers WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.fetch_optional_sealed(q, provider).await
    }

    async fn insert_provider(&mut self, p: &TenantProvider) -> Result<()> {
        let keys = self.sealing_keys().await?;
        let api_key = sealed_key(&keys, p)?;
        let q = self
            .q("INSERT INTO tenant_providers (tenant_id, id, name, kind, base_url, api_key, models, position, \
                created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(p.id.as_uuid())
            .bind(p.name.as_str())
            .bind(p.kind.as_str())
            .bind(p.base_url.as_str())
            .bind(api_key)
            .bind(Json(&p.models))
            .bind(p.position)
            .bind(to_millis(p.created_at))
            .bind(to_millis(p.updated_at));
        let conflict = format!("a provider named '{}' already exists", p.name);
        self.tx.execute_unique(q, &conflict).await.map(drop)
    }

    async fn update_provider(&mut self, p: &TenantProvider) -> Result<()> {
        let keys = self.sealing_keys().await?;
        let api_key = sealed_key(&keys, p)?;
        let q = self
            .q("UPDATE tenant_providers SET name = $3, kind = $4, base_url = $5, api_key = $6, models = $7, \
                position = $8, updated_at = $9 WHERE tenant_id = $1 AND id = $2")
            .bind(p.id.as_uuid())
            .bind(p.name.as_str())
            .bind(p.kind.as_str())
            .bind(p.base_url.as_str())
            .bind(api_key)
            .bind(Json(&p.models))
            .bind(p.position)
            .bind(to_millis(p.updated_at));
        let conflict = format!("a provider named '{}' already exists", p.name);
        self.tx.execute_unique(q, &conflict).await.map(drop)
    }

    async fn delete_provider(&mut self, id: ProviderId) -> Result<bool> {
        let q = self
            .q("DELETE FROM tenant_providers WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn list_aliases(&mut self) -> Result<Vec<ModelAlias>> {
        let q = self.q("SELECT * FROM model_aliases WHERE tenant_id = $1 ORDER BY alias");
        self.tx.fetch_all(q).await?.iter().map(alias).collect()
    }

    async fn put_alias(&mut self, a: &ModelAlias) -> Result<()> {
        let q = self
            .q("INSERT INTO model_aliases (tenant_id, alias, target, created_at) VALUES ($1, $2, $3, $4) \
                ON CONFLICT (tenant_id, alias) DO UPDATE SET target = excluded.target")
            .bind(a.alias.as_str())
            .bind(a.target.as_str())
            .bind(to_millis(a.created_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn delete_alias(&mut self, name: &str) -> Result<bool> {
        let q = self
            .q("DELETE FROM model_aliases WHERE tenant_id = $1 AND alias = $2")
            .bind(name);
        Ok(self.tx.execute(q).await? > 0)
    }
}
