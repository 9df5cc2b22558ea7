//! The scale-out vector index: Milvus, shared by every Karen replica.
//!
//! **Isolation: one collection per vector space, the tenant as partition key**
//! (not a collection per tenant). Milvus caps collections per cluster (65,536
//! by default) and each costs memory and coordination, so per-tenant
//! collections would limit the platform to a few thousand tenants × spaces and
//! make creating a tenant a schema change. With `tenant_id` as partition key
//! Milvus hashes each tenant into one of a fixed set of partitions and prunes
//! to it when an expression names the tenant. The boundary itself is that
//! every expression over tenant data is built by `expr`, which always starts
//! with `tenant_id == "<uuid>"`; every primary key embeds the tenant; and every
//! search hit is checked again against the tenant and the access filter
//! before it is returned.
//!
//! A small registry collection (`<prefix>_spaces`) records which spaces each
//! tenant has written to, so `spaces`, `remove` and `purge_tenant` reach every
//! collection holding the tenant's rows without listing collections.
//!
//! Reads use Strong consistency: with several replicas, a memory written
//! through one must be found by the next request, whichever replica serves it.

mod expr;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use karen_domain::ports::{
    EntryAccess, EntryKey, EntryKind, Hit, IndexStatus, SearchFilter, VectorEntry, VectorIndex,
    VectorSpace,
};
use karen_domain::{Error, Result, RoleName, TenantId, UserId};
use milvus::v2::prelude::*;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use self::expr::{DOCUMENT, ENTRY, KIND, OWNER, PK, RESTRICTED, ROLES, TENANT, VECTOR};
use crate::common::{check_space, space_digest, unit_vector};

/// Milvus's largest `limit` for a search or query page.
const MAX_TOP_K: usize = 16_384;
/// Roles one entry may be restricted to (the array field's capacity).
const MAX_ROLES: usize = 256;
/// Keys per delete expression.
const DELETE_BATCH: usize = 1_000;
/// Bytes of vectors per upsert request (well under gRPC's message limit).
const UPSERT_BATCH_BYTES: usize = 8 << 20;

/// How to reach Milvus.
#[derive(Debug, Clone)]
pub struct MilvusConfig {
    /// gRPC endpoint, e.g. `http://127.0.0.1:19530`.
    pub url: String,
    /// `user:password` or an API key; none for a server without authentication.
    pub token: Option<SecretString>,
    /// The Milvus database; `None` for the server's default.
    pub database: Option<String>,
    /// Prefix of Karen's collection names (letters, digits, `_`; starts with a
    /// letter), so several deployments can share one Milvus.
    pub collection_prefix: String,
    /// Partitions of a new collection; tenants are hashed over them.
    pub num_partitions: u32,
    /// Deadline of one call.
    pub timeout: Duration,
}

impl MilvusConfig {
    /// Defaults for a server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            database: None,
            collection_prefix: "karen".to_owned(),
            num_partitions: 64,
            timeout: Duration::from_secs(10),
        }
    }
}

fn unavailable(detail: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        component: "milvus",
        detail: detail.to_string(),
    }
}

/// The Milvus [`VectorIndex`].
pub struct MilvusVectorIndex {
    client: ClientV2,
    prefix: String,
    num_partitions: u32,
    /// Collections known to exist and to be loaded.
    ready: Mutex<HashSet<String>>,
}

impl MilvusVectorIndex {
    /// Connects (client telemetry off) and checks that the server answers.
    pub async fn connect(config: MilvusConfig) -> Result<Self> {
        let prefix = config.collection_prefix.clone();
        let valid_prefix = prefix.len() <= 64
            && prefix
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_prefix {
            return Err(Error::invalid(
                Some("collection_prefix"),
                "Milvus collection prefix must be 1-64 letters, digits or '_', starting with a letter",
            ));
        }
        let mut connect = ConnectConfig::new()
            .uri(config.url.clone())
            .connect_timeout(config.timeout)
            .rpc_timeout(config.timeout)
            .telemetry(TelemetryConfig::new().enabled(false));
        if let Some(token) = &config.token {
            connect = connect.token(token.expose_secret());
        }
        if let Some(database) = &config.database {
            connect = connect.database(database.clone());
        }
        let client = ClientV2::new(&connect)
            .await
            .map_err(|e| unavailable(format!("cannot connect to {}: {e}", config.url)))?;
        let index = Self {
            client,
            prefix,
            num_partitions: config.num_partitions.clamp(1, 1024),
            ready: Mutex::default(),
        };
        // A round trip now, so a wrong URL fails at start-up, not at first use.
        index.collection_exists(&index.registry_name()).await?;
        Ok(index)
    }

