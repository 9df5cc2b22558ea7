//! A user's remaining rows at erasure: one statement per table, in an order
//! the foreign keys accept (the user row last).

use async_trait::async_trait;
use karen_domain::ports::{ErasedRows, ErasureRepo};
use karen_domain::{Result, UserId};

use crate::tenant::SqlTenantTx;

impl SqlTenantTx {
    /// Runs `sql` (tenant `$1`, user `$2`) and returns the rows it touched.
    async fn for_user(&mut self, sql: &'static str, user: UserId) -> Result<u64> {
        let q = self.q(sql).bind(user.as_uuid());
        self.tx.execute(q).await
    }
}

#[async_trait]
impl ErasureRepo for SqlTenantTx {
    async fn erase_user_rows(
        &mut self,
        user: UserId,
        pseudonym: &str,
        content_hashes: &[String],
    ) -> Result<ErasedRows> {
        // Usage stays (it is the tenant's bill) but no longer names the
        // person, their keys or their (deleted) conversations. Aggregates and
        // budgets by user or key are the person's own and go.
        let usage_records_detached = self
            .for_user(
                "UPDATE usage_records SET user_id = NULL, conversation_id = NULL, api_key_id = NULL \
                 WHERE tenant_id = $1 AND (user_id = $2 OR api_key_id IN \
                 (SELECT id FROM api_keys WHERE tenant_id = $1 AND user_id = $2))",
                user,
            )
            .await?;
        let usage_aggregates = self
            .for_user(
                "DELETE FROM usage_aggregates WHERE tenant_id = $1 AND ((scope = 'user' AND subject_id = $2) \
                 OR (scope = 'api_key' AND subject_id IN \
                 (SELECT id FROM api_keys WHERE tenant_id = $1 AND user_id = $2)))",
                user,
            )
            .await?;
        let budgets = self
            .for_user(
                "DELETE FROM budgets WHERE tenant_id = $1 AND ((scope = 'user' AND subject_id = $2) \
                 OR (scope = 'api_key' AND subject_id IN \
                 (SELECT id FROM api_keys WHERE tenant_id = $1 AND user_id = $2)))",
                user,
            )
            .await?;
        self.for_user(
            "DELETE FROM usage_reservations WHERE tenant_id = $1 AND user_id = $2",
            user,
        )
        .await?;
        let api_keys = self
            .for_user(
                "DELETE FROM api_keys WHERE tenant_id = $1 AND user_id = $2",
                user,
            )
            .await?;
        self.for_user(
            "DELETE FROM refresh_tokens WHERE tenant_id = $1 AND user_id = $2",
            user,
        )
        .await?;
        let sessions = self
            .for_user(
                "DELETE FROM sessions WHERE tenant_id = $1 AND user_id = $2",
                user,
            )
            .await?;
        self.for_user(
            "DELETE FROM password_tokens WHERE tenant_id = $1 AND user_id = $2",
            user,
        )
        .await?;
        let mut mfa_rows = 0;
        for sql in [
            "DELETE FROM mfa_challenges WHERE tenant_id = $1 AND user_id = $2",
            "DELETE FROM mfa_recovery_codes WHERE tenant_id = $1 AND user_id = $2",
            "DELETE FROM mfa_totp WHERE tenant_id = $1 AND user_id = $2",
        ] {
            mfa_rows += self.for_user(sql, user).await?;
        }
        let sso_identities = self
            .for_user(
                "DELETE FROM sso_identities WHERE tenant_id = $1 AND user_id = $2",
                user,
            )
            .await?;
        let personas = self
            .for_user(
                "DELETE FROM personas WHERE tenant_id = $1 AND owner_user_id = $2",
                user,
            )
            .await?;
        let documents_detached = self
            .for_user(
                "UPDATE documents SET uploaded_by = NULL WHERE tenant_id = $1 AND uploaded_by = $2",
                user,
            )
            .await?;
        let mut cached_embeddings = 0;
        for hash in content_hashes {
            let q = self
                .q("DELETE FROM embeddings WHERE tenant_id = $1 AND content_hash = $2")
                .bind(hash.clone());
            cached_embeddings += self.tx.execute(q).await?;
        }
        // Holds keep their history; only the person's id leaves it. (An
        // active hold on the user refuses the erasure before this point.)
        let label = format!("user:{user}");
        let q = self
            .q("UPDATE legal_holds SET target_id = NULL \
                WHERE tenant_id = $1 AND scope = 'user' AND target_id = $2")
            .bind(user.as_uuid());
        let mut legal_holds_pseudonymised = self.tx.execute(q).await?;
        for sql in [
            "UPDATE legal_holds SET created_by = $3 WHERE tenant_id = $1 AND created_by = $2",
            "UPDATE legal_holds SET lifted_by = $3 WHERE tenant_id = $1 AND lifted_by = $2",
        ] {
            let q = self.q(sql).bind(label.clone()).bind(pseudonym.to_owned());
            legal_holds_pseudonymised += self.tx.execute(q).await?;
        }
        // Tokens the user issued for others stay usable, no longer naming them.
        let q = self
            .q("UPDATE password_tokens SET created_by = $3 WHERE tenant_id = $1 AND created_by = $2")
            .bind(label.clone())
            .bind(pseudonym.to_owned());
        self.tx.execute(q).await?;
        self.for_user("DELETE FROM users WHERE tenant_id = $1 AND id = $2", user)
            .await?;
        Ok(ErasedRows {
            api_keys,
            sessions,
            mfa_rows,
            sso_identities,
            personas,
            budgets,
            usage_records_detached,
            usage_aggregates,
            documents_detached,
            cached_embeddings,
            legal_holds_pseudonymised,
        })
    }
}
