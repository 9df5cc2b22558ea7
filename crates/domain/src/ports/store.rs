//! The relational store: the source of truth. Work happens in transactions; a
//! tenant's data is reachable only through a [`TenantTx`] opened with a
//! [`TenantScope`] (tenancy rule 4), and every query it runs is bound to that
//! tenant (and, on PostgreSQL, checked again by row-level security).

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::{AuditEntry, AuditEvent, AuditFilter, ChainHash, Checkpoint, PersonalSeal};
use crate::budget::{Budget, BudgetMetric, BudgetScope};
use crate::chat::{Conversation, Persona, StoredMessage, UsageRecord};
use crate::credentials::{
    ActiveSession, ApiKeyRecord, OperatorKeyRecord, PasswordTokenRecord, RefreshTokenRecord,
    SessionRecord, SigningKeyRecord,
};
use crate::library::{
    Document, EmbeddingJob, EmbeddingJobProgress, EmbeddingJobState, StoredChunk,
};
use crate::memory::Memory;
use crate::page::PageRequest;
use crate::providers::{ModelAlias, TenantProvider};
use crate::rate_limit::RateLimits;
use crate::tenant::{Tenant, TenantSettings};
use crate::user::{CustomRole, LoginFailures, User};
use crate::values::{Email, RoleName, Slug, TenantName};
use crate::{
    ApiKeyId, BudgetId, ChunkId, ConversationId, DocumentId, MemoryId, OperatorKeyId,
    PasswordTokenId, PersonaId, ProviderId, RefreshTokenId, ReservationId, Result, SessionId,
    SigningKeyId, TenantId, TenantScope, UserId,
};

/// The relational store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Opens a transaction over platform tables (tenants registry, operator and
    /// signing keys). It cannot see any tenant's data.
    async fn platform(&self) -> Result<Box<dyn PlatformTx>>;

    /// Opens a read-write transaction over one tenant's data.
    async fn tenant(&self, scope: TenantScope) -> Result<Box<dyn TenantTx>>;

    /// Opens a transaction over one tenant's data for reading (it may still
    /// write, but lets concurrent readers proceed on SQLite).
    async fn tenant_read(&self, scope: TenantScope) -> Result<Box<dyn TenantTx>>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;

    /// After an erasure: makes deleted rows unrecoverable from the store's
    /// own files where the store can (SQLite: the write-ahead log is
    /// checkpointed and truncated; deleted cells are zeroed as they go).
    async fn flush_deleted(&self) -> Result<()>;

    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}

/// A transaction over platform tables. Dropped without `commit`, it rolls back.
#[async_trait]
pub trait PlatformTx: Send {
    /// Adds a tenant; `conflict` if the slug is taken.
    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<()>;
    async fn tenant_by_id(&mut self, id: TenantId) -> Result<Option<Tenant>>;
    async fn tenant_by_slug(&mut self, slug: &Slug) -> Result<Option<Tenant>>;
    async fn list_tenants(&mut self, page: &PageRequest) -> Result<Vec<Tenant>>;
    /// Stores name, plan, status and settings.
    async fn update_tenant(&mut self, tenant: &Tenant) -> Result<()>;
    /// Removes the registry row (after the tenant's data was purged).
    async fn delete_tenant(&mut self, id: TenantId) -> Result<bool>;
    /// The operator's rate-limit overrides of a tenant (`None`: no tenant;
    /// empty limits: none set).
    async fn rate_limit_overrides(&mut self, id: TenantId) -> Result<Option<RateLimits>>;
    /// Replaces a tenant's rate-limit overrides; `false` when there is no such tenant.
    async fn set_rate_limit_overrides(
        &mut self,
        id: TenantId,
        overrides: &RateLimits,
        at: OffsetDateTime,
    ) -> Result<bool>;

    async fn insert_operator_key(&mut self, key: &OperatorKeyRecord) -> Result<()>;
    async fn operator_key(&mut self, id: OperatorKeyId) -> Result<Option<OperatorKeyRecord>>;
    async fn list_operator_keys(&mut self) -> Result<Vec<OperatorKeyRecord>>;
    async fn revoke_operator_key(&mut self, id: OperatorKeyId, at: OffsetDateTime) -> Result<bool>;
    /// Records use, at most about once a minute per key.
    async fn touch_operator_key(&mut self, id: OperatorKeyId, at: OffsetDateTime) -> Result<()>;