    fn registry_name(&self) -> String {
        format!("{}_spaces", self.prefix)
    }

    /// One collection per space (model and dims), named by their digest.
    fn collection_name(&self, space: &VectorSpace) -> String {
        format!("{}_space_{}", self.prefix, space_digest(space))
    }

    async fn collection_exists(&self, name: &str) -> Result<bool> {
        if self.ready.lock().contains(name) {
            return Ok(true);
        }
        let request = HasCollectionRequest::builder()
            .collection_name(name)
            .build()
            .map_err(unavailable)?;
        let response = self
            .client
            .has_collection(request)
            .await
            .map_err(unavailable)?;
        if response.exists() {
            // Loading is idempotent; a collection created by another replica
            // may not be loaded yet.
            self.load(name).await?;
            self.ready.lock().insert(name.to_owned());
        }
        Ok(response.exists())
    }

    async fn load(&self, name: &str) -> Result<()> {
        let request = LoadCollectionRequest::builder()
            .collection_name(name)
            .sync(true)
            .build()
            .map_err(unavailable)?;
        self.client
            .load_collection(request)
            .await
            .map_err(unavailable)
    }

    /// Creates a collection unless it exists, with its vector index (built in
    /// the background: `sync(false)`), and loads it.
    async fn ensure_collection(&self, name: &str, schema: CollectionSchema) -> Result<()> {
        if self.collection_exists(name).await? {
            return Ok(());
        }
        let request = CreateCollectionRequest::builder()
            .collection_name(name)
            .schema(schema)
            .num_partitions(i64::from(self.num_partitions))
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(unavailable)?;
        let created = self.client.create_collection(request).await;
        if let Err(error) = created {
            // Another replica may have created it first.
            let request = HasCollectionRequest::builder()
                .collection_name(name)
                .build()
                .map_err(unavailable)?;
            let exists = self
                .client
                .has_collection(request)
                .await
                .map_err(unavailable)?;
            if !exists.exists() {
                return Err(unavailable(format!(
                    "cannot create collection {name}: {error}"
                )));
            }
        }
        let index = CreateIndexRequest::builder()
            .collection_name(name)
            .index_param(
                IndexParam::new()
                    .field_name(VECTOR)
                    .index_type(IndexType::AutoIndex)
                    .metric_type(MetricType::Ip),
            )
            .sync(false)
            .build()
            .map_err(unavailable)?;
        if let Err(error) = self.client.create_index(index).await {
            // Already indexed by a concurrent creator is fine; anything else shows at load.
            tracing::debug!(collection = name, %error, "create index");
        }
        self.load(name).await?;
        self.ready.lock().insert(name.to_owned());
        Ok(())
    }

    fn space_schema(space: &VectorSpace) -> CollectionSchema {
        let varchar = |name: &str, len: u32| {
            FieldSchema::new()
                .name(name)
                .data_type(DataType::VarChar)
                .max_length(len)
        };
        CollectionSchema::new()
            .add_field(varchar(PK, 128).primary_key(true))
            .add_field(varchar(TENANT, 36).partition_key(true))
            .add_field(varchar(KIND, 16))
            .add_field(varchar(ENTRY, 36))
            .add_field(varchar(OWNER, 36))
            .add_field(
                FieldSchema::new()
                    .name(RESTRICTED)
                    .data_type(DataType::Bool),
            )
            .add_field(
                FieldSchema::new()
                    .name(ROLES)
                    .data_type(DataType::Array)
                    .element_type(DataType::VarChar)
                    .max_capacity(MAX_ROLES as u32)
                    .max_length(64),
            )
            .add_field(varchar(DOCUMENT, 36))
            .add_field(
                FieldSchema::new()
                    .name(VECTOR)
                    .data_type(DataType::FloatVector)
                    .dimension(space.dims),
            )
    }

