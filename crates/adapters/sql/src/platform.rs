//! Platform tables: the tenant registry, operator keys and signing keys.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::credentials::{OperatorKeyRecord, SigningKeyRecord};
use karen_domain::page::PageRequest;
use karen_domain::ports::PlatformTx;
use karen_domain::rate_limit::RateLimits;
use karen_domain::tenant::Tenant;
use karen_domain::values::Slug;
use karen_domain::{OperatorKeyId, Result, SigningKeyId, TenantId};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::conn::Tx;
use crate::rows;

/// How often "last used" is written at most (saves a write per request).
pub(crate) const TOUCH_INTERVAL_MS: i64 = 60_000;

pub(crate) struct SqlPlatformTx {
    pub(crate) tx: Tx,
}

impl SqlPlatformTx {
    pub(crate) fn new(tx: Tx) -> Self {
        Self { tx }
    }
}

#[async_trait]
impl PlatformTx for SqlPlatformTx {
    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<()> {
        let q = self
            .tx
            .query(
                "INSERT INTO tenants (id, slug, name, plan, status, settings, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(tenant.id.as_uuid())
            .bind(tenant.slug.as_str())
            .bind(tenant.name.as_str())
            .bind(tenant.plan.as_str())
            .bind(tenant.status.as_str())
            .bind(Json(&tenant.settings))
            .bind(to_millis(tenant.created_at))
            .bind(to_millis(tenant.updated_at));
        let conflict = format!("the slug '{}' is already taken", tenant.slug);
        self.tx.execute_unique(q, &conflict).await.map(drop)
    }

    async fn tenant_by_id(&mut self, id: TenantId) -> Result<Option<Tenant>> {
        let q = self
            .tx
            .query("SELECT * FROM tenants WHERE id = $1")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::tenant)
            .transpose()
    }

    async fn tenant_by_slug(&mut self, slug: &Slug) -> Result<Option<Tenant>> {
        let q = self
            .tx
            .query("SELECT * FROM tenants WHERE slug = $1")
            .bind(slug.as_str());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::tenant)
            .transpose()
    }

    async fn list_tenants(&mut self, page: &PageRequest) -> Result<Vec<Tenant>> {
        let q = self
            .tx
            .query("SELECT * FROM tenants WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2")
            .bind(page.after)
            .bind(page.fetch_limit());
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(rows::tenant)
            .collect()
    }

    async fn update_tenant(&mut self, tenant: &Tenant) -> Result<()> {
        let q = self
            .tx
            .query(
                "UPDATE tenants SET name = $2, plan = $3, status = $4, settings = $5, updated_at = $6 \
                 WHERE id = $1",
            )
            .bind(tenant.id.as_uuid())
            .bind(tenant.name.as_str())
            .bind(tenant.plan.as_str())
            .bind(tenant.status.as_str())
            .bind(Json(&tenant.settings))
            .bind(to_millis(tenant.updated_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn delete_tenant(&mut self, id: TenantId) -> Result<bool> {
        let q = self
            .tx
            .query("DELETE FROM tenants WHERE id = $1")
            .bind(id.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn rate_limit_overrides(&mut self, id: TenantId) -> Result<Option<RateLimits>> {
        let q = self
            .tx
            .query("SELECT rate_limits FROM tenants WHERE id = $1")
            .bind(id.as_uuid());
        let Some(row) = self.tx.fetch_optional(q).await? else {
            return Ok(None);
        };
        let stored = row.get::<Option<Json<RateLimits>>>("rate_limits")?;
        Ok(Some(stored.map(|json| json.0).unwrap_or_default()))
    }

    async fn set_rate_limit_overrides(
        &mut self,
        id: TenantId,
        overrides: &RateLimits,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let stored = (!overrides.is_empty()).then_some(Json(*overrides));
        let q = self
            .tx
            .query("UPDATE tenants SET rate_limits = $2, updated_at = $3 WHERE id = $1")
            .bind(id.as_uuid())
            .bind(stored)
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn insert_operator_key(&mut self, key: &OperatorKeyRecord) -> Result<()> {
        let q = self
            .tx
            .query(
                "INSERT INTO operator_keys (id, name, secret_hash, created_at, last_used_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key.id.as_uuid())
            .bind(key.name.as_str())
            .bind(key.secret_hash.0.to_vec())
            .bind(to_millis(key.created_at))
            .bind(key.last_used_at.map(to_millis))
            .bind(key.revoked_at.map(to_millis));
        self.tx.execute(q).await.map(drop)
    }

    async fn operator_key(&mut self, id: OperatorKeyId) -> Result<Option<OperatorKeyRecord>> {
        let q = self
            .tx
            .query("SELECT * FROM operator_keys WHERE id = $1")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::operator_key)
            .transpose()
    }

    async fn list_operator_keys(&mut self) -> Result<Vec<OperatorKeyRecord>> {
        let q = self.tx.query("SELECT * FROM operator_keys ORDER BY id");
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(rows::operator_key)
            .collect()
    }

    async fn revoke_operator_key(&mut self, id: OperatorKeyId, at: OffsetDateTime) -> Result<bool> {
        let q = self
            .tx
            .query("UPDATE operator_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn touch_operator_key(&mut self, id: OperatorKeyId, at: OffsetDateTime) -> Result<()> {
        let now = to_millis(at);
        let q = self
            .tx
            .query(
                "UPDATE operator_keys SET last_used_at = $2 \
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(id.as_uuid())
            .bind(now)
            .bind(now - TOUCH_INTERVAL_MS);
        self.tx.execute(q).await.map(drop)
    }

    async fn insert_signing_key(&mut self, key: &SigningKeyRecord) -> Result<()> {
        let q = self
            .tx
            .query(
                "INSERT INTO signing_keys (id, algorithm, private_key, public_key, created_at, retired_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(key.id.as_uuid())
            .bind(key.algorithm.as_str())
            .bind(key.private_key.0.clone())
            .bind(key.public_key.clone())
            .bind(to_millis(key.created_at))
            .bind(key.retired_at.map(to_millis));
        self.tx.execute(q).await.map(drop)
    }

    async fn signing_keys(
        &mut self,
        retired_after: OffsetDateTime,
    ) -> Result<Vec<SigningKeyRecord>> {
        let q = self
            .tx
            .query("SELECT * FROM signing_keys WHERE retired_at IS NULL OR retired_at > $1 ORDER BY id DESC")
            .bind(to_millis(retired_after));
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(rows::signing_key)
            .collect()
    }

    async fn retire_signing_keys(&mut self, keep: SigningKeyId, at: OffsetDateTime) -> Result<u64> {
        let q = self
            .tx
            .query("UPDATE signing_keys SET retired_at = $2 WHERE id <> $1 AND retired_at IS NULL")
            .bind(keep.as_uuid())
            .bind(to_millis(at));
        self.tx.execute(q).await
    }

    fn audit(&mut self) -> &mut dyn karen_domain::ports::AuditRepo {
        self
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await
    }
}