    async fn insert_signing_key(&mut self, key: &SigningKeyRecord) -> Result<()>;
    /// Signing keys not retired before `retired_after`, newest first.
    async fn signing_keys(
        &mut self,
        retired_after: OffsetDateTime,
    ) -> Result<Vec<SigningKeyRecord>>;
    /// Retires every key but `keep`.
    async fn retire_signing_keys(&mut self, keep: SigningKeyId, at: OffsetDateTime) -> Result<u64>;

    /// The platform audit chain (operator actions that belong to no tenant;
    /// see `audit::PLATFORM_CHAIN`). Forwarding marks and erasure are not
    /// supported on it.
    fn audit(&mut self) -> &mut dyn AuditRepo;

    async fn commit(self: Box<Self>) -> Result<()>;
}

/// How many rows of each table a tenant purge removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub rows_by_table: Vec<(&'static str, u64)>,
}

/// A transaction over one tenant's data. Dropped without `commit`, it rolls back.
#[async_trait]
pub trait TenantTx: Send {
    /// The tenant this transaction is bound to.
    fn tenant_id(&self) -> TenantId;
    fn users(&mut self) -> &mut dyn UserRepo;
    fn roles(&mut self) -> &mut dyn RoleRepo;
    fn api_keys(&mut self) -> &mut dyn ApiKeyRepo;
    fn sessions(&mut self) -> &mut dyn SessionRepo;
    fn password_tokens(&mut self) -> &mut dyn PasswordTokenRepo;
    fn conversations(&mut self) -> &mut dyn ConversationRepo;
    fn personas(&mut self) -> &mut dyn PersonaRepo;
    fn usage(&mut self) -> &mut dyn UsageRepo;
    fn budgets(&mut self) -> &mut dyn BudgetRepo;
    fn providers(&mut self) -> &mut dyn ProviderRepo;
    fn memories(&mut self) -> &mut dyn MemoryRepo;
    fn documents(&mut self) -> &mut dyn DocumentRepo;
    fn embeddings(&mut self) -> &mut dyn EmbeddingRepo;
    fn embedding_jobs(&mut self) -> &mut dyn EmbeddingJobRepo;
    fn audit(&mut self) -> &mut dyn AuditRepo;
    fn retention(&mut self) -> &mut dyn super::RetentionRepo;
    fn mfa(&mut self) -> &mut dyn super::MfaRepo;
    /// A user's remaining rows, for erasure.
    fn erasure(&mut self) -> &mut dyn super::ErasureRepo;
    /// SCIM provisioning state (provider attributes, groups, granted roles).
    fn scim(&mut self) -> &mut dyn super::ScimRepo;
    /// Single sign-on connections, pending logins and linked identities.
    fn sso(&mut self) -> &mut dyn super::SsoRepo;
    /// The tenant's data keys (encryption at rest).
    fn tenant_keys(&mut self) -> &mut dyn super::TenantKeyRepo;

