//! Single sign-on: connections (client secret sealed with the tenant's data
//! key, see `content.rs`), pending logins (state and nonce as digests, the
//! PKCE verifier sealed), linked external identities and the SAML replay
//! cache (consumed assertion IDs).

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::ports::SsoRepo;
use karen_domain::sso::{RoleMapping, SsoConnection, SsoIdentity, SsoKind, SsoLoginState};
use karen_domain::{Result, SsoConnectionId, SsoStateId, TenantId, UserId};
use secrecy::{ExposeSecret, SecretString};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::conn::Row;
use crate::content::{KeyRing, Slot};
use crate::rows;
use crate::tenant::SqlTenantTx;

fn connection(row: &Row, keys: &KeyRing) -> Result<SsoConnection> {
    let id: uuid::Uuid = row.get("id")?;
    let client_secret = row
        .get::<Option<Vec<u8>>>("client_secret")?
        .map(|sealed| keys.open(Slot::new("sso_connections", "client_secret", id), &sealed))
        .transpose()?
        .map(SecretString::from);
    Ok(SsoConnection {
        id: SsoConnectionId::from_uuid(id),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        kind: SsoKind::parse(&row.get::<String>("kind")?)?,
        config: row.get::<Json<serde_json::Value>>("config")?.0,
        client_secret,
        role_mapping: row.get::<Json<RoleMapping>>("role_mapping")?.0,
        enabled: row.get("enabled")?,
        created_at: rows::time(row, "created_at")?,
        updated_at: rows::time(row, "updated_at")?,
    })
}

fn login_state(row: &Row, keys: &KeyRing) -> Result<SsoLoginState> {
    let id: uuid::Uuid = row.get("id")?;
    let verifier = keys.open(
        Slot::new("sso_login_states", "pkce_verifier", id),
        &row.get::<Vec<u8>>("pkce_verifier")?,
    )?;
    Ok(SsoLoginState {
        id: SsoStateId::from_uuid(id),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        connection_id: SsoConnectionId::from_uuid(row.get("connection_id")?),
        state_hash: rows::hash(row, "state_hash")?,
        nonce_hash: rows::hash(row, "nonce_hash")?,
        pkce_verifier: SecretString::from(verifier),
        redirect_uri: row.get("redirect_uri")?,
        expires_at: rows::time(row, "expires_at")?,
        used_at: rows::opt_time(row, "used_at")?,
        created_at: rows::time(row, "created_at")?,
    })
}

fn identity(row: &Row) -> Result<SsoIdentity> {
    Ok(SsoIdentity {
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        connection_id: SsoConnectionId::from_uuid(row.get("connection_id")?),
        subject: row.get("subject")?,
        user_id: UserId::from_uuid(row.get("user_id")?),
        created_at: rows::time(row, "created_at")?,
        last_login_at: rows::time(row, "last_login_at")?,
    })
}

#[async_trait]
impl SsoRepo for SqlTenantTx {
    async fn connection(&mut self, kind: SsoKind) -> Result<Option<SsoConnection>> {
        let q = self
            .q("SELECT * FROM sso_connections WHERE tenant_id = $1 AND kind = $2")
            .bind(kind.as_str());
        self.fetch_optional_sealed(q, connection).await
    }

    async fn put_connection(&mut self, c: &SsoConnection) -> Result<()> {
        let keys = self.sealing_keys().await?;
        let secret = c
            .client_secret
            .as_ref()
            .map(|secret| {
                keys.seal(
                    Slot::new("sso_connections", "client_secret", c.id.as_uuid()),
                    secret.expose_secret(),
                )
            })
            .transpose()?;
        let q = self
            .q("INSERT INTO sso_connections (tenant_id, id, kind, config, client_secret, role_mapping, \
                enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                ON CONFLICT (tenant_id, kind) DO UPDATE SET config = excluded.config, \
                client_secret = excluded.client_secret, role_mapping = excluded.role_mapping, \
                enabled = excluded.enabled, updated_at = excluded.updated_at \
                WHERE sso_connections.id = excluded.id")
            .bind(c.id.as_uuid())
            .bind(c.kind.as_str())
            .bind(Json(c.config.clone()))
            .bind(secret)
            .bind(Json(c.role_mapping.clone()))
            .bind(c.enabled)
            .bind(to_millis(c.created_at))
            .bind(to_millis(c.updated_at));
        let written = self.tx.execute(q).await?;
        if written == 0 {
            return Err(karen_domain::Error::Conflict(
                "the connection was replaced concurrently; read it again".into(),
            ));
        }
        Ok(())
    }

