//! Sessions and refresh tokens.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::credentials::{RefreshTokenRecord, SessionRecord};
use karen_domain::ports::SessionRepo;
use karen_domain::{RefreshTokenId, Result, SessionId, UserId};
use time::OffsetDateTime;

use crate::rows;
use crate::tenant::SqlTenantTx;

#[async_trait]
impl SessionRepo for SqlTenantTx {
    async fn insert_session(&mut self, session: &SessionRecord) -> Result<()> {
        let q = self
            .q("INSERT INTO sessions (tenant_id, id, user_id, created_at, expires_at, revoked_at, ip, user_agent) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(session.id.as_uuid())
            .bind(session.user_id.as_uuid())
            .bind(to_millis(session.created_at))
            .bind(to_millis(session.expires_at))
            .bind(session.revoked_at.map(to_millis))
            .bind(session.ip.clone())
            .bind(session.user_agent.clone());
        self.tx.execute(q).await.map(drop)
    }

    async fn session(&mut self, id: SessionId) -> Result<Option<SessionRecord>> {
        let q = self
            .q("SELECT * FROM sessions WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::session)
            .transpose()
    }

    async fn revoke_session(&mut self, id: SessionId, at: OffsetDateTime) -> Result<bool> {
        let q = self
            .q("UPDATE sessions SET revoked_at = $3 WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn revoke_user_sessions(
        &mut self,
        user: UserId,
        except: Option<SessionId>,
        at: OffsetDateTime,
    ) -> Result<u64> {
        let q = self
            .q("UPDATE sessions SET revoked_at = $3 WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL \
                AND ($4 IS NULL OR id <> $4)")
            .bind(user.as_uuid())
            .bind(to_millis(at))
            .bind(except.map(|s| s.as_uuid()));
        self.tx.execute(q).await
    }

    async fn insert_refresh_token(&mut self, token: &RefreshTokenRecord) -> Result<()> {
        let q = self
            .q("INSERT INTO refresh_tokens (tenant_id, id, session_id, user_id, secret_hash, expires_at, used_at, \
                created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(token.id.as_uuid())
            .bind(token.session_id.as_uuid())
            .bind(token.user_id.as_uuid())
            .bind(token.secret_hash.0.to_vec())
            .bind(to_millis(token.expires_at))
            .bind(token.used_at.map(to_millis))
            .bind(to_millis(token.created_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn refresh_token(&mut self, id: RefreshTokenId) -> Result<Option<RefreshTokenRecord>> {
        let q = self
            .q("SELECT * FROM refresh_tokens WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(rows::refresh_token)
            .transpose()
    }

    async fn spend_refresh_token(
        &mut self,
        id: RefreshTokenId,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let q = self
            .q("UPDATE refresh_tokens SET used_at = $3 WHERE tenant_id = $1 AND id = $2 AND used_at IS NULL")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }
}
