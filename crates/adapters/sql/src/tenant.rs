//! A transaction bound to one tenant. Every statement it builds binds the
//! tenant id as `$1`, and every tenant statement filters on `tenant_id = $1`;
//! on PostgreSQL row-level security enforces the same boundary again.

use std::sync::Arc;

use async_trait::async_trait;
use karen_domain::clock::to_millis;
use karen_domain::ports::{
    ApiKeyRepo, AuditRepo, BudgetRepo, ConversationRepo, DocumentRepo, EmbeddingJobRepo,
    EmbeddingRepo, MemoryRepo, PasswordTokenRepo, PersonaRepo, ProviderRepo, PurgeReport,
    RetentionRepo, RoleRepo, SessionRepo, TenantKeyRepo, TenantTx, UsageRepo, UserRepo,
};
use karen_domain::tenant::{Tenant, TenantSettings};
use karen_domain::values::TenantName;
use karen_domain::{Error, Result, TenantId};
use sqlx::types::Json;
use time::OffsetDateTime;

use crate::conn::{Query, Tx};
use crate::content::KeyRing;
use crate::encryption::Encryption;
use crate::rows;
use crate::schema::TENANT_TABLES;

pub(crate) struct SqlTenantTx {
    pub(crate) tx: Tx,
    tenant: TenantId,
    /// The store's encryption (`None`: content is written plain).
    pub(crate) encryption: Option<Arc<Encryption>>,
    /// The tenant's keys, loaded at the first sealed read or write.
    pub(crate) ring: Option<Arc<KeyRing>>,
    /// The audit chain's head after this transaction's appends, written to
    /// `audit_heads` at commit (see `repos/audit.rs`).
    pub(crate) audit_head: Option<(i64, karen_domain::audit::ChainHash)>,
    /// Events appended in this transaction and not inserted yet (see
    /// `repos/audit.rs`); dropped with the transaction on rollback.
    pub(crate) audit_pending: Vec<karen_domain::audit::AuditEvent>,
    /// The seed of this transaction's per-event salts (memory only).
    pub(crate) audit_salts: Option<karen_domain::audit::personal::SaltSeed>,
}

impl SqlTenantTx {
    pub(crate) fn new(tx: Tx, tenant: TenantId, encryption: Option<Arc<Encryption>>) -> Self {
        Self {
            tx,
            tenant,
            encryption,
            ring: None,
            audit_head: None,
            audit_pending: Vec::new(),
            audit_salts: None,
        }
    }

    /// The tenant of this transaction.
    pub(crate) fn tenant_id_value(&self) -> TenantId {
        self.tenant
    }

    /// Starts a statement with this transaction's tenant bound as `$1`.
    pub(crate) fn q(&self, sql: &'static str) -> Query {
        self.tx.query(sql).bind(self.tenant.as_uuid())
    }

    /// A statement of [`by_ids!`] with the tenant as `$1` and one batch of at
    /// most [`IDS_PER_STATEMENT`] ids (not empty) as `$2`…`$17`; a shorter
    /// batch repeats its last id, which `IN` ignores.
    pub(crate) fn q_ids(&self, sql: &'static str, ids: &[uuid::Uuid]) -> Query {
        let last = ids.last().copied().unwrap_or_default();
        ids.iter()
            .copied()
            .chain(std::iter::repeat(last))
            .take(IDS_PER_STATEMENT)
            .fold(self.q(sql), Query::bind)
    }
}

/// Ids per statement of a lookup by many ids: the statement stays static
/// text, and a recall's candidates load in one or two round trips instead of
/// one per row.
pub(crate) const IDS_PER_STATEMENT: usize = 16;

/// `SELECT * FROM <table> WHERE tenant_id = $1 AND id IN ($2, …, $17)`, for
/// [`SqlTenantTx::q_ids`].
macro_rules! by_ids {
    ($table:literal) => {
        concat!(
            "SELECT * FROM ",
            $table,
            " WHERE tenant_id = $1 AND id IN \
            ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        )
    };
}
pub(crate) use by_ids;

/// `DELETE FROM <table> WHERE tenant_id = $1` for each tenant table, as static
/// text (table names come from the fixed list, never from input).
fn purge_statement(table: &str) -> Option<&'static str> {
    Some(match table {
        "legal_holds" => "DELETE FROM legal_holds WHERE tenant_id = $1",
        "retention_runs" => "DELETE FROM retention_runs WHERE tenant_id = $1",
        "retention_policies" => "DELETE FROM retention_policies WHERE tenant_id = $1",
        "embedding_jobs" => "DELETE FROM embedding_jobs WHERE tenant_id = $1",
        "embeddings" => "DELETE FROM embeddings WHERE tenant_id = $1",
        "document_chunks" => "DELETE FROM document_chunks WHERE tenant_id = $1",
        "documents" => "DELETE FROM documents WHERE tenant_id = $1",
        "memories" => "DELETE FROM memories WHERE tenant_id = $1",
        "scim_role_grants" => "DELETE FROM scim_role_grants WHERE tenant_id = $1",
        "scim_group_members" => "DELETE FROM scim_group_members WHERE tenant_id = $1",
        "scim_groups" => "DELETE FROM scim_groups WHERE tenant_id = $1",
        "scim_users" => "DELETE FROM scim_users WHERE tenant_id = $1",
        "sso_consumed_assertions" => "DELETE FROM sso_consumed_assertions WHERE tenant_id = $1",
        "sso_identities" => "DELETE FROM sso_identities WHERE tenant_id = $1",
        "sso_login_states" => "DELETE FROM sso_login_states WHERE tenant_id = $1",
        "sso_connections" => "DELETE FROM sso_connections WHERE tenant_id = $1",
        "password_tokens" => "DELETE FROM password_tokens WHERE tenant_id = $1",
        "mfa_challenges" => "DELETE FROM mfa_challenges WHERE tenant_id = $1",
        "mfa_recovery_codes" => "DELETE FROM mfa_recovery_codes WHERE tenant_id = $1",
        "mfa_totp" => "DELETE FROM mfa_totp WHERE tenant_id = $1",
        "refresh_tokens" => "DELETE FROM refresh_tokens WHERE tenant_id = $1",
        "sessions" => "DELETE FROM sessions WHERE tenant_id = $1",
        "api_keys" => "DELETE FROM api_keys WHERE tenant_id = $1",
        "messages" => "DELETE FROM messages WHERE tenant_id = $1",
        "conversations" => "DELETE FROM conversations WHERE tenant_id = $1",
        "personas" => "DELETE FROM personas WHERE tenant_id = $1",
        "usage_records" => "DELETE FROM usage_records WHERE tenant_id = $1",
        "usage_reservations" => "DELETE FROM usage_reservations WHERE tenant_id = $1",
        "usage_aggregates" => "DELETE FROM usage_aggregates WHERE tenant_id = $1",
        "budgets" => "DELETE FROM budgets WHERE tenant_id = $1",
        "tenant_providers" => "DELETE FROM tenant_providers WHERE tenant_id = $1",
        "model_aliases" => "DELETE FROM model_aliases WHERE tenant_id = $1",
        "user_roles" => "DELETE FROM user_roles WHERE tenant_id = $1",
        "users" => "DELETE FROM users WHERE tenant_id = $1",
        "custom_roles" => "DELETE FROM custom_roles WHERE tenant_id = $1",
        "tenant_keys" => "DELETE FROM tenant_keys WHERE tenant_id = $1",
        _ => return None,
    })
}

