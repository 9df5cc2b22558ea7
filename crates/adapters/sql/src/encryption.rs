//! Encryption at rest: the store's [`Encryption`] component (master key
//! provider, value cipher, and a cache of unwrapped data keys) and how a
//! tenant transaction gets its [`KeyRing`] from the `tenant_keys` table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use karen_domain::Clock;
use karen_domain::clock::to_millis;
use karen_domain::ports::{DataCipher, DataKey, KeyProvider};
use karen_domain::{Error, Result, TenantId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::conn::{Query, Row};
use crate::content::KeyRing;
use crate::tenant::{IDS_PER_STATEMENT, SqlTenantTx};

/// A wrapped data key and its clear value, cached by tenant and version.
type CachedKey = (Vec<u8>, Arc<DataKey>);

/// Encrypts tenant content with per-tenant data keys wrapped under a master key.
pub struct Encryption {
    provider: Arc<dyn KeyProvider>,
    /// Earlier master keys, only to unwrap keys not yet re-wrapped (so replicas
    /// can move to a new master before `karen keys rotate-master` runs).
    previous: Vec<Arc<dyn KeyProvider>>,
    cipher: Arc<dyn DataCipher>,
    /// Dates the data keys made at a tenant's first encrypted write.
    clock: Arc<dyn Clock>,
    /// Unwrapped keys; an entry is used only while the stored wrapped bytes
    /// are the same, so a re-wrap or a rolled-back key creation never serves
    /// a stale key.
    cache: Mutex<HashMap<(TenantId, u32), CachedKey>>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryption")
            .field("master_key_id", &self.provider.key_id())
            .finish_non_exhaustive()
    }
}

/// One row of `tenant_keys`.
pub(crate) struct KeyRow {
    pub version: u32,
    pub wrapped: Vec<u8>,
    pub master_key_id: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl Encryption {
    /// Encryption under `provider`'s master key with `cipher` for values.
    pub fn new(
        provider: Arc<dyn KeyProvider>,
        cipher: Arc<dyn DataCipher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            provider,
            previous: Vec::new(),
            cipher,
            clock,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Also unwraps data keys still wrapped under one of `previous` master keys.
    pub fn with_previous(mut self, previous: Vec<Arc<dyn KeyProvider>>) -> Self {
        self.previous = previous;
        self
    }

    /// The configured master key's id.
    pub fn master_key_id(&self) -> &str {
        self.provider.key_id()
    }

    /// Unwraps `row` (from the cache when its wrapped bytes are unchanged).
    pub(crate) async fn unwrap(&self, tenant: TenantId, row: &KeyRow) -> Result<Arc<DataKey>> {
        if let Ok(cache) = self.cache.lock()
            && let Some((wrapped, key)) = cache.get(&(tenant, row.version))
            && *wrapped == row.wrapped
        {
            return Ok(key.clone());
        }
        let provider = std::iter::once(&self.provider)
            .chain(&self.previous)
            .find(|p| p.key_id() == row.master_key_id)
            .ok_or_else(|| Error::Unavailable {
                component: "encryption",
                detail: format!(
                    "data key version {} of tenant {tenant} is wrapped under master key {}, but the configured master key is {}: \
                     configure the master key it was made with (or finish `karen keys rotate-master`)",
                    row.version,
                    row.master_key_id,
                    self.provider.key_id()
                ),
            })?;
        let key = Arc::new(
            provider
                .unwrap(&row.wrapped, &wrap_context(tenant, row.version))
                .await?,
        );
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert((tenant, row.version), (row.wrapped.clone(), key.clone()));
        }
        Ok(key)
    }

    /// Drops the tenant's cached keys (its key rows are being destroyed).
    pub(crate) fn forget(&self, tenant: TenantId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|(cached, _), _| *cached != tenant);
        }
    }
}

/// Binds a wrapped data key to its tenant and version, so a wrapped key
/// copied to another tenant or version does not unwrap.
pub(crate) fn wrap_context(tenant: TenantId, version: u32) -> Vec<u8> {
    let mut context = Vec::with_capacity(48);
    context.extend_from_slice(b"karen tenant data key v1\0");
    context.extend_from_slice(tenant.as_uuid().as_bytes());
    context.extend_from_slice(&version.to_be_bytes());
    context
}

fn version_column(value: i32) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::internal("tenant_keys.version is negative"))
}

