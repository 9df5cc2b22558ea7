//! Sessions and refresh tokens.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::credentials::{ActiveSession, RefreshTokenRecord, SessionRecord};
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

    async fn list_user_sessions(
        &mut self,
        user: UserId,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ActiveSession>> {
        // A session's last use is when its newest refresh token was issued
        // (at login, then at each exchange).
        let q = self
            .q(
                "SELECT s.*, (SELECT MAX(r.created_at) FROM refresh_tokens r \
                    WHERE r.tenant_id = s.tenant_id AND r.session_id = s.id) AS last_used_at \
                FROM sessions s WHERE s.tenant_id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL \
                AND s.expires_at > $3 ORDER BY s.created_at DESC, s.id DESC LIMIT $4",
            )
            .bind(user.as_uuid())
            .bind(to_millis(now))
            .bind(i64::from(limit));
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(|row| {
                let session = rows::session(row)?;
                let last_used_at =
                    rows::opt_time(row, "last_used_at")?.unwrap_or(session.created_at);
                Ok(ActiveSession {
                    session,
                    last_used_at,
                })
            })
            .collect()
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