    /// The tenant's own registry row.
    async fn tenant(&mut self) -> Result<Tenant>;
    /// Changes the tenant's name and settings.
    async fn update_tenant_profile(
        &mut self,
        name: &TenantName,
        settings: &TenantSettings,
        at: OffsetDateTime,
    ) -> Result<()>;
    /// Stores the registry row's name, plan and status (operator changes, made
    /// here so that their audit event lands in the same transaction).
    async fn update_tenant_registry(&mut self, tenant: &Tenant) -> Result<()>;
    /// Deletes every row of the tenant's data (not the registry row).
    async fn purge(&mut self) -> Result<PurgeReport>;

    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Users of the tenant.
#[async_trait]
pub trait UserRepo: Send {
    /// Adds a user with its roles; `conflict` if the email is taken in this tenant.
    async fn insert_user(&mut self, user: &User) -> Result<()>;
    async fn user_by_id(&mut self, id: UserId) -> Result<Option<User>>;
    async fn user_by_email(&mut self, email: &Email) -> Result<Option<User>>;
    async fn list_users(&mut self, page: &PageRequest) -> Result<Vec<User>>;
    /// Stores email, display name, status, password hash and session cut-off.
    async fn update_user(&mut self, user: &User) -> Result<()>;
    /// Replaces the user's roles.
    async fn set_roles(&mut self, id: UserId, roles: &[RoleName]) -> Result<()>;
    /// Counts active users holding `role`.
    async fn count_active_with_role(&mut self, role: &RoleName) -> Result<i64>;
    /// Atomically counts one more failed login (starting afresh when the last
    /// one is older than `stale_before` or a lock ran out); locks the account
    /// until `lock_until` when the count reaches `lock_threshold`.
    async fn record_login_failure(
        &mut self,
        id: UserId,
        at: OffsetDateTime,
        lock_threshold: i32,
        lock_until: OffsetDateTime,
        stale_before: OffsetDateTime,
    ) -> Result<LoginFailures>;
    /// Clears failures and any lock (an administrator's unlock).
    async fn reset_login_failures(&mut self, id: UserId) -> Result<()>;
    /// Clears failures and records the login time.
    async fn record_login_success(&mut self, id: UserId, at: OffsetDateTime) -> Result<()>;
}

/// Custom roles of the tenant.
#[async_trait]
pub trait RoleRepo: Send {
    async fn list_custom_roles(&mut self) -> Result<Vec<CustomRole>>;
    async fn custom_role(&mut self, name: &RoleName) -> Result<Option<CustomRole>>;
    /// `conflict` if the name is taken.
    async fn insert_custom_role(&mut self, role: &CustomRole) -> Result<()>;
    async fn update_custom_role(&mut self, role: &CustomRole) -> Result<bool>;
    async fn delete_custom_role(&mut self, name: &RoleName) -> Result<bool>;
    /// How many users hold the role.
    async fn role_assignment_count(&mut self, name: &RoleName) -> Result<i64>;
}

/// API keys of the tenant.
#[async_trait]
pub trait ApiKeyRepo: Send {
    async fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()>;
    async fn api_key(&mut self, id: ApiKeyId) -> Result<Option<ApiKeyRecord>>;
    /// Keys of one user, or of everyone when `user` is `None`, oldest first.
    async fn list_api_keys(
        &mut self,
        user: Option<UserId>,
        page: &PageRequest,
    ) -> Result<Vec<ApiKeyRecord>>;
    async fn revoke_api_key(&mut self, id: ApiKeyId, at: OffsetDateTime) -> Result<bool>;
    /// Records use, at most about once a minute per key.
    async fn touch_api_key(&mut self, id: ApiKeyId, at: OffsetDateTime) -> Result<()>;
}

/// Sessions and refresh tokens of the tenant.
#[async_trait]
pub trait SessionRepo: Send {
    async fn insert_session(&mut self, session: &SessionRecord) -> Result<()>;
    async fn session(&mut self, id: SessionId) -> Result<Option<SessionRecord>>;
    async fn revoke_session(&mut self, id: SessionId, at: OffsetDateTime) -> Result<bool>;
    /// Revokes every live session of a user but `except`; returns how many.
    async fn revoke_user_sessions(
        &mut self,
        user: UserId,
        except: Option<SessionId>,
        at: OffsetDateTime,
    ) -> Result<u64>;
    /// The user's sessions neither revoked nor expired at `now`, newest first,
    /// at most `limit`, each with its last use.
    async fn list_user_sessions(
        &mut self,
        user: UserId,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ActiveSession>>;
    async fn insert_refresh_token(&mut self, token: &RefreshTokenRecord) -> Result<()>;
    async fn refresh_token(&mut self, id: RefreshTokenId) -> Result<Option<RefreshTokenRecord>>;
    /// Marks the token spent; `false` if it already was (a reuse, or a race lost).
    async fn spend_refresh_token(&mut self, id: RefreshTokenId, at: OffsetDateTime)
    -> Result<bool>;
}

/// Single-use password setup and reset tokens of the tenant.
#[async_trait]
pub trait PasswordTokenRepo: Send {
    /// Deletes every earlier token of the user (used or not: a new token
    /// supersedes them) and stores `token`.
    async fn replace_password_token(&mut self, token: &PasswordTokenRecord) -> Result<()>;
    async fn password_token(&mut self, id: PasswordTokenId) -> Result<Option<PasswordTokenRecord>>;
    /// Marks the token used; `false` if it already was (a reuse, or a race lost).
    async fn spend_password_token(
        &mut self,
        id: PasswordTokenId,
        at: OffsetDateTime,
    ) -> Result<bool>;
}

/// Where a newest-first conversation list continues: the last item's activity
/// time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityCursor {
    pub last_activity_ms: i64,
    pub id: uuid::Uuid,
}

/// Conversations and their messages.
#[async_trait]
pub trait ConversationRepo: Send {
    async fn insert_conversation(&mut self, conversation: &Conversation) -> Result<()>;
    async fn conversation(&mut self, id: ConversationId) -> Result<Option<Conversation>>;
    /// A user's conversations, most recently active first.
    async fn list_conversations(
        &mut self,
        user: UserId,
        after: Option<ActivityCursor>,
        limit: i64,
    ) -> Result<Vec<Conversation>>;
    /// Stores title, persona and times.
    async fn update_conversation(&mut self, conversation: &Conversation) -> Result<()>;
    /// Records activity (only `last_activity_at` changes).
    async fn touch_conversation(&mut self, id: ConversationId, at: OffsetDateTime) -> Result<()>;
    /// Deletes a conversation and its messages.
    async fn delete_conversation(&mut self, id: ConversationId) -> Result<bool>;
    async fn insert_message(&mut self, message: &StoredMessage) -> Result<()>;
    /// Messages oldest first, after `after` (a message id), at most `limit`.
    async fn list_messages(
        &mut self,
        conversation: ConversationId,
        after: Option<uuid::Uuid>,
        limit: i64,
    ) -> Result<Vec<StoredMessage>>;
    /// The newest `limit` messages, returned oldest first (the context of a turn).
    async fn recent_messages(
        &mut self,
        conversation: ConversationId,
        limit: i64,
    ) -> Result<Vec<StoredMessage>>;
}

/// Personas.
#[async_trait]
pub trait PersonaRepo: Send {
    async fn insert_persona(&mut self, persona: &Persona) -> Result<()>;
    async fn persona(&mut self, id: PersonaId) -> Result<Option<Persona>>;
    /// Tenant-wide personas and those owned by `user`, by name.
    async fn list_personas(&mut self, user: UserId) -> Result<Vec<Persona>>;
    async fn update_persona(&mut self, persona: &Persona) -> Result<()>;
    async fn delete_persona(&mut self, id: PersonaId) -> Result<bool>;
}

/// Which usage records to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub from: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub user: Option<UserId>,
    pub api_key: Option<ApiKeyId>,
    pub model: Option<String>,
}

