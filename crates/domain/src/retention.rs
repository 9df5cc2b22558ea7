//! Retention policies and legal holds: how long a tenant keeps each kind of
//! data, and what must be kept regardless. The rules live here; the service
//! in `karen_app::retention` applies them with the injected clock.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::values::printable;
use crate::{ConversationId, Error, LegalHoldId, Result, TenantId, UserId};

/// Longest maximum age a policy may name (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Longest legal-hold reason.
pub const MAX_HOLD_REASON_CHARS: usize = 500;

/// The maximum age, in days, of each kind of data (`None`: kept forever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Conversations (with their messages), by last activity.
    pub conversations_days: Option<u32>,
    /// Memories, by last change.
    pub memories_days: Option<u32>,
    /// Documents (with their passages), by last change.
    pub documents_days: Option<u32>,
    /// Usage records, by time of the call.
    pub usage_days: Option<u32>,
    /// Audit events, by time; never below the platform minimum.
    pub audit_days: Option<u32>,
}

impl RetentionPolicy {
    /// Checks every age: 1 to [`MAX_RETENTION_DAYS`], and audit at least
    /// `audit_min_days`. The error names the field and the bound.
    pub fn validate(&self, audit_min_days: u32) -> Result<()> {
        let fields = [
            ("conversations_days", self.conversations_days),
            ("memories_days", self.memories_days),
            ("documents_days", self.documents_days),
            ("usage_days", self.usage_days),
            ("audit_days", self.audit_days),
        ];
        for (field, days) in fields {
            if let Some(days) = days
                && !(1..=MAX_RETENTION_DAYS).contains(&days)
            {
                return Err(Error::invalid(
                    Some(field),
                    format!(
                        "{field} must be between 1 and {MAX_RETENTION_DAYS} days, or null to keep forever"
                    ),
                ));
            }
        }
        if let Some(days) = self.audit_days
            && days < audit_min_days
        {
            return Err(Error::invalid(
                Some("audit_days"),
                format!(
                    "audit_days must be at least {audit_min_days} days (the platform's minimum retention of audit events), or null to keep forever"
                ),
            ));
        }
        Ok(())
    }

    /// The content kinds with a maximum age, in deletion order.
    pub fn content_ages(&self) -> Vec<(Expiring, u32)> {
        [
            (Expiring::Conversations, self.conversations_days),
            (Expiring::Memories, self.memories_days),
            (Expiring::Documents, self.documents_days),
            (Expiring::Usage, self.usage_days),
        ]
        .into_iter()
        .filter_map(|(kind, days)| days.map(|d| (kind, d)))
        .collect()
    }

    /// The audit age in effect: the policy's, never below `audit_min_days`.
    pub fn effective_audit_days(&self, audit_min_days: u32) -> Option<u32> {
        self.audit_days.map(|days| days.max(audit_min_days))
    }
}

/// The kinds of tenant content a policy ages out (audit events aside: they
/// go as a prefix of the chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiring {
    Conversations,
    Memories,
    Documents,
    Usage,
}

/// The moment before which data `days` old is expired, at `now`.
pub fn cutoff(now: OffsetDateTime, days: u32) -> OffsetDateTime {
    now - Duration::days(i64::from(days))
}

/// What a legal hold covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldScope {
    /// Everything of the tenant.
    Tenant,
    /// One user's conversations, memories, documents and usage.
    User(UserId),
    /// One conversation (its messages, usage, and memories drawn from it).
    Conversation(ConversationId),
}

impl HoldScope {
    /// Builds a scope from its name and target id (as a client gives them).
    pub fn parse(scope: &str, target_id: Option<&str>) -> Result<Self> {
        let target = |what: &str| {
            target_id.ok_or_else(|| {
                Error::invalid(
                    Some("target_id"),
                    format!("a {what} hold needs target_id, the {what}'s id"),
                )
            })
        };
        match scope {
            "tenant" => match target_id {
                None => Ok(Self::Tenant),
                Some(_) => Err(Error::invalid(
                    Some("target_id"),
                    "a tenant hold covers the caller's own organisation; leave target_id out",
                )),
            },
            "user" => {
                Ok(Self::User(UserId::parse(target("user")?).map_err(|e| {
                    Error::invalid(Some("target_id"), e.to_string())
                })?))
            }
            "conversation" => Ok(Self::Conversation(
                ConversationId::parse(target("conversation")?)
                    .map_err(|e| Error::invalid(Some("target_id"), e.to_string()))?,
            )),
            other => Err(Error::invalid(
                Some("scope"),
                format!(
                    "'{}' is not a hold scope; use tenant, user or conversation",
                    printable(other, 40)
                ),
            )),
        }
    }

