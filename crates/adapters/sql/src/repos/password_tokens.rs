//! Single-use password setup and reset tokens (digests only).

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::credentials::{PasswordTokenPurpose, PasswordTokenRecord};
use karen_domain::ports::PasswordTokenRepo;
use karen_domain::{PasswordTokenId, Result, TenantId, UserId};
use time::OffsetDateTime;

use crate::conn::Row;
use crate::rows;
use crate::tenant::SqlTenantTx;

fn password_token(row: &Row) -> Result<PasswordTokenRecord> {
    Ok(PasswordTokenRecord {
        id: PasswordTokenId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        user_id: UserId::from_uuid(row.get("user_id")?),
        secret_hash: rows::hash(row, "token_hash")?,
        purpose: PasswordTokenPurpose::parse(&row.get::<String>("purpose")?)?,
        created_at: rows::time(row, "created_at")?,
        expires_at: rows::time(row, "expires_at")?,
        used_at: rows::opt_time(row, "used_at")?,
        created_by: row.get("created_by")?,
    })
}

#[async_trait]
impl PasswordTokenRepo for SqlTenantTx {
    async fn replace_password_token(&mut self, t: &PasswordTokenRecord) -> Result<()> {
        let q = self
            .q("DELETE FROM password_tokens WHERE tenant_id = $1 AND user_id = $2")
            .bind(t.user_id.as_uuid());
        self.tx.execute(q).await?;
        let q = self
            .q("INSERT INTO password_tokens (tenant_id, id, user_id, token_hash, purpose, created_at, \
                expires_at, used_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(t.id.as_uuid())
            .bind(t.user_id.as_uuid())
            .bind(t.secret_hash.0.to_vec())
            .bind(t.purpose.as_str())
            .bind(to_millis(t.created_at))
            .bind(to_millis(t.expires_at))
            .bind(t.used_at.map(to_millis))
            .bind(t.created_by.clone());
        self.tx.execute(q).await.map(drop)
    }

    async fn password_token(&mut self, id: PasswordTokenId) -> Result<Option<PasswordTokenRecord>> {
        let q = self
            .q("SELECT * FROM password_tokens WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(password_token)
            .transpose()
    }

    async fn spend_password_token(
        &mut self,
        id: PasswordTokenId,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let q = self
            .q("UPDATE password_tokens SET used_at = $3 WHERE tenant_id = $1 AND id = $2 AND used_at IS NULL")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }
}