/// Sums over usage records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

/// Sums over one provider and model's usage records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelUsage {
    pub provider: String,
    pub model: String,
    pub calls: i64,
    /// Calls whose status is `error`.
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
    /// Sum of the calls' latencies.
    pub latency_ms: i64,
}

/// Metered provider calls.
#[async_trait]
pub trait UsageRepo: Send {
    async fn insert_usage(&mut self, record: &UsageRecord) -> Result<()>;
    /// Inserts many records at once, with the daily aggregates summed per key
    /// (what the usage writer commits for a batch of calls).
    async fn insert_usage_batch(&mut self, records: &[UsageRecord]) -> Result<()>;
    /// Records matching `filter`, oldest first, after `after`, at most `limit`.
    async fn list_usage(
        &mut self,
        filter: &UsageFilter,
        after: Option<uuid::Uuid>,
        limit: i64,
    ) -> Result<Vec<UsageRecord>>;
    async fn usage_totals(&mut self, filter: &UsageFilter) -> Result<UsageTotals>;
    /// Sums per provider and model over records matching `filter`, costliest first.
    async fn usage_by_model(&mut self, filter: &UsageFilter) -> Result<Vec<ModelUsage>>;
}

/// Budget set aside for one provider call in flight. Settled (replaced by the
/// call's usage record) when the call ends; if the process dies first, it is
/// turned into a usage record of the whole reserved amount after it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub tenant_id: TenantId,
    pub user_id: Option<UserId>,
    pub api_key_id: Option<ApiKeyId>,
    pub conversation_id: Option<ConversationId>,
    pub provider: String,
    pub model: String,
    pub prompt_tokens: u32,
    /// The most completion tokens the call may produce.
    pub completion_allowance: u32,
    pub cost_micros: i64,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Budgets and reservations.
