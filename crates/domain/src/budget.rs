//! Budgets: limits on tokens or cost per day or month, for a whole tenant, one
//! user or one API key. Hard limits refuse (and cut off) calls; soft limits
//! only warn.

use time::{Date, Month, OffsetDateTime, Time};

use crate::{ApiKeyId, Error, TenantId, UserId};

/// What a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetScope {
    Tenant,
    User(UserId),
    ApiKey(ApiKeyId),
}

impl BudgetScope {
    /// The stored scope name.
    pub const fn kind(self) -> &'static str {
        match self {
            BudgetScope::Tenant => "tenant",
            BudgetScope::User(_) => "user",
            BudgetScope::ApiKey(_) => "api_key",
        }
    }

    /// The user or key the budget is for.
    pub fn subject(self) -> Option<uuid::Uuid> {
        match self {
            BudgetScope::Tenant => None,
            BudgetScope::User(user) => Some(user.as_uuid()),
            BudgetScope::ApiKey(key) => Some(key.as_uuid()),
        }
    }

    /// Rebuilds a scope from stored parts.
    pub fn from_parts(kind: &str, subject: Option<uuid::Uuid>) -> Result<Self, Error> {
        match (kind, subject) {
            ("tenant", None) => Ok(BudgetScope::Tenant),
            ("user", Some(id)) => Ok(BudgetScope::User(UserId::from_uuid(id))),
            ("api_key", Some(id)) => Ok(BudgetScope::ApiKey(ApiKeyId::from_uuid(id))),
            (other, _) => Err(Error::internal(format!(
                "invalid stored budget scope '{other}'"
            ))),
        }
    }
}

/// The quantity a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetMetric {
    /// Prompt plus completion tokens.
    Tokens,
    /// Cost in millionths of the currency unit (from the price table).
    CostMicros,
}

impl BudgetMetric {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetMetric::Tokens => "tokens",
            BudgetMetric::CostMicros => "cost_micros",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "tokens" => Ok(BudgetMetric::Tokens),
            "cost_micros" => Ok(BudgetMetric::CostMicros),
            other => Err(Error::invalid(
                Some("metric"),
                format!(
                    "metric '{}' is not tokens or cost_micros",
                    crate::values::printable(other, 40)
                ),
            )),
        }
    }
}

/// The window a budget counts over (calendar periods in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Day,
    Month,
}

impl BudgetPeriod {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "day" => Ok(BudgetPeriod::Day),
            "month" => Ok(BudgetPeriod::Month),
            other => Err(Error::invalid(
                Some("period"),
                format!(
                    "period '{}' is not day or month",
                    crate::values::printable(other, 40)
                ),
            )),
        }
    }

    /// The start of the period containing `at` and the start of the next one (UTC).
    pub fn window(self, at: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        let at = at.to_offset(time::UtcOffset::UTC);
        let midnight = |date: Date| date.with_time(Time::MIDNIGHT).assume_utc();
        match self {
            BudgetPeriod::Day => {
                let start = midnight(at.date());
                let next = at.date().next_day().map_or(start, midnight);
                (start, next)
            }
            BudgetPeriod::Month => {
                let first = Date::from_calendar_date(at.year(), at.month(), 1).unwrap_or(at.date());
                let (year, month) = match at.month() {
                    Month::December => (at.year() + 1, Month::January),
                    other => (at.year(), other.next()),
                };
                let next = Date::from_calendar_date(year, month, 1).unwrap_or(first);
                (midnight(first), midnight(next))
            }
        }
    }
}

/// Whether a budget refuses or only warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Calls that would exceed it are refused; streams are cut off at it.
    Hard,
    /// Crossing it is reported, nothing is refused.
    Soft,
}

impl Enforcement {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Enforcement::Hard => "hard",
            Enforcement::Soft => "soft",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "hard" => Ok(Enforcement::Hard),
            "soft" => Ok(Enforcement::Soft),
            other => Err(Error::invalid(
                Some("enforcement"),
                format!(
                    "enforcement '{}' is not hard or soft",
                    crate::values::printable(other, 40)
                ),
            )),
        }
    }
}

/// A budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub id: crate::BudgetId,
    pub tenant_id: TenantId,
    pub scope: BudgetScope,
    pub metric: BudgetMetric,
    pub period: BudgetPeriod,
    pub limit: i64,
    pub enforcement: Enforcement,
    pub created_at: OffsetDateTime,
}

impl Budget {
    /// A description for errors: "the tenant's hard limit of 100000 tokens per day".
    pub fn describe(&self) -> String {
        let whose = match self.scope {
            BudgetScope::Tenant => "the organisation's".to_owned(),
            BudgetScope::User(user) => format!("user {user}'s"),
            BudgetScope::ApiKey(key) => format!("API key {key}'s"),
        };
        let unit = match self.metric {
            BudgetMetric::Tokens => "tokens",
            BudgetMetric::CostMicros => "millionths of cost",
        };
        format!(
            "{whose} {} limit of {} {unit} per {}",
            self.enforcement.as_str(),
            self.limit,
            self.period.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn windows_are_utc_calendar_periods() {
        let at = datetime!(2026-12-31 23:59:59 UTC);
        assert_eq!(
            BudgetPeriod::Day.window(at),
            (
                datetime!(2026-12-31 0:00 UTC),
                datetime!(2027-01-01 0:00 UTC)
            )
        );
        assert_eq!(
            BudgetPeriod::Month.window(at),
            (
                datetime!(2026-12-01 0:00 UTC),
                datetime!(2027-01-01 0:00 UTC)
            )
        );
        let feb = datetime!(2028-02-29 12:00 +02:00);
        assert_eq!(
            BudgetPeriod::Month.window(feb),
            (
                datetime!(2028-02-01 0:00 UTC),
                datetime!(2028-03-01 0:00 UTC)
            )
        );
    }
}
