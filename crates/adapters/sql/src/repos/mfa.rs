//! Second factors: TOTP authenticators (secret sealed with the tenant's data
//! key, see `content.rs`),
//! recovery-code digests and pending login steps.

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::credentials::SecretHash;
use karen_domain::mfa::{ChallengePurpose, MfaChallengeRecord, TotpRecord, TotpState};
use karen_domain::ports::MfaRepo;
use karen_domain::{MfaChallengeId, Result, TenantId, UserId};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::conn::Row;
use crate::content::{KeyRing, Slot};
use crate::rows;
use crate::tenant::SqlTenantTx;

fn totp(row: &Row, keys: &KeyRing) -> Result<TotpRecord> {
    let tenant_id = TenantId::from_uuid(row.get("tenant_id")?);
    let user_id: uuid::Uuid = row.get("user_id")?;
    let secret = keys.open(
        Slot::new("mfa_totp", "secret", user_id),
        &row.get::<Vec<u8>>("secret")?,
    )?;
    Ok(TotpRecord {
        tenant_id,
        user_id: UserId::from_uuid(user_id),
        secret: SecretString::from(secret),
        state: TotpState::parse(&row.get::<String>("state")?)?,
        last_used_step: row.get("last_used_step")?,
        created_at: rows::time(row, "created_at")?,
        activated_at: rows::opt_time(row, "activated_at")?,
    })
}

fn challenge(row: &Row) -> Result<MfaChallengeRecord> {
    Ok(MfaChallengeRecord {
        id: MfaChallengeId::from_uuid(row.get("id")?),
        tenant_id: TenantId::from_uuid(row.get("tenant_id")?),
        user_id: UserId::from_uuid(row.get("user_id")?),
        secret_hash: rows::hash(row, "secret_hash")?,
        purpose: ChallengePurpose::parse(&row.get::<String>("purpose")?)?,
        expires_at: rows::time(row, "expires_at")?,
        used_at: rows::opt_time(row, "used_at")?,
        created_at: rows::time(row, "created_at")?,
    })
}

#[async_trait]
impl MfaRepo for SqlTenantTx {
    async fn totp(&mut self, user: UserId) -> Result<Option<TotpRecord>> {
        let q = self
            .q("SELECT * FROM mfa_totp WHERE tenant_id = $1 AND user_id = $2")
            .bind(user.as_uuid());
        self.fetch_optional_sealed(q, totp).await
    }

    async fn active_totp_users(&mut self) -> Result<Vec<UserId>> {
        let q = self.q("SELECT user_id FROM mfa_totp WHERE tenant_id = $1 AND state = 'active'");
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(|row| Ok(UserId::from_uuid(row.get("user_id")?)))
            .collect()
    }

    async fn put_pending_totp(&mut self, t: &TotpRecord) -> Result<bool> {
        let keys = self.sealing_keys().await?;
        let sealed = keys.seal(
            Slot::new("mfa_totp", "secret", t.user_id.as_uuid()),
            t.secret.expose_secret(),
        )?;
        let q = self
            .q("INSERT INTO mfa_totp (tenant_id, user_id, secret, state, last_used_step, created_at, activated_at) \
                VALUES ($1, $2, $3, 'pending', NULL, $4, NULL) \
                ON CONFLICT (tenant_id, user_id) DO UPDATE SET secret = excluded.secret, \
                created_at = excluded.created_at WHERE mfa_totp.state = 'pending'")
            .bind(t.user_id.as_uuid())
            .bind(sealed)
            .bind(to_millis(t.created_at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn activate_totp(&mut self, user: UserId, step: i64, at: OffsetDateTime) -> Result<bool> {
        let q = self
            .q(
                "UPDATE mfa_totp SET state = 'active', last_used_step = $3, activated_at = $4 \
                WHERE tenant_id = $1 AND user_id = $2 AND state = 'pending'",
            )
            .bind(user.as_uuid())
            .bind(step)
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn use_totp_step(&mut self, user: UserId, step: i64) -> Result<bool> {
        let q = self
            .q(
                "UPDATE mfa_totp SET last_used_step = $3 WHERE tenant_id = $1 AND user_id = $2 \
                AND state = 'active' AND (last_used_step IS NULL OR last_used_step < $3)",
            )
            .bind(user.as_uuid())
            .bind(step);
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn delete_mfa(&mut self, user: UserId) -> Result<bool> {
        for sql in [
            "DELETE FROM mfa_challenges WHERE tenant_id = $1 AND user_id = $2",
            "DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2",
        ] {
            self.tx.execute(self.q(sql).bind(user.as_uuid())).await?;
        }
        let q = self
            .q("DELETE FROM mfa_totp WHERE tenant_id = $1 AND user_id = $2")
            .bind(user.as_uuid());
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn replace_recovery_codes(
        &mut self,
        user: UserId,
        codes: &[SecretHash],
        at: OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q("DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2")
            .bind(user.as_uuid());
        self.tx.execute(q).await?;
        for code in codes {
            let q = self
                .q("INSERT INTO mfa_recovery_codes (tenant_id, user_id, code_hash, used_at, created_at) \
                    VALUES ($1, $2, $3, NULL, $4)")
                .bind(user.as_uuid())
                .bind(code.0.to_vec())
                .bind(to_millis(at));
            self.tx.execute(q).await?;
        }
        Ok(())
    }

    async fn use_recovery_code(
        &mut self,
        user: UserId,
        code: &SecretHash,
        at: OffsetDateTime,
    ) -> Result<bool> {
        let q = self
            .q(
                "UPDATE mfa_recovery_codes SET used_at = $4 WHERE tenant_id = $1 AND user_id = $2 \
                AND code_hash = $3 AND used_at IS NULL",
            )
            .bind(user.as_uuid())
            .bind(code.0.to_vec())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }

    async fn recovery_codes_left(&mut self, user: UserId) -> Result<i64> {
        let q = self
            .q("SELECT count(*) AS n FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2 \
                AND used_at IS NULL")
            .bind(user.as_uuid());
        self.tx.fetch_one(q).await?.get("n")
    }

    async fn insert_challenge(&mut self, c: &MfaChallengeRecord) -> Result<()> {
        let q = self
            .q("INSERT INTO mfa_challenges (tenant_id, id, user_id, secret_hash, purpose, expires_at, used_at, \
                created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(c.id.as_uuid())
            .bind(c.user_id.as_uuid())
            .bind(c.secret_hash.0.to_vec())
            .bind(c.purpose.as_str())
            .bind(to_millis(c.expires_at))
            .bind(c.used_at.map(to_millis))
            .bind(to_millis(c.created_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn challenge(&mut self, id: MfaChallengeId) -> Result<Option<MfaChallengeRecord>> {
        let q = self
            .q("SELECT * FROM mfa_challenges WHERE tenant_id = $1 AND id = $2")
            .bind(id.as_uuid());
        self.tx
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(challenge)
            .transpose()
    }

    async fn spend_challenge(&mut self, id: MfaChallengeId, at: OffsetDateTime) -> Result<bool> {
        let q = self
            .q("UPDATE mfa_challenges SET used_at = $3 WHERE tenant_id = $1 AND id = $2 AND used_at IS NULL")
            .bind(id.as_uuid())
            .bind(to_millis(at));
        Ok(self.tx.execute(q).await? > 0)
    }
}