#[async_trait]
pub trait BudgetRepo: Send {
    async fn list_budgets(&mut self) -> Result<Vec<Budget>>;
    async fn insert_budget(&mut self, budget: &Budget) -> Result<()>;
    async fn delete_budget(&mut self, id: BudgetId) -> Result<bool>;
    /// What `scope` has used of `metric` in `[from, until)`: usage records plus reservations.
    async fn consumption(
        &mut self,
        scope: BudgetScope,
        metric: BudgetMetric,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<i64>;
    /// What `scope` has used of `metric` in `[from, until)` by usage records
    /// alone (what seeds a budget window's running total).
    async fn recorded_consumption(
        &mut self,
        scope: BudgetScope,
        metric: BudgetMetric,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<i64>;
    /// The reservations of `scope` made in `[from, until)` (calls in flight, or
    /// interrupted and not yet reconciled).
    async fn window_reservations(
        &mut self,
        scope: BudgetScope,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<Reservation>>;
    async fn insert_reservation(&mut self, reservation: &Reservation) -> Result<()>;
    /// Inserts many reservations (the usage writer's batch).
    async fn insert_reservations(&mut self, reservations: &[Reservation]) -> Result<()>;
    /// Removes a reservation; `false` if it was already settled or reconciled.
    async fn delete_reservation(&mut self, id: ReservationId) -> Result<bool>;
    /// Removes many reservations; returns those that were still there.
    async fn delete_reservations(&mut self, ids: &[ReservationId]) -> Result<Vec<ReservationId>>;
    /// Reservations that expired before `at` (their calls never settled).
    async fn expired_reservations(&mut self, at: OffsetDateTime) -> Result<Vec<Reservation>>;
}

/// A tenant's model providers and aliases.
#[async_trait]
pub trait ProviderRepo: Send {
    /// Providers by position.
    async fn list_providers(&mut self) -> Result<Vec<TenantProvider>>;
    async fn provider(&mut self, id: ProviderId) -> Result<Option<TenantProvider>>;
    /// `conflict` if the name is taken.
    async fn insert_provider(&mut self, provider: &TenantProvider) -> Result<()>;
    async fn update_provider(&mut self, provider: &TenantProvider) -> Result<()>;
    async fn delete_provider(&mut self, id: ProviderId) -> Result<bool>;
    async fn list_aliases(&mut self) -> Result<Vec<ModelAlias>>;
    /// Creates or replaces an alias.
    async fn put_alias(&mut self, alias: &ModelAlias) -> Result<()>;
    async fn delete_alias(&mut self, alias: &str) -> Result<bool>;
}

/// Whose memories a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryScope {
    /// The private memories of one user.
    Private(UserId),
    /// The tenant's shared memories.
    Shared,
    /// What one user may recall: their own and the shared ones.
    VisibleTo(UserId),
    /// Every memory of the tenant (index rebuilds, tenant admins).
    All,
}

/// Long-term memories.
#[async_trait]
pub trait MemoryRepo: Send {
    /// Adds a memory; `false` (and nothing written) when one with the same
    /// content hash exists.
    async fn insert_memory(&mut self, memory: &Memory) -> Result<bool>;
    async fn memory(&mut self, id: MemoryId) -> Result<Option<Memory>>;
    /// Those of `ids` that exist, in no particular order (none asked: no statement).
    async fn memories_by_ids(&mut self, ids: &[MemoryId]) -> Result<Vec<Memory>>;
    async fn memory_by_hash(&mut self, content_hash: &str) -> Result<Option<Memory>>;
    /// In id order, after `after`.
    async fn list_memories(
        &mut self,
        scope: MemoryScope,
        after: Option<MemoryId>,
        limit: i64,
    ) -> Result<Vec<Memory>>;
    /// Stores kind, content, hash, importance, tier and times.
    async fn update_memory(&mut self, memory: &Memory) -> Result<()>;
    async fn delete_memory(&mut self, id: MemoryId) -> Result<bool>;
    /// Records that these memories were recalled at `at`.
    async fn touch_memories(&mut self, ids: &[MemoryId], at: OffsetDateTime) -> Result<()>;
}

/// Documents and their chunks.
#[async_trait]
pub trait DocumentRepo: Send {
    async fn insert_document(&mut self, document: &Document) -> Result<()>;
    async fn insert_chunk(&mut self, chunk: &StoredChunk) -> Result<()>;
    async fn document(&mut self, id: DocumentId) -> Result<Option<Document>>;
    /// Those of `ids` that exist, in no particular order (none asked: no statement).
    async fn documents_by_ids(&mut self, ids: &[DocumentId]) -> Result<Vec<Document>>;
    /// In id order, after `after`.
    async fn list_documents(
        &mut self,
        after: Option<DocumentId>,
        limit: i64,
    ) -> Result<Vec<Document>>;
    /// Deletes the document and its chunks.
    async fn delete_document(&mut self, id: DocumentId) -> Result<bool>;
    async fn chunk(&mut self, id: ChunkId) -> Result<Option<StoredChunk>>;
    /// Those of `ids` that exist, in no particular order (none asked: no statement).
    async fn chunks_by_ids(&mut self, ids: &[ChunkId]) -> Result<Vec<StoredChunk>>;
    /// A document's chunks in order.
    async fn chunks_of(&mut self, document: DocumentId) -> Result<Vec<StoredChunk>>;
    /// Every chunk of the tenant in id order, after `after` (index rebuilds).
    async fn list_chunks(&mut self, after: Option<ChunkId>, limit: i64)
    -> Result<Vec<StoredChunk>>;
}

/// The embedding cache: vectors by model and content hash.
#[async_trait]
pub trait EmbeddingRepo: Send {
    async fn embedding(&mut self, model: &str, content_hash: &str) -> Result<Option<Vec<f32>>>;
    /// Stores a vector (keeping an existing one for the same key).
    async fn put_embedding(
        &mut self,
        model: &str,
        content_hash: &str,
        vector: &[f32],
        at: OffsetDateTime,
    ) -> Result<()>;
}

/// Re-embedding jobs (a change of the tenant's embedding model). State
/// changes are compare-and-set: each applies only while the job is in the
/// state (and, when running, held by the lease owner) the caller expects.
#[async_trait]
pub trait EmbeddingJobRepo: Send {
    async fn insert_job(&mut self, job: &EmbeddingJob) -> Result<()>;
    async fn job(&mut self, id: uuid::Uuid) -> Result<Option<EmbeddingJob>>;
    /// The newest job, in any state.
    async fn latest_job(&mut self) -> Result<Option<EmbeddingJob>>;
    /// The newest pending or running job.
    async fn open_job(&mut self) -> Result<Option<EmbeddingJob>>;
    /// The newest finished job: its target is the model of the tenant's searches.
    async fn last_done_job(&mut self) -> Result<Option<EmbeddingJob>>;
    /// Cancels every pending or running job; returns how many.
    async fn cancel_open_jobs(&mut self, at: OffsetDateTime) -> Result<u64>;
    /// Takes the lease of a pending job, of a running one whose lease ran out
    /// before `at`, or of one `owner` already holds; `false` if none applies.
    async fn claim_job(
        &mut self,
        id: uuid::Uuid,
        owner: &str,
        lease_until: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool>;
    /// Saves progress and extends the lease; `false` when `owner` no longer
    /// holds a running job (cancelled, or the lease was taken over).
    async fn save_progress(
        &mut self,
        id: uuid::Uuid,
        owner: &str,
        progress: &EmbeddingJobProgress,
        lease_until: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool>;
    /// Ends a running job held by `owner` in `state` (done, failed, or back
    /// to pending after a passing failure), recording `error`.
    async fn end_job(
        &mut self,
        id: uuid::Uuid,
        owner: &str,
        state: EmbeddingJobState,
        error: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<bool>;
}

/// The tenant's audit trail. Append-only: nothing here changes or removes an
/// event or a checkpoint.
#[async_trait]
pub trait AuditRepo: Send {
    /// Places `entry` after the newest event of the tenant's chain and stores
    /// it. Holds the tenant's chain lock until the transaction ends, so
    /// concurrent appends of one tenant take turns and the chain stays linear.
    async fn append_audit(&mut self, entry: AuditEntry) -> Result<AuditEvent>;
    /// Events matching `filter` in sequence order, after `after_seq`, at most `limit`.
    async fn list_audit(
        &mut self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>>;
    /// The sequence number and hash of the newest event, if any.
    async fn audit_head(&mut self) -> Result<Option<(i64, ChainHash)>>;
    async fn insert_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()>;
    /// Checkpoints in sequence order, after `after_seq`, at most `limit`.
    async fn list_checkpoints(&mut self, after_seq: i64, limit: i64) -> Result<Vec<Checkpoint>>;
    /// The newest checkpoint.
    async fn last_checkpoint(&mut self) -> Result<Option<Checkpoint>>;
    /// The sequence number of the last event the collector `sink` accepted
    /// (0: none yet).
    async fn forwarded_up_to(&mut self, sink: &str) -> Result<i64>;
    /// Records that the collector `sink` accepted every event up to `seq`.
    async fn set_forwarded_up_to(&mut self, sink: &str, seq: i64, at: OffsetDateTime)
    -> Result<()>;
    /// Replaces event `seq`'s personal fields with those of `erased` and its
    /// seal with `personal` (an erasure; see `audit::personal`). The store
    /// refuses any other change to an audit row.
    async fn redact_audit(
        &mut self,
        seq: i64,
        erased: &AuditEntry,
        personal: &PersonalSeal,
    ) -> Result<()>;
}