impl SqlTenantTx {
    /// The tenant's key rows, oldest first.
    pub(crate) async fn key_rows(&mut self) -> Result<Vec<KeyRow>> {
        let q = self.q(
            "SELECT version, wrapped_key, master_key_id, created_at, retired_at FROM tenant_keys \
             WHERE tenant_id = $1 ORDER BY version",
        );
        self.tx
            .fetch_all(q)
            .await?
            .iter()
            .map(|row| {
                Ok(KeyRow {
                    version: version_column(row.get("version")?)?,
                    wrapped: row.get("wrapped_key")?,
                    master_key_id: row.get("master_key_id")?,
                    created_at: row.get("created_at")?,
                    retired_at: row.get("retired_at")?,
                })
            })
            .collect()
    }

    /// The keys to read this tenant's content with (loaded once per transaction).
    pub(crate) async fn keys(&mut self) -> Result<Arc<KeyRing>> {
        if let Some(ring) = &self.ring {
            return Ok(ring.clone());
        }
        let tenant = self.tenant_id_value();
        let ring = match self.encryption.clone() {
            None => KeyRing::plain(tenant),
            Some(encryption) => {
                let rows = self.key_rows().await?;
                let mut keys = HashMap::new();
                for row in &rows {
                    keys.insert(row.version, encryption.unwrap(tenant, row).await?);
                }
                let current = rows
                    .iter()
                    .filter(|row| row.retired_at.is_none())
                    .map(|row| row.version)
                    .max();
                KeyRing::new(tenant, encryption.cipher.clone(), keys, current)
            }
        };
        let ring = Arc::new(ring);
        self.ring = Some(ring.clone());
        Ok(ring)
    }

    /// The keys to write with: the tenant's first data key is made here, at
    /// its first encrypted write, in the same transaction.
    pub(crate) async fn sealing_keys(&mut self) -> Result<Arc<KeyRing>> {
        let ring = self.keys().await?;
        if !ring.encrypts() || ring.current().is_some() {
            return Ok(ring);
        }
        let now = self
            .encryption
            .as_ref()
            .map_or(OffsetDateTime::UNIX_EPOCH, |e| e.clock.now());
        self.insert_key_version(1, now).await?;
        let ring = self.keys().await?;
        if ring.current().is_none() {
            return Err(Error::internal(
                "the tenant has no current data key (all versions are retired)",
            ));
        }
        Ok(ring)
    }

    /// Generates, wraps and stores data key `version` (a concurrent writer
    /// that made the same version first wins), and forgets the loaded ring.
    pub(crate) async fn insert_key_version(
        &mut self,
        version: u32,
        at: OffsetDateTime,
    ) -> Result<()> {
        let encryption = self.encryption.clone().ok_or_else(|| {
            Error::BadRequest(
                "encryption at rest is switched off: configure a master key first".into(),
            )
        })?;
        let tenant = self.tenant_id_value();
        let key = encryption.cipher.generate_key()?;
        let wrapped = encryption
            .provider
            .wrap(&key, &wrap_context(tenant, version))
            .await?;
        let q = self
            .q("INSERT INTO tenant_keys (tenant_id, version, wrapped_key, master_key_id, created_at) \
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, version) DO NOTHING")
            .bind(i32::try_from(version).map_err(|_| Error::internal("key version overflow"))?)
            .bind(wrapped)
            .bind(encryption.provider.key_id().to_owned())
            .bind(to_millis(at));
        self.tx.execute(q).await?;
        self.ring = None;
        Ok(())
    }
}

/// Decodes one row of sealed content with the tenant's keys.
pub(crate) type Decode<T> = fn(&Row, &KeyRing) -> Result<T>;

impl SqlTenantTx {
    /// Runs `query` and decodes every row with the tenant's keys.
    pub(crate) async fn fetch_all_sealed<T>(
        &mut self,
        query: Query,
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        let keys = self.keys().await?;
        self.tx
            .fetch_all(query)
            .await?
            .iter()
            .map(|row| decode(row, &keys))
            .collect()
    }

    /// The rows of a [`crate::tenant::by_ids!`] statement for `ids`, in
    /// batches of [`IDS_PER_STATEMENT`], decoded with the tenant's keys.
    pub(crate) async fn fetch_all_sealed_by_ids<T>(
        &mut self,
        sql: &'static str,
        ids: &[Uuid],
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        let mut found = Vec::with_capacity(ids.len());
        for batch in ids.chunks(IDS_PER_STATEMENT) {
            let query = self.q_ids(sql, batch);
            found.extend(self.fetch_all_sealed(query, decode).await?);
        }
        Ok(found)
    }

    /// Runs `query` and decodes the row, if any, with the tenant's keys.
    pub(crate) async fn fetch_optional_sealed<T>(
        &mut self,
        query: Query,
        decode: Decode<T>,
    ) -> Result<Option<T>> {
        let keys = self.keys().await?;
        self.tx
            .fetch_optional(query)
            .await?
            .as_ref()
            .map(|row| decode(row, &keys))
            .transpose()
    }
}