    async fn delete_connection(&mut self, kind: SsoKind) -> Result<bool> {
        let Some(existing) = self.connection(kind).await? else {
            return Ok(false);
        };
        for sql in [
            "DELETE FROM sso_identities WHERE tenant_id = $1 AND connection_id = $2",
            "DELETE FROM sso_login_states WHERE tenant_id = $1 AND connection_id = $2",
            "DELETE FROM sso_connections WHERE tenant_id = $1 AND id = $2",
        ] {
            self.tx
                .execute(self.q(sql).bind(existing.id.as_uuid()))
                .await?;
        }
        Ok(true)
    }

    async fn insert_state(&mut self, s: &SsoLoginState) -> Result<()> {
        let keys = self.sealing_keys().await?;
        let verifier = keys.seal(
            Slot::new("sso_login_states", "pkce_verifier", s.id.as_uuid()),
            s.pkce_verifier.expose_secret(),
        )?;
        let q = self
            .q("INSERT INTO sso_login_states (tenant_id, id, connection_id, state_hash, nonce_hash, \
                pkce_verifier, redirect_uri, expires_at, used_at, created_at) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(s.id.as_uuid())
            .bind(s.connection_id.as_uuid())
            .bind(s.state_hash.0.to_vec())
            .bind(s.nonce_hash.0.to_vec())
            .bind(verifier)
            .bind(s.redirect_uri.clone())
            .bind(to_millis(s.expires_at))
            .bind(s.used_at.map(to_millis))
            .bind(to_millis(s.created_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn state(&mut self, id: SsoStateId) -> Result<Option<SsoLoginState>> {
        let q = self
            .q("SELECT * FROM sso_login_states WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.fetch_optional_sealed(q, login_state).await
    }

    async fn spend_state(&mut self, id: SsoStateId, at: OffsetDateTime) -> Result<bool> {
        let q = self
            .q("UPDATE sso_login_states SET used_at = $3 WHERE tenant_id = $1 AND id = $2 AND used_at IS NULL")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn purge_states(&mut self, before: OffsetDateTime) -> Result<u64> {
        let q = self
            .q("DELETE FROM sso_login_states WHERE tenant_id = $1 AND expires_at < $2")
            .bind(to_millis(before));
        self.tx.execute(q).await
    }

    async fn identity(
        &mut self,
        connection: SsoConnectionId,
        subject: &str,
    ) -> Result<Option<SsoIdentity>> {
        let q = self
            .q("SELECT * FROM sso_identities WHERE tenant_id = $1 AND connection_id = $2 AND subject = $3")
            .bind(connection.as_uuid())
            .bind(subject.to_owned());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(identity)
            .transpose()
    }

    async fn insert_identity(&mut self, i: &SsoIdentity) -> Result<()> {
        let q = self
            .q("INSERT INTO sso_identities (tenant_id, connection_id, subject, user_id, created_at, \
                last_login_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(i.connection_id.as_uuid())
            .bind(i.subject.clone())
            .bind(i.user_id.as_uuid())
            .bind(to_millis(i.created_at))
            .bind(to_millis(i.last_login_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn touch_identity(
        &mut self,
        connection: SsoConnectionId,
        subject: &str,
        at: OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q(
                "UPDATE sso_identities SET last_login_at = $4 WHERE tenant_id = $1 \
                AND connection_id = $2 AND subject = $3",
            )
            .bind(connection.as_uuid())
            .bind(subject.to_owned())
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }

    async fn identities_of(&mut self, user: UserId) -> Result<Vec<SsoIdentity>> {
        let q = self
            .q(
                "SELECT * FROM sso_identities WHERE tenant_id = $1 AND user_id = $2 \
                ORDER BY connection_id, subject",
            )
            .bind(user.as_uuid());
        self.tx.fetch_all(q).await?.iter().map(identity).collect()
    }

    async fn consume_assertion(
        &mut self,
        assertion_id: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let purge = self
            .q("DELETE FROM sso_consumed_assertions WHERE tenant_id = $1 AND expires_at < $2")
            .bind(to_millis(now));
        self.tx.execute(purge).await?;
        let q = self
            .q("INSERT INTO sso_consumed_assertions (tenant_id, assertion_id, expires_at, created_at) \
                VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, assertion_id) DO NOTHING")
            .bind(assertion_id.to_owned())
            .bind(to_millis(expires_at))
            .bind(to_millis(now));
        Ok(self.tx.execute(q).await? > 0)
    }
}