    fn registry_schema() -> CollectionSchema {
        let varchar = |name: &str, len: u32| {
            FieldSchema::new()
                .name(name)
                .data_type(DataType::VarChar)
                .max_length(len)
        };
        CollectionSchema::new()
            .add_field(varchar(PK, 128).primary_key(true))
            .add_field(varchar(TENANT, 36))
            .add_field(varchar("model", 1024))
            .add_field(FieldSchema::new().name("dims").data_type(DataType::Int64))
            // Milvus requires a vector field in every collection.
            .add_field(
                FieldSchema::new()
                    .name(VECTOR)
                    .data_type(DataType::FloatVector)
                    .dimension(2),
            )
    }

    /// Records that the tenant has rows in the space. Written on every upsert
    /// (it is idempotent): another replica may have dropped the record.
    async fn register(&self, tenant: TenantId, space: &VectorSpace) -> Result<()> {
        let registry = self.registry_name();
        self.ensure_collection(&registry, Self::registry_schema())
            .await?;
        let dims = i64::from(space.dims);
        let insert = InsertRequest::builder()
            .collection_name(&registry)
            .columns(vec![
                FieldData::varchar(PK, vec![format!("{tenant}:{}", space_digest(space))]),
                FieldData::varchar(TENANT, vec![tenant.to_string()]),
                FieldData::varchar("model", vec![space.model.clone()]),
                FieldData::int64("dims", vec![dims]),
                FieldData::float_vector(VECTOR, vec![vec![1.0, 0.0]]),
            ])
            .build()
            .map_err(unavailable)?;
        let request = UpsertRequest::builder()
            .insert(insert)
            .build()
            .map_err(unavailable)?;
        self.client.upsert(request).await.map_err(unavailable)?;
        Ok(())
    }

    async fn delete(&self, collection: &str, filter: String) -> Result<()> {
        let request = DeleteRequest::builder()
            .collection_name(collection)
            .filter(filter)
            .build()
            .map_err(unavailable)?;
        self.client.delete(request).await.map_err(unavailable)?;
        Ok(())
    }

    /// Deletes every row of `tenant` in `collection`, a page of keys at a
    /// time. A delete by filter answers with every primary key it removed,
    /// which for a tenant of some 50,000 entries is more than gRPC's 4 MiB
    /// message limit: the delete happens but the call fails.
    async fn delete_tenant_rows(&self, collection: &str, tenant: TenantId) -> Result<()> {
        loop {
            let mut keys = Vec::new();
            let count = self
                .query_rows(collection, expr::tenant(tenant), &[KIND, ENTRY], |row| {
                    keys.push(decode_key(row)?);
                    Ok(())
                })
                .await?;
            for chunk in keys.chunks(DELETE_BATCH) {
                self.delete(collection, expr::tenant_keys(tenant, chunk))
                    .await?;
            }
            // Strong consistency: the next page no longer holds these rows.
            if count < MAX_TOP_K {
                return Ok(());
            }
        }
    }

