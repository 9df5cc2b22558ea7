//! A tenant's data keys: versions, rotation (new version, re-encryption of the
//! sealed columns in batches, retirement) and re-wrapping under a new master key.

use async_trait::async_trait;
use karen_domain::clock::{from_millis, to_millis};
use karen_domain::ports::{KeyProvider, ResealBatch, ResealCursor, TenantKeyInfo, TenantKeyRepo};
use karen_domain::{Error, Result};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::content::{Slot, version_of};
use crate::encryption::wrap_context;
use crate::tenant::SqlTenantTx;

/// A column holding sealed content, with its batch read and its update.
struct SealedColumn {
    table: &'static str,
    column: &'static str,
    select: &'static str,
    update: &'static str,
}

/// Every column sealed by `content.rs` (the order of re-encryption).
const SEALED_COLUMNS: &[SealedColumn] = &[
    SealedColumn {
        table: "messages",
        column: "content",
        select: "SELECT id, content AS value FROM messages WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        update: "UPDATE messages SET content = $3 WHERE tenant_id = $1 AND id = $2",
    },
    SealedColumn {
        table: "memories",
        column: "content",
        select: "SELECT id, content AS value FROM memories WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        update: "UPDATE memories SET content = $3 WHERE tenant_id = $1 AND id = $2",
    },
    SealedColumn {
        table: "document_chunks",
        column: "content",
        select: "SELECT id, content AS value FROM document_chunks WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        update: "UPDATE document_chunks SET content = $3 WHERE tenant_id = $1 AND id = $2",
    },
    SealedColumn {
        table: "document_chunks",
        column: "heading",
        select: "SELECT id, heading AS value FROM document_chunks WHERE tenant_id = $1 \
                 AND heading IS NOT NULL AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        update: "UPDATE document_chunks SET heading = $3 WHERE tenant_id = $1 AND id = $2",
    },
    SealedColumn {
        table: "tenant_providers",
        column: "api_key",
        select: "SELECT id, api_key AS value FROM tenant_providers WHERE tenant_id = $1 \
                 AND api_key IS NOT NULL AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        update: "UPDATE tenant_providers SET api_key = $3 WHERE tenant_id = $1 AND id = $2",
    },
    SealedColumn {
        table: "mfa_totp",
        column: "secret",
        select: "SELECT user_id AS id, secret AS value FROM mfa_totp WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR user_id > $2) ORDER BY user_id LIMIT $3",
        update: "UPDATE mfa_totp SET secret = $3 WHERE tenant_id = $1 AND user_id = $2",
    },
    SealedColumn {
        table: "sso_connections",
        column: "client_secret",
        select: "SELECT id, client_secret AS value FROM sso_connections WHERE tenant_id = $1 \
                 AND client_secret IS NOT NULL AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        update: "UPDATE sso_connections SET client_secret = $3 WHERE tenant_id = $1 AND id = $2",
    },
    SealedColumn {
        table: "sso_login_states",
        column: "pkce_verifier",
        select: "SELECT id, pkce_verifier AS value FROM sso_login_states WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        update: "UPDATE sso_login_states SET pkce_verifier = $3 WHERE tenant_id = $1 AND id = $2",
    },
];

fn switched_off() -> Error {
    Error::BadRequest(
        "encryption at rest is switched off: configure a master key (encryption.master_key_file or KAREN_MASTER_KEY)"
            .into(),
    )
}

#[async_trait]
impl TenantKeyRepo for SqlTenantTx {
    async fn key_versions(&mut self) -> Result<Vec<TenantKeyInfo>> {
        Ok(self
            .key_rows()
            .await?
            .into_iter()
            .map(|row| TenantKeyInfo {
                version: row.version,
                master_key_id: row.master_key_id,
                created_at: from_millis(row.created_at),
                retired_at: row.retired_at.map(from_millis),
            })
            .collect())
    }

    async fn add_key_version(&mut self, at: OffsetDateTime) -> Result<u32> {
        if self.encryption.is_none() {
            return Err(switched_off());
        }
        let next = self
            .key_rows()
            .await?
            .iter()
            .map(|row| row.version)
            .max()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| Error::internal("key version overflow"))?;
        self.insert_key_version(next, at).await?;
        Ok(next)
    }

    async fn reseal_batch(&mut self, cursor: ResealCursor, limit: u32) -> Result<ResealBatch> {
        let ring = self.sealing_keys().await?;
        let current = ring.current().ok_or_else(switched_off)?;
        let Some(sealed) = SEALED_COLUMNS.get(cursor.column) else {
            return Ok(ResealBatch {
                column: "",
                scanned: 0,
                resealed: 0,
                next: None,
            });
        };
        let q = self
            .q(sealed.select)
            .bind(cursor.after)
            .bind(i64::from(limit.max(1)));
        let rows = self.tx.fetch_all(q).await?;
        let mut resealed = 0;
        let mut last = None;
        for row in &rows {
            let id: Uuid = row.get("id")?;
            let value: Vec<u8> = row.get("value")?;
            last = Some(id);
            if version_of(&value) == Some(current) {
                continue;
            }
            let slot = Slot::new(sealed.table, sealed.column, id);
            let text = ring.open(slot, &value)?;
            let q = self.q(sealed.update).bind(id).bind(ring.seal(slot, &text)?);
            self.tx.execute(q).await?;
            resealed += 1;
        }
        let next = if rows.len() >= limit.max(1) as usize {
            Some(ResealCursor {
                column: cursor.column,
                after: last,
            })
        } else {
            (cursor.column + 1 < SEALED_COLUMNS.len()).then_some(ResealCursor {
                column: cursor.column + 1,
                after: None,
            })
        };
        Ok(ResealBatch {
            column: sealed.table,
            scanned: rows.len() as u64,
            resealed,
            next,
        })
    }

    async fn retire_old_key_versions(&mut self, at: OffsetDateTime) -> Result<u64> {
        let ring = self.keys().await?;
        let Some(current) = ring.current() else {
            return Ok(0);
        };
        let q = self
            .q("UPDATE tenant_keys SET retired_at = $3 \
                WHERE tenant_id = $1 AND version < $2 AND retired_at IS NULL")
            .bind(i32::try_from(current).map_err(|_| Error::internal("key version overflow"))?)
            .bind(to_millis(at));
        let retired = self.tx.execute(q).await?;
        self.ring = None;
        Ok(retired)
    }

    async fn rewrap_keys(&mut self, new_master: &dyn KeyProvider) -> Result<u64> {
        let encryption = self.encryption.clone().ok_or_else(switched_off)?;
        let tenant = self.tenant_id_value();
        let mut rewrapped = 0;
        for row in self.key_rows().await? {
            if row.master_key_id == new_master.key_id() {
                continue;
            }
            // Unwrapped with the configured master (a clear error if it is not the one).
            let key = encryption.unwrap(tenant, &row).await?;
            let wrapped = new_master
                .wrap(&key, &wrap_context(tenant, row.version))
                .await?;
            let q = self
                .q(
                    "UPDATE tenant_keys SET wrapped_key = $3, master_key_id = $4 \
                    WHERE tenant_id = $1 AND version = $2",
                )
                .bind(
                    i32::try_from(row.version)
                        .map_err(|_| Error::internal("key version overflow"))?,
                )
                .bind(wrapped)
                .bind(new_master.key_id().to_owned());
            self.tx.execute(q).await?;
            rewrapped += 1;
        }
        self.ring = None;
        Ok(rewrapped)
    }
}