    /// `tenant`, `user` or `conversation`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::User(_) => "user",
            Self::Conversation(_) => "conversation",
        }
    }

    /// The held user's or conversation's id.
    pub fn target_id(&self) -> Option<uuid::Uuid> {
        match self {
            Self::Tenant => None,
            Self::User(id) => Some(id.as_uuid()),
            Self::Conversation(id) => Some(id.as_uuid()),
        }
    }

    /// Rebuilds a stored scope.
    pub fn stored(scope: &str, target: Option<uuid::Uuid>) -> Result<Self> {
        match (scope, target) {
            ("tenant", _) => Ok(Self::Tenant),
            ("user", Some(id)) => Ok(Self::User(UserId::from_uuid(id))),
            ("conversation", Some(id)) => Ok(Self::Conversation(ConversationId::from_uuid(id))),
            _ => Err(Error::internal(format!(
                "stored hold scope {scope} is not valid"
            ))),
        }
    }
}

/// A legal hold: while active, retention deletes nothing it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegalHold {
    pub id: LegalHoldId,
    pub tenant_id: TenantId,
    pub scope: HoldScope,
    /// Why the data is held (a case or matter reference).
    pub reason: String,
    /// Who set it (the audit actor id).
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

/// Checks a hold's reason: 1 to [`MAX_HOLD_REASON_CHARS`] characters.
pub fn hold_reason(text: &str) -> Result<String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_HOLD_REASON_CHARS {
        return Err(Error::invalid(
            Some("reason"),
            format!(
                "reason must be 1 to {MAX_HOLD_REASON_CHARS} characters (e.g. a case reference)"
            ),
        ));
    }
    Ok(text.to_owned())
}

/// The active holds of a tenant, as retention consults them.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    pub tenant: bool,
    pub users: Vec<UserId>,
    pub conversations: Vec<ConversationId>,
}

impl Holds {
    /// Sorts `holds` by scope.
    pub fn of(holds: &[LegalHold]) -> Self {
        let mut out = Self::default();
        for hold in holds {
            match hold.scope {
                HoldScope::Tenant => out.tenant = true,
                HoldScope::User(user) => out.users.push(user),
                HoldScope::Conversation(id) => out.conversations.push(id),
            }
        }
        out
    }

    /// Whether any hold is active.
    pub fn any(&self) -> bool {
        self.tenant || !self.users.is_empty() || !self.conversations.is_empty()
    }

    /// Whether data of `user` (if any) in `conversation` (if any) is held.
    pub fn covers(&self, user: Option<UserId>, conversation: Option<ConversationId>) -> bool {
        self.tenant
            || user.is_some_and(|u| self.users.contains(&u))
            || conversation.is_some_and(|c| self.conversations.contains(&c))
    }
}

/// How many items of each kind a retention run deleted (or, dry, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionCounts {
    pub conversations: u64,
    pub memories: u64,
    pub documents: u64,
    pub usage_records: u64,
    pub audit_events: u64,
    /// Expired items kept because a legal hold covers them.
    pub held: u64,
}

impl RetentionCounts {
    /// The count of one content kind.
    pub fn of_mut(&mut self, kind: Expiring) -> &mut u64 {
        match kind {
            Expiring::Conversations => &mut self.conversations,
            Expiring::Memories => &mut self.memories,
            Expiring::Documents => &mut self.documents,
            Expiring::Usage => &mut self.usage_records,
        }
    }
}

/// The last (non-dry) retention run of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRun {
    pub at: OffsetDateTime,
    pub counts: RetentionCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_below_the_minimum_names_it() {
        let policy = RetentionPolicy {
            audit_days: Some(30),
            ..RetentionPolicy::default()
        };
        let error = policy.validate(365).unwrap_err().to_string();
        assert!(error.contains("365"), "{error}");
        assert!(policy.validate(30).is_ok());
        assert_eq!(policy.effective_audit_days(60), Some(60));
    }

    #[test]
    fn ages_are_bounded() {
        let zero = RetentionPolicy {
            memories_days: Some(0),
            ..RetentionPolicy::default()
        };
        assert!(zero.validate(1).is_err());
        assert!(RetentionPolicy::default().validate(365).is_ok());
    }

    #[test]
    fn scopes_parse_and_holds_cover() {
        assert!(HoldScope::parse("tenant", Some("x")).is_err());
        assert!(HoldScope::parse("user", None).is_err());
        assert!(HoldScope::parse("team", None).is_err());
        let user = UserId::generate();
        let scope = HoldScope::parse("user", Some(&user.to_string())).unwrap();
        assert_eq!(scope, HoldScope::User(user));
        let holds = Holds {
            users: vec![user],
            ..Holds::default()
        };
        assert!(holds.covers(Some(user), None));
        assert!(!holds.covers(None, Some(ConversationId::generate())));
    }
}
