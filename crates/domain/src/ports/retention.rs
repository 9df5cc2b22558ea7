//! The store side of retention: the tenant's policy, its legal holds, its
//! last run, and the queries that find expired rows. Deleting goes through
//! the owning repositories (conversations, memories, documents), so a row is
//! removed the same way whether a user or retention removes it.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::ChainHash;
use crate::retention::{Expiring, LegalHold, RetentionPolicy, RetentionRun};
use crate::{ConversationId, LegalHoldId, Result, UsageId, UserId};

/// The oldest events of a tenant's audit trail, up to a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPrefix {
    /// The last sequence number of the prefix.
    pub through_seq: i64,
    /// That event's hash.
    pub hash: ChainHash,
    /// How many events the prefix holds.
    pub events: u64,
}

/// An expired row and whom it concerns (what a legal hold may cover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredRow {
    pub id: uuid::Uuid,
    /// The owner, uploader or caller.
    pub user_id: Option<UserId>,
    /// The conversation it is, belongs to, or was drawn from.
    pub conversation_id: Option<ConversationId>,
}

/// Retention policy, holds, runs, and expired rows of one tenant.
#[async_trait]
pub trait RetentionRepo: Send {
    /// The tenant's own policy (`None`: the platform defaults apply).
    async fn retention_policy(&mut self) -> Result<Option<RetentionPolicy>>;
    /// Creates or replaces the tenant's policy.
    async fn put_retention_policy(
        &mut self,
        policy: &RetentionPolicy,
        at: OffsetDateTime,
    ) -> Result<()>;
    /// The newest non-dry run.
    async fn last_retention_run(&mut self) -> Result<Option<RetentionRun>>;
    /// Records a run as the newest.
    async fn record_retention_run(&mut self, run: &RetentionRun) -> Result<()>;

    async fn insert_hold(&mut self, hold: &LegalHold) -> Result<()>;
    /// An active (not lifted) hold.
    async fn active_hold(&mut self, id: LegalHoldId) -> Result<Option<LegalHold>>;
    /// Every active hold, oldest first.
    async fn active_holds(&mut self) -> Result<Vec<LegalHold>>;
    /// Lifts an active hold; `false` if there is none with this id.
    async fn lift_hold(&mut self, id: LegalHoldId, by: &str, at: OffsetDateTime) -> Result<bool>;

    /// Rows of `kind` older than `before` (conversations by last activity,
    /// memories and documents by last change, usage by time of the call), in
    /// id order after `after`, at most `limit`.
    async fn expired(
        &mut self,
        kind: Expiring,
        before: OffsetDateTime,
        after: Option<uuid::Uuid>,
        limit: i64,
    ) -> Result<Vec<ExpiredRow>>;
    async fn delete_usage_record(&mut self, id: UsageId) -> Result<bool>;

    /// The longest prefix of the audit trail whose events are all older than
    /// `before` (`None` when the oldest event is not).
    async fn audit_prefix_before(&mut self, before: OffsetDateTime) -> Result<Option<AuditPrefix>>;
    /// Removes the audit events up to and including `through_seq`, which
    /// must be the sequence number of a signed checkpoint (the store refuses
    /// otherwise); returns how many.
    async fn drop_audit_prefix(&mut self, through_seq: i64) -> Result<u64>;
}
