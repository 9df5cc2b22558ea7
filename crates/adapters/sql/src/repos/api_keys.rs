//! API keys.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::credentials::ApiKeyRecord;
use karen_domain::page::PageRequest;
use karen_domain::ports::ApiKeyRepo;
use karen_domain::{ApiKeyId, Result, UserId};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::platform::TOUCH_INTERVAL_MS;
use crate::rows;
use crate::tenant::SqlTenantTx;

#[async_trait]
impl ApiKeyRepo for SqlTenantTx {
    async fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()> {
        let q = self
            .q("INSERT INTO api_keys (tenant_id, id, user_id, name, display_prefix, secret_hash, scopes, \
                expires_at, last_used_at, revoked_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .bind(key.id.as_uuid())
            .bind(key.user_id.as_uuid())
            .bind(key.name.as_str())
            .bind(key.display_prefix.as_str())
            .bind(key.secret_hash.0.to_vec())
            .bind(Json(key.scopes))
            .bind(key.expires_at.map(to_millis))
            .bind(key.last_used_at.map(to_millis))
            .bind(key.revoked_at.map(to_millis))
            .bind(to_millis(key.created_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn api_key(&mut self, id: ApiKeyId) -> Result<Option<ApiKeyRecord>> {
        let q = self
            .q("SELECT * FROM api_keys WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::api_key)
            .transpose()
    }

    async fn list_api_keys(
        &mut self,
        user: Option<UserId>,
        page: &PageRequest,
    ) -> Result<Vec<ApiKeyRecord>> {
        let q = self
            .q(
                "SELECT * FROM api_keys WHERE tenant_id = $1 AND ($2 IS NULL OR user_id = $2) \
                AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4",
            )
            .bind(user.map(|u| u.as_uuid()))
            .bind(page.after)
            .bind(page.fetch_limit());
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(rows::api_key)
            .collect()
    }

    async fn revoke_api_key(&mut self, id: ApiKeyId, at: OffsetDateTime) -> Result<bool> {
        let q = self
            .q("UPDATE api_keys SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn touch_api_key(&mut self, id: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        let now = to_millis(at);
        let q = self
            .q(
                "UPDATE api_keys SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2 \
                AND (last_used_at IS NULL OR last_used_at < $4)",
            )
            .bind(id.as_uuid())
            .bind(now)
            .bind(now - TOUCH_INTERVAL_MS);
        self.tx.execute(q).await.map(drop)
    }
}