    /// Up to `MAX_TOP_K` rows matching `filter`; returns how many came.
    /// (Not the SDK's query iterator: it needs collection ids that Milvus Lite
    /// does not report.)
    async fn query_rows(
        &self,
        collection: &str,
        filter: String,
        fields: &[&str],
        mut each: impl FnMut(&ResultRow<'_>) -> Result<()>,
    ) -> Result<usize> {
        let request = QueryRequest::builder()
            .collection_name(collection)
            .filter(filter)
            .output_fields(fields.iter().copied())
            .limit(MAX_TOP_K as i64)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(unavailable)?;
        let response = self.client.query(request).await.map_err(unavailable)?;
        let mut count = 0;
        for row in response.results().rows().map_err(unavailable)? {
            count += 1;
            each(&row)?;
        }
        Ok(count)
    }

    async fn upsert_batch(
        &self,
        collection: &str,
        tenant: TenantId,
        rows: Vec<(EntryKey, EntryAccess, Vec<f32>)>,
    ) -> Result<()> {
        let n = rows.len();
        let mut pk = Vec::with_capacity(n);
        let mut tenant_ids = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut entries = Vec::with_capacity(n);
        let mut owners = Vec::with_capacity(n);
        let mut restricted = Vec::with_capacity(n);
        let mut roles = Vec::with_capacity(n);
        let mut documents = Vec::with_capacity(n);
        let mut vectors = Vec::with_capacity(n);
        for (key, access, vector) in rows {
            pk.push(expr::primary_key(tenant, &key));
            tenant_ids.push(tenant.to_string());
            kinds.push(key.kind.as_str().to_owned());
            entries.push(key.id.hyphenated().to_string());
            owners.push(access.owner.map(|u| u.to_string()).unwrap_or_default());
            restricted.push(!access.roles.is_empty());
            roles.push(access.roles.iter().map(|r| r.as_str().to_owned()).collect());
            documents.push(
                access
                    .document
                    .map(|d| d.hyphenated().to_string())
                    .unwrap_or_default(),
            );
            vectors.push(vector);
        }
        let insert = InsertRequest::builder()
            .collection_name(collection)
            .columns(vec![
                FieldData::varchar(PK, pk),
                FieldData::varchar(TENANT, tenant_ids),
                FieldData::varchar(KIND, kinds),
                FieldData::varchar(ENTRY, entries),
                FieldData::varchar(OWNER, owners),
                FieldData::boolean(RESTRICTED, restricted),
                FieldData::array_varchar(ROLES, roles),
                FieldData::varchar(DOCUMENT, documents),
                FieldData::float_vector(VECTOR, vectors),
            ])
            .build()
            .map_err(unavailable)?;
        let request = UpsertRequest::builder()
            .insert(insert)
            .build()
            .map_err(unavailable)?;
        self.client.upsert(request).await.map_err(|e| {
            self.ready.lock().remove(collection);
            unavailable(e)
        })?;
        Ok(())
    }
}

/// Reads an entry (its key and access) back from a result row.
fn decode_row(row: &ResultRow<'_>) -> Result<(String, EntryKey, EntryAccess)> {
    let bad = |what: &str| Error::internal(format!("milvus returned a malformed {what}"));
    let tenant = row.get_str(TENANT).map_err(|_| bad("tenant"))?.to_owned();
    let kind = EntryKind::parse(row.get_str(KIND).map_err(|_| bad("kind"))?)?;
    let id = Uuid::try_parse(row.get_str(ENTRY).map_err(|_| bad("entry id"))?)
        .map_err(|_| bad("entry id"))?;
    let owner = match row.get_str(OWNER).map_err(|_| bad("owner"))? {
        "" => None,
        text => Some(UserId::from_uuid(
            Uuid::try_parse(text).map_err(|_| bad("owner"))?,
        )),
    };
    let roles = row
        .get_array_varchar(ROLES)
        .map_err(|_| bad("roles"))?
        .iter()
        .map(|r| RoleName::parse(r))
        .collect::<Result<Vec<_>>>()?;
    let restricted = row
        .get_bool(RESTRICTED)
        .map_err(|_| bad("restricted flag"))?;
    if restricted == roles.is_empty() {
        return Err(bad("restriction"));
    }
    Ok((
        tenant,
        EntryKey::new(kind, id),
        EntryAccess {
            owner,
            roles,
            document: None,
        },
    ))
}

fn decode_key(row: &ResultRow<'_>) -> Result<EntryKey> {
    let bad = |what: &str| Error::internal(format!("milvus returned a malformed {what}"));
    let kind = EntryKind::parse(row.get_str(KIND).map_err(|_| bad("kind"))?)?;
    let id = Uuid::try_parse(row.get_str(ENTRY).map_err(|_| bad("entry id"))?)
        .map_err(|_| bad("entry id"))?;
    Ok(EntryKey::new(kind, id))
}

#[async_trait]
impl VectorIndex for MilvusVectorIndex {
    fn name(&self) -> &str {
        "milvus"
    }

