//! `[retention]`: the platform's default retention policy, the minimum age of
//! audit events no tenant can go below, and how often the enforcement runs;
//! and what `karen retention run` and the schedule do (one tenant or all).

use karen_app::Services;
use karen_app::retention::{RetentionReport, RetentionSettings};
use karen_domain::TenantId;
use karen_domain::retention::RetentionPolicy;
use karen_domain::tenant::Tenant;
use serde::{Deserialize, Serialize};

/// `[retention]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Run the enforcement every this many seconds (0: only on demand).
    pub interval_secs: u64,
    /// No tenant may keep audit events for fewer days than this.
    pub audit_min_days: u32,
    /// Defaults for tenants without their own policy (absent: kept forever).
    pub conversations_days: Option<u32>,
    pub memories_days: Option<u32>,
    pub documents_days: Option<u32>,
    pub usage_days: Option<u32>,
    pub audit_days: Option<u32>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval_secs: 86_400,
            audit_min_days: 365,
            conversations_days: None,
            memories_days: None,
            documents_days: None,
            usage_days: None,
            audit_days: None,
        }
    }
}

impl RetentionConfig {
    /// The default policy.
    pub fn defaults(&self) -> RetentionPolicy {
        RetentionPolicy {
            conversations_days: self.conversations_days,
            memories_days: self.memories_days,
            documents_days: self.documents_days,
            usage_days: self.usage_days,
            audit_days: self.audit_days,
        }
    }

    /// The settings the service applies.
    pub fn settings(&self) -> RetentionSettings {
        RetentionSettings {
            defaults: self.defaults(),
            audit_min_days: self.audit_min_days,
        }
    }

    /// Problems, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        match self.defaults().validate(self.audit_min_days) {
            Ok(()) => Vec::new(),
            Err(karen_domain::Error::Invalid { field, message }) => vec![format!(
                "retention.{}: {message}",
                field.unwrap_or_default()
            )],
            Err(other) => vec![format!("retention: {other}")],
        }
    }
}

/// Enforces the policy of `only`, or of every tenant not being deleted. A
/// tenant that fails is reported and the others still run.
pub async fn run(
    services: &Services,
    only: Option<TenantId>,
    dry_run: bool,
) -> anyhow::Result<Vec<(Tenant, RetentionReport)>> {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for tenant in crate::audit::tenants(services, only).await? {
        match services.retention.enforce_tenant(tenant.id, dry_run).await {
            Ok(report) => reports.push((tenant, report)),
            Err(error) => {
                tracing::warn!(tenant_id = %tenant.id, %error, "retention enforcement failed");
                failures.push(format!("{}: {error}", tenant.slug));
            }
        }
    }
    if !failures.is_empty() && only.is_some() {
        anyhow::bail!("retention failed for {}", failures.join("; "));
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(RetentionConfig::default().problems().is_empty());
        let below = RetentionConfig {
            audit_days: Some(30),
            ..RetentionConfig::default()
        };
        let problems = below.problems().join("\n");
        assert!(problems.contains("retention.audit_days"), "{problems}");
        assert!(problems.contains("365"), "{problems}");
        let zero = RetentionConfig {
            memories_days: Some(0),
            ..RetentionConfig::default()
        };
        assert!(
            zero.problems()
                .join("\n")
                .contains("retention.memories_days")
        );
    }
}