#[async_trait]
impl TenantTx for SqlTenantTx {
    fn tenant_id(&self) -> TenantId {
        self.tenant
    }

    fn users(&mut self) -> &mut dyn UserRepo {
        self
    }

    fn roles(&mut self) -> &mut dyn RoleRepo {
        self
    }

    fn api_keys(&mut self) -> &mut dyn ApiKeyRepo {
        self
    }

    fn sessions(&mut self) -> &mut dyn SessionRepo {
        self
    }

    fn password_tokens(&mut self) -> &mut dyn PasswordTokenRepo {
        self
    }

    fn conversations(&mut self) -> &mut dyn ConversationRepo {
        self
    }

    fn personas(&mut self) -> &mut dyn PersonaRepo {
        self
    }

    fn usage(&mut self) -> &mut dyn UsageRepo {
        self
    }

    fn budgets(&mut self) -> &mut dyn BudgetRepo {
        self
    }

    fn providers(&mut self) -> &mut dyn ProviderRepo {
        self
    }

    fn memories(&mut self) -> &mut dyn MemoryRepo {
        self
    }

    fn documents(&mut self) -> &mut dyn DocumentRepo {
        self
    }

    fn embeddings(&mut self) -> &mut dyn EmbeddingRepo {
        self
    }

    fn embedding_jobs(&mut self) -> &mut dyn EmbeddingJobRepo {
        self
    }

    fn audit(&mut self) -> &mut dyn AuditRepo {
        self
    }

    fn retention(&mut self) -> &mut dyn RetentionRepo {
        self
    }

    fn mfa(&mut self) -> &mut dyn karen_domain::ports::MfaRepo {
        self
    }

    fn erasure(&mut self) -> &mut dyn karen_domain::ports::ErasureRepo {
        self
    }

    fn scim(&mut self) -> &mut dyn karen_domain::ports::ScimRepo {
        self
    }

    fn sso(&mut self) -> &mut dyn karen_domain::ports::SsoRepo {
        self
    }

    fn tenant_keys(&mut self) -> &mut dyn TenantKeyRepo {
        self
    }

    async fn tenant(&mut self) -> Result<Tenant> {
        let q = self.q("SELECT * FROM tenants WHERE id = $1");
        let row = self
            .tx
            .fetch_optional(q)
            .await?
            .ok_or(Error::NotFound("tenant"))?;
        rows::tenant(&row)
    }

    async fn update_tenant_profile(
        &mut self,
        name: &TenantName,
        settings: &TenantSettings,
        at: OffsetDateTime,
    ) -> Result<()> {
        let q = self
            .q("UPDATE tenants SET name = $2, settings = $3, updated_at = $4 WHERE id = $1")
            .bind(name.as_str())
            .bind(Json(settings))
            .bind(to_millis(at));
        self.tx.execute(q).await.map(drop)
    }

    async fn update_tenant_registry(&mut self, tenant: &Tenant) -> Result<()> {
        let q = self
            .q("UPDATE tenants SET name = $2, plan = $3, status = $4, updated_at = $5 WHERE id = $1")
            .bind(tenant.name.as_str())
            .bind(tenant.plan.as_str())
            .bind(tenant.status.as_str())
            .bind(to_millis(tenant.updated_at));
        self.tx.execute(q).await.map(drop)
    }

    async fn purge(&mut self) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        for table in TENANT_TABLES {
            let deleted = if table.starts_with("audit_") {
                self.purge_audit(table).await?
            } else {
                let sql = purge_statement(table).ok_or_else(|| {
                    Error::internal(format!("no purge statement for tenant table {table}"))
                })?;
                self.tx.execute(self.q(sql)).await?
            };
            report.rows_by_table.push((table, deleted));
        }
        // Crypto-shredding: the key rows are gone with the rest; so is any
        // clear copy of them in memory.
        if let Some(encryption) = &self.encryption {
            encryption.forget(self.tenant);
        }
        self.ring = None;
        Ok(report)
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.flush_audit_head().await?;
        self.tx.commit().await
    }
}