    async fn upsert(
        &self,
        tenant: TenantId,
        space: &VectorSpace,
        entries: Vec<VectorEntry>,
    ) -> Result<()> {
        check_space(space)?;
        if entries.is_empty() {
            return Ok(());
        }
        let owned_space = space.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            entries
                .into_iter()
                .map(|e| {
                    if e.access.roles.len() > MAX_ROLES {
                        return Err(Error::invalid(
                            Some("roles"),
                            format!("an entry may be restricted to at most {MAX_ROLES} roles"),
                        ));
                    }
                    Ok((e.key, e.access, unit_vector(&owned_space, &e.vector)?))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::internal(format!("vector preparation failed: {e}")))??;
        let collection = self.collection_name(space);
        self.ensure_collection(&collection, Self::space_schema(space))
            .await?;
        self.register(tenant, space).await?;
        let per_batch = (UPSERT_BATCH_BYTES / (space.dims as usize * 4)).clamp(1, 4096);
        let mut rows = prepared.into_iter().peekable();
        while rows.peek().is_some() {
            let batch: Vec<_> = rows.by_ref().take(per_batch).collect();
            self.upsert_batch(&collection, tenant, batch).await?;
        }
        Ok(())
    }

    async fn remove(&self, tenant: TenantId, keys: &[EntryKey]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        for space in self.spaces(tenant).await? {
            let collection = self.collection_name(&space);
            if !self.collection_exists(&collection).await? {
                continue;
            }
            for chunk in keys.chunks(DELETE_BATCH) {
                self.delete(&collection, expr::tenant_keys(tenant, chunk))
                    .await?;
            }
        }
        Ok(())
    }

    async fn compact(&self, _tenant: TenantId) -> Result<()> {
        // A delete takes effect for search at once; Milvus drops the deleted
        // entities from its segments at its own (automatic) compaction.
        Ok(())
    }

    async fn search(
        &self,
        tenant: TenantId,
        space: &VectorSpace,
        query: &[f32],
        limit: usize,
        filter: &SearchFilter,
    ) -> Result<Vec<Hit>> {
        check_space(space)?;
        let query = unit_vector(space, query)?;
        let limit = limit.min(MAX_TOP_K);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let collection = self.collection_name(space);
        if !self.collection_exists(&collection).await? {
            return Ok(Vec::new());
        }
        let request = SearchRequest::builder()
            .collection_name(&collection)
            .vector_field(VECTOR)
            .vectors(SearchVectors::Float(vec![query]))
            .filter(expr::search(tenant, filter)?)
            .output_fields([TENANT, KIND, ENTRY, OWNER, RESTRICTED, ROLES])
            .limit(limit as i64)
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(unavailable)?;
        let response = self.client.search(request).await.map_err(|e| {
            self.ready.lock().remove(&collection);
            unavailable(e)
        })?;
        let expected_tenant = tenant.to_string();
        let mut hits = Vec::new();
        for result in response.results() {
            let scores = result.get_scores();
            for (row, score) in result.rows().map_err(unavailable)?.zip(scores) {
                let (row_tenant, key, access) = decode_row(&row)?;
                // The expression already selected these; a row that fails here
                // means a bug in that expression, and is never returned.
                if row_tenant != expected_tenant || !filter.admits(key.kind, &access) {
                    tracing::error!(collection = %collection, "milvus returned a row the search filter excludes; dropped");
                    continue;
                }
                hits.push(Hit { key, score: *score });
            }
        }
        hits.sort_by(|a, b| {
            b.score
                .partial_cmp(&a.score)
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        hits.truncate(limit);
        Ok(hits)
    }

    async fn keys(&self, tenant: TenantId, space: &VectorSpace) -> Result<Vec<EntryKey>> {
        check_space(space)?;
        let collection = self.collection_name(space);
        if !self.collection_exists(&collection).await? {
            return Ok(Vec::new());
        }
        let mut keys = Vec::new();
        // Listed by primary-key prefix; a prefix holding a full page of rows
        // is split into longer ones until every range fits in one answer.
        let mut prefixes = vec![expr::root_prefix(tenant)];
        while let Some(prefix) = prefixes.pop() {
            let mut page = Vec::new();
            let filter = expr::tenant_pk_prefix(tenant, &prefix);
            let count = self
                .query_rows(&collection, filter, &[KIND, ENTRY], |row| {
                    page.push(decode_key(row)?);
                    Ok(())
                })
                .await?;
            if count < MAX_TOP_K {
                keys.extend(page);
                continue;
            }
            match expr::narrower(tenant, &prefix) {
                Some(narrower) => prefixes.extend(narrower),
                None => return Err(Error::internal("milvus key listing cannot narrow further")),
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    async fn spaces(&self, tenant: TenantId) -> Result<Vec<VectorSpace>> {
        let registry = self.registry_name();
        if !self.collection_exists(&registry).await? {
            return Ok(Vec::new());
        }
        let mut spaces = Vec::new();
        self.query_rows(&registry, expr::tenant(tenant), &["model", "dims"], |row| {
            let bad = || Error::internal("milvus returned a malformed space record");
            let model = row.get_str("model").map_err(|_| bad())?.to_owned();
            let dims = u32::try_from(row.get_i64("dims").map_err(|_| bad())?).map_err(|_| bad())?;
            spaces.push(VectorSpace { model, dims });
            Ok(())
        })
        .await?;
        spaces.sort();
        spaces.dedup();
        Ok(spaces)
    }

    async fn status(&self, tenant: TenantId, space: &VectorSpace) -> Result<IndexStatus> {
        check_space(space)?;
        let collection = self.collection_name(space);
        if !self.collection_exists(&collection).await? {
            // Registered but gone: the collection was dropped behind Karen's back.
            let registered = self.spaces(tenant).await?.contains(space);
            return Ok(IndexStatus {
                entries: 0,
                rebuild_needed: registered,
            });
        }
        let request = QueryRequest::builder()
            .collection_name(&collection)
            .filter(expr::tenant(tenant))
            .output_fields(["count(*)"])
            .consistency_level(ConsistencyLevel::Strong)
            .build()
            .map_err(unavailable)?;
        let response = self.client.query(request).await.map_err(unavailable)?;
        let entries = response
            .results()
            .rows()
            .map_err(unavailable)?
            .next()
            .map(|row| row.get_i64("count(*)").map_err(unavailable))
            .transpose()?
            .unwrap_or(0);
        Ok(IndexStatus {
            entries: u64::try_from(entries).unwrap_or(0),
            rebuild_needed: false,
        })
    }

    async fn drop_space(&self, tenant: TenantId, space: &VectorSpace) -> Result<()> {
        check_space(space)?;
        let collection = self.collection_name(space);
        if self.collection_exists(&collection).await? {
            self.delete_tenant_rows(&collection, tenant).await?;
        }
        let registry = self.registry_name();
        if self.collection_exists(&registry).await? {
            let pk = format!("{tenant}:{}", space_digest(space));
            self.delete(
                &registry,
                format!("{} and {PK} in [\"{pk}\"]", expr::tenant(tenant)),
            )
            .await?;
        }
        Ok(())
    }

    async fn purge_tenant(&self, tenant: TenantId) -> Result<()> {
        for space in self.spaces(tenant).await? {
            let collection = self.collection_name(&space);
            if self.collection_exists(&collection).await? {
                self.delete_tenant_rows(&collection, tenant).await?;
            }
        }
        let registry = self.registry_name();
        if self.collection_exists(&registry).await? {
            self.delete(&registry, expr::tenant(tenant)).await?;
        }
        Ok(())
    }
}
