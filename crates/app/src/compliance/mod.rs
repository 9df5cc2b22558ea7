//! Compliance reports: for each control of a framework (SOC 2, GDPR, HIPAA),
//! its status and the evidence Karen can show from its own state, and,
//! plainly, what the control needs that Karen cannot evidence.
//!
//! Facts are gathered once per report (users and roles, API keys, the audit
//! trail and its verification, failed sign-ins) and each control is judged
//! from the checks it names. A control is `pass` only when every check passes;
//! a check about something Karen does not have or cannot see is
//! `not_evidenced`, never `pass`.

use std::collections::BTreeMap;
use std::sync::Arc;

use karen_domain::audit::AuditFilter;
use karen_domain::audit::personal::ERASURE_ACTION;
use karen_domain::mfa::MfaRequirement;
use karen_domain::page::PageRequest;
use karen_domain::permission::Permission;
use karen_domain::ports::TenantKeyInfo;
use karen_domain::user::{UserStatus, permissions_of};
use karen_domain::{Error, Result, TenantContext, TenantScope};
use serde::Serialize;
use time::OffsetDateTime;

use crate::Deps;
use crate::audit::Record;

mod render;

pub use render::{Format, render};

/// Accounts without a sign-in for this long count as inactive.
const INACTIVE_DAYS: i64 = 90;
/// The window of the failed sign-in trend.
const TREND_DAYS: i64 = 30;
const PAGE: u32 = 200;
/// Retention counts as enforced when it ran this recently.
const RUN_WITHIN_DAYS: i64 = 7;

/// What the composition root knows about the platform (not in the store).
#[derive(Debug, Clone, Copy, Default)]
pub struct PlatformFacts {
    /// `karen serve` terminates TLS itself.
    pub transport_tls: bool,
    /// Content is sealed with per-tenant data keys (`[encryption] enabled`).
    pub encryption_at_rest: bool,
}

/// A framework whose controls a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    Soc2,
    Gdpr,
    Hipaa,
}

impl Framework {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soc2 => "soc2",
            Self::Gdpr => "gdpr",
            Self::Hipaa => "hipaa",
        }
    }

    /// Parses `soc2`, `gdpr` or `hipaa`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "soc2" => Ok(Self::Soc2),
            "gdpr" => Ok(Self::Gdpr),
            "hipaa" => Ok(Self::Hipaa),
            _ => Err(Error::invalid(
                Some("framework"),
                format!(
                    "unknown framework '{}'; use soc2, gdpr or hipaa",
                    karen_domain::values::printable(text, 20)
                ),
            )),
        }
    }
}

/// How a control or check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    /// Karen does not have the feature, or cannot see the fact.
    NotEvidenced,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::NotEvidenced => "not_evidenced",
            Status::Fail => "fail",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub status: Status,
    /// Facts, with their numbers.
    pub evidence: Vec<String>,
    /// What the check needs that Karen cannot show.
    pub gaps: Vec<String>,
}

/// One control of the framework.
#[derive(Debug, Clone, Serialize)]
pub struct Control {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub evidence: Vec<String>,
    pub gaps: Vec<String>,
}

/// A tenant's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tenant_id: String,
    pub tenant_slug: String,
    pub framework: Framework,
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// Controls by status.
    pub summary: BTreeMap<&'static str, usize>,
    pub controls: Vec<Control>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    AccessReview,
    InactiveAccounts,
    ApiKeyExpiry,
    FailedSignIns,
    AuditTrail,
    Mfa,
    Sso,
    EncryptionAtRest,
    Transport,
    Retention,
    DataAccess,
    DataErasure,
}

use Check::*;

type ControlSpec = (&'static str, &'static str, &'static [Check]);

const SOC2: &[ControlSpec] = &[
    (
        "CC6.1",
        "Logical access security: authentication and credentials",
        &[Mfa, Sso, ApiKeyExpiry],
    ),
    (
        "CC6.2",
        "Access is granted, reviewed and removed",
        &[AccessReview, InactiveAccounts],
    ),
    (
        "CC6.3",
        "Role-based access and least privilege",
        &[AccessReview],
    ),
    (
        "CC6.6",
        "Protection against threats from outside the system boundary",
        &[Transport, FailedSignIns],
    ),
    (
        "CC6.7",
        "Data is protected in transmission and at rest",
        &[Transport, EncryptionAtRest],
    ),
    (
        "CC7.2",
        "System activity is monitored for anomalies",
        &[AuditTrail, FailedSignIns],
    ),
    (
        "CC7.3",
        "Security events are evaluated (tamper-evident records)",
        &[AuditTrail],
    ),
    (
        "C1.2",
        "Confidential information is disposed of as policy requires",
        &[Retention],
    ),
];

const GDPR: &[ControlSpec] = &[
    (
        "Art. 5(1)(e)",
        "Storage limitation: personal data kept no longer than necessary",
        &[Retention],
    ),
    (
        "Art. 5(2)",
        "Accountability: records that demonstrate compliance",
        &[AuditTrail],
    ),
    (
        "Art. 15, 20",
        "Right of access and data portability",
        &[DataAccess],
    ),
    ("Art. 17", "Right to erasure", &[DataErasure]),
    (
        "Art. 25",
        "Data protection by design: least privilege",
        &[AccessReview, InactiveAccounts],
    ),
    (
        "Art. 32(1)(a)",
        "Encryption of personal data",
        &[EncryptionAtRest, Transport],
    ),
    (
        "Art. 32(1)(b)",
        "Confidentiality of processing systems: access control",
        &[Mfa, Sso, ApiKeyExpiry, FailedSignIns],
    ),
    ("Art. 30", "Records of processing activities", &[AuditTrail]),
];

const HIPAA: &[ControlSpec] = &[
    (
        "164.308(a)(1)(ii)(D)",
        "Information system activity review",
        &[AuditTrail, FailedSignIns],
    ),
    (
        "164.308(a)(3)(ii)(C)",
        "Termination procedures: access removed",
        &[InactiveAccounts],
    ),
    (
        "164.308(a)(4)",
        "Information access management",
        &[AccessReview, ApiKeyExpiry],
    ),
    (
        "164.308(a)(5)(ii)(C)",
        "Log-in monitoring",
        &[FailedSignIns],
    ),
    (
        "164.312(a)(2)(iv)",
        "Encryption and decryption of ePHI at rest",
        &[EncryptionAtRest],
    ),
    ("164.312(b)", "Audit controls", &[AuditTrail]),
    (
        "164.312(c)(1)",
        "Integrity: ePHI and records not improperly altered",
        &[AuditTrail],
    ),
    ("164.312(d)", "Person or entity authentication", &[Mfa, Sso]),
    ("164.312(e)(1)", "Transmission security", &[Transport]),
    (
        "164.316(b)(2)(i)",
        "Retention of required documentation",
        &[Retention],
    ),
];

fn specs(framework: Framework) -> &'static [ControlSpec] {
    match framework {
        Framework::Soc2 => SOC2,
        Framework::Gdpr => GDPR,
        Framework::Hipaa => HIPAA,
    }
}

fn day(at: OffsetDateTime) -> String {
    at.date().to_string()
}

fn finding(status: Status, evidence: Vec<String>, gaps: Vec<String>) -> Finding {
    Finding {
        status,
        evidence,
        gaps,
    }
}

fn not_built(what: &str) -> Finding {
    finding(
        Status::NotEvidenced,
        Vec::new(),
        vec![format!(
            "{what} is not built in Karen yet, so Karen cannot evidence it"
        )],
    )
}

/// Data keys older than this should be rotated.
const KEY_MAX_AGE_DAYS: i64 = 365;

/// Builds reports.
#[derive(Clone)]
pub struct ComplianceService {
    deps: Arc<Deps>,
}

impl ComplianceService {
    pub(crate) fn new(deps: Arc<Deps>) -> Self {
        Self { deps }
    }

    /// The caller's tenant's report (needs `audit:read`; recorded as `compliance.report`).
    pub async fn report_for(&self, ctx: &TenantContext, framework: Framework) -> Result<Report> {
        ctx.require(Permission::AuditRead)?;
        let report = self.report(ctx.scope(), framework).await?;
        self.deps
            .audit
            .record_alone(
                ctx.scope(),
                ctx.scope().actor(),
                Record::new("compliance.report").target("compliance_report", framework.as_str()),
            )
            .await?;
        Ok(report)
    }

    fn encryption_finding(&self, versions: &[TenantKeyInfo], now: OffsetDateTime) -> Finding {
        if !self.deps.compliance.encryption_at_rest {
            return finding(
                Status::Fail,
                vec!["encryption at rest is switched off ([encryption] enabled = false)".into()],
                vec!["disk or database encryption below Karen, if any, is invisible to it".into()],
            );
        }
        let Some(current) = versions
            .iter()
            .filter(|v| v.retired_at.is_none())
            .max_by_key(|v| v.version)
        else {
            return finding(
                Status::Pass,
                vec!["encryption at rest is on; the tenant has stored no content yet, so it has no data key (one is made with the first sealed value)".into()],
                Vec::new(),
            );
        };
        let age = (now - current.created_at).whole_days();
        let evidence = vec![
            "message and memory content, document text, provider credentials and TOTP seeds are sealed with AES-256-GCM under the tenant's data key, itself wrapped by the master key".into(),
            format!(
                "current data key version {} created {} ({age} days ago), wrapped under master key {}; {} older versions kept to read older rows",
                current.version,
                day(current.created_at),
                current.master_key_id,
                versions.len() - 1
            ),
        ];
        let mut gaps =
            vec!["search indexes (derived from the content) are not encrypted by Karen".into()];
        let status = if age > KEY_MAX_AGE_DAYS {
            gaps.push(format!(
                "the data key is older than {KEY_MAX_AGE_DAYS} days: rotate it (karen keys rotate-tenant)"
            ));
            Status::Fail
        } else {
            Status::Pass
        };
        finding(status, evidence, gaps)
    }

    /// A tenant's report, for the operator's CLI (not audited there: the
    /// command runs on the server's own machine).
    pub async fn report(&self, scope: TenantScope, framework: Framework) -> Result<Report> {
        let now = self.deps.clock.now();
        let mut findings = BTreeMap::new();
        let mut tx = self.deps.store.tenant_read(scope).await?;
        let tenant = tx.tenant().await?;
        let custom = tx.roles().list_custom_roles().await?;
        let mut users = Vec::new();
        let mut page = PageRequest {
            after: None,
            limit: PAGE,
        };
        loop {
            let batch = tx.users().list_users(&page).await?;
            let more = batch.len() > PAGE as usize;
            users.extend(batch.into_iter().take(PAGE as usize));
            match (more, users.last()) {
                (true, Some(last)) => page.after = Some(last.id.as_uuid()),
                _ => break,
            }
        }
        let mut keys = Vec::new();
        let mut page = PageRequest {
            after: None,
            limit: PAGE,
        };
        loop {
            let batch = tx.api_keys().list_api_keys(None, &page).await?;
            let more = batch.len() > PAGE as usize;
            keys.extend(batch.into_iter().take(PAGE as usize));
            match (more, keys.last()) {
                (true, Some(last)) => page.after = Some(last.id.as_uuid()),
                _ => break,
            }
        }
        let since = now - time::Duration::days(TREND_DAYS);
        let filter = AuditFilter {
            from: Some(since),
            action: Some("auth.login.failed".into()),
            ..AuditFilter::default()
        };
        let mut failed_by_day: BTreeMap<String, u64> = BTreeMap::new();
        let mut after = 0;
        loop {
            let batch = tx.audit().list_audit(&filter, after, 1000).await?;
            for event in &batch {
                *failed_by_day.entry(day(event.entry.at)).or_default() += 1;
            }
            match batch.last() {
                Some(last) if batch.len() == 1000 => after = last.seq,
                _ => break,
            }
        }
        // One statement for the tenant, not one per user (and no secret decrypted).
        let enrolled: std::collections::BTreeSet<_> =
            tx.mfa().active_totp_users().await?.into_iter().collect();
        let erasures = tx
            .audit()
            .list_audit(
                &AuditFilter {
                    action: Some(ERASURE_ACTION.into()),
                    ..AuditFilter::default()
                },
                0,
                100_000,
            )
            .await?;
        let own_policy = tx.retention().retention_policy().await?;
        let last_run = tx.retention().last_retention_run().await?;
        let holds = tx.retention().active_holds().await?.len();
        let key_versions = tx.tenant_keys().key_versions().await?;
        tx.commit().await?;

        // Access review: who holds administrative rights, and when each last signed in.
        let active: Vec<_> = users
            .iter()
            .filter(|u| u.status == UserStatus::Active)
            .collect();
        let admins: Vec<_> = active
            .iter()
            .filter(|u| MfaRequirement::Admins.applies_to(permissions_of(&u.roles, &custom)))
            .collect();
        let mut evidence = vec![format!(
            "{} active users ({} disabled), {} with administrative rights (users, roles, tenant or billing management)",
            active.len(),
            users.len() - active.len(),
            admins.len()
        )];
        for admin in &admins {
            let roles: Vec<&str> = admin.roles.iter().map(|r| r.as_str()).collect();
            evidence.push(format!(
                "administrator {} (roles {}), last sign-in {}",
                admin.email.as_str(),
                roles.join(", "),
                admin.last_login_at.map_or("never".into(), day)
            ));
        }
        findings.insert(
            AccessReview,
            finding(
                Status::Pass,
                evidence,
                vec![
                    "that a person reviewed this list periodically is a process outside Karen"
                        .into(),
                ],
            ),
        );

        // Inactive accounts: active, but no sign-in for INACTIVE_DAYS.
        let cutoff = now - time::Duration::days(INACTIVE_DAYS);
        let inactive: Vec<_> = active
            .iter()
            .filter(|u| u.last_login_at.unwrap_or(u.created_at) < cutoff)
            .collect();
        let mut evidence = vec![format!(
            "{} of {} active accounts have not signed in for {INACTIVE_DAYS} days",
            inactive.len(),
            active.len()
        )];
        evidence.extend(inactive.iter().take(50).map(|u| {
            format!(
                "inactive: {} (last sign-in {})",
                u.email.as_str(),
                u.last_login_at.map_or("never".into(), day)
            )
        }));
        let status = if inactive.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        };
        findings.insert(InactiveAccounts, finding(status, evidence, Vec::new()));

        // API keys: every live key should expire.
        let live: Vec<_> = keys.iter().filter(|k| k.is_live(now)).collect();
        let unbounded: Vec<_> = live.iter().filter(|k| k.expires_at.is_none()).collect();
        let mut evidence = vec![format!(
            "{} live API keys, {} without an expiry",
            live.len(),
            unbounded.len()
        )];
        evidence.extend(unbounded.iter().take(50).map(|k| {
            format!(
                "no expiry: key '{}' ({}…), created {}",
                k.name.as_str(),
                k.display_prefix,
                day(k.created_at)
            )
        }));
        let status = if unbounded.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        };
        findings.insert(ApiKeyExpiry, finding(status, evidence, Vec::new()));

        // Failed sign-ins over the trend window, by day.
        let total: u64 = failed_by_day.values().sum();
        let mut evidence = vec![format!(
            "{total} failed sign-ins in the last {TREND_DAYS} days (each audited as auth.login.failed; repeated failures are delayed, then locked out)"
        )];
        evidence.extend(
            failed_by_day
                .iter()
                .map(|(d, n)| format!("{d}: {n} failed")),
        );
        findings.insert(FailedSignIns, finding(Status::Pass, evidence, Vec::new()));

        // The audit trail: verified now, and whether checkpoints are signed.
        let verified = self.deps.audit.verify(scope).await?;
        let signed = self.deps.audit.public_key().is_some();
        let mut evidence = vec![format!(
            "audit chain of {} events (seq {}–{}) and {} signed checkpoints verified {}",
            verified.events,
            verified.first_seq.unwrap_or(0),
            verified.last_seq.unwrap_or(0),
            verified.checkpoints,
            if verified.ok() {
                "intact"
            } else {
                "with a problem"
            }
        )];
        let mut gaps = Vec::new();
        let status = match (&verified.problem, signed) {
            (Some(problem), _) => {
                evidence.push(format!(
                    "first problem at seq {}: {} ({})",
                    problem.seq, problem.kind, problem.detail
                ));
                Status::Fail
            }
            (None, false) => {
                gaps.push("no checkpoint signing key is configured (audit.signing_key_file), so truncation of the trail cannot be detected".into());
                Status::Fail
            }
            (None, true) => Status::Pass,
        };
        evidence.push("on PostgreSQL the application role may only insert and read audit rows; a trigger refuses changes".into());
        findings.insert(AuditTrail, finding(status, evidence, gaps));

        // MFA: coverage of users and administrators, and the tenant's policy.
        let policy = tenant.settings.mfa_required;
        let admins_without: Vec<_> = admins
            .iter()
            .filter(|u| !enrolled.contains(&u.id))
            .collect();
        let users_with = active.iter().filter(|u| enrolled.contains(&u.id)).count();
        let mut evidence = vec![
            format!(
                "{users_with} of {} active users and {} of {} administrators sign in with an authenticator (TOTP)",
                active.len(),
                admins.len() - admins_without.len(),
                admins.len()
            ),
            format!("tenant policy settings.mfa_required = {}", policy.as_str()),
        ];
        evidence.extend(
            admins_without
                .iter()
                .take(50)
                .map(|u| format!("administrator without MFA: {}", u.email.as_str())),
        );
        let status = if policy == MfaRequirement::Off || !admins_without.is_empty() {
            Status::Fail
        } else {
            Status::Pass
        };
        findings.insert(Mfa, finding(status, evidence, Vec::new()));
        findings.insert(
            Sso,
            not_built("single sign-on (OIDC, SAML) and its enforcement"),
        );
        findings.insert(
            EncryptionAtRest,
            self.encryption_finding(&key_versions, now),
        );
        // Retention: the policy in effect, and when it was last enforced.
        let set_by_tenant = own_policy.is_some();
        let in_effect = own_policy.unwrap_or(self.deps.retention.defaults);
        let age =
            |days: Option<u32>| days.map_or("kept forever".to_owned(), |d| format!("{d} days"));
        let mut evidence = vec![
            format!(
                "policy ({}): conversations {}, memories {}, documents {}, usage records {}, audit events {} (platform minimum {} days)",
                if set_by_tenant {
                    "set by the tenant"
                } else {
                    "platform default"
                },
                age(in_effect.conversations_days),
                age(in_effect.memories_days),
                age(in_effect.documents_days),
                age(in_effect.usage_days),
                age(in_effect.effective_audit_days(self.deps.retention.audit_min_days)),
                self.deps.retention.audit_min_days
            ),
            format!("{holds} active legal holds"),
        ];
        let unbounded = [
            in_effect.conversations_days,
            in_effect.memories_days,
            in_effect.documents_days,
        ]
        .iter()
        .any(Option::is_none);
        let recent = last_run
            .as_ref()
            .is_some_and(|run| run.at > now - time::Duration::days(RUN_WITHIN_DAYS));
        match &last_run {
            Some(run) => evidence.push(format!(
                "last enforced {}: deleted {} conversations, {} memories, {} documents, {} usage records, {} audit events; kept {} under legal hold",
                day(run.at),
                run.counts.conversations,
                run.counts.memories,
                run.counts.documents,
                run.counts.usage_records,
                run.counts.audit_events,
                run.counts.held
            )),
            None => evidence.push("never enforced".into()),
        }
        let mut gaps = Vec::new();
        if unbounded {
            gaps.push("conversations, memories or documents have no maximum age".into());
        }
        if !recent {
            gaps.push(format!(
                "no enforcement run in the last {RUN_WITHIN_DAYS} days"
            ));
        }
        let status = if gaps.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        };
        findings.insert(Retention, finding(status, evidence, gaps));
        findings.insert(
            DataAccess,
            finding(
                Status::Pass,
                vec!["everything Karen holds about a user (profile, API keys, conversations, memories, uploaded documents, usage, their audit events) exports as one JSON document: GET /v1/users/{id}/export or karen user export, each recorded as user.export".into()],
                vec!["answering the request within the legal deadline is a process outside Karen".into()],
            ),
        );
        let mut erasure_evidence = vec![
            "a user is erased by POST /v1/users/{id}/erase or karen user erase: content deleted from every store and index, usage kept without naming them, audit events kept with the person pseudonymised (the chain still verifies), each recorded as user.erase".into(),
            format!("{} erasure(s) recorded in this tenant's audit trail", erasures.len()),
        ];
        if let Some(last) = erasures.last() {
            erasure_evidence.push(format!("the newest on {}", day(last.entry.at)));
        }
        findings.insert(
            DataErasure,
            finding(
                Status::Pass,
                erasure_evidence,
                vec!["copies outside Karen (backups, forwarded audit events) are the operator's to erase".into()],
            ),
        );
        let transport = if self.deps.compliance.transport_tls {
            finding(
                Status::Pass,
                vec!["karen serve terminates TLS itself (server.tls), with HSTS".into()],
                Vec::new(),
            )
        } else {
            finding(
                Status::NotEvidenced,
                vec!["karen serve speaks plain HTTP (server.tls is off)".into()],
                vec![
                    "TLS may terminate at a proxy in front of Karen, which Karen cannot see".into(),
                ],
            )
        };
        findings.insert(Transport, transport);

        let controls: Vec<Control> = specs(framework)
            .iter()
            .map(|(id, title, checks)| {
                let mut control = Control {
                    id,
                    title,
                    status: Status::Pass,
                    evidence: Vec::new(),
                    gaps: Vec::new(),
                };
                for check in *checks {
                    if let Some(found) = findings.get(check) {
                        control.status = control.status.max(found.status);
                        control.evidence.extend(found.evidence.iter().cloned());
                        control.gaps.extend(found.gaps.iter().cloned());
                    }
                }
                control
            })
            .collect();
        let mut summary = BTreeMap::new();
        for control in &controls {
            *summary.entry(control.status.as_str()).or_default() += 1;
        }
        Ok(Report {
            tenant_id: tenant.id.to_string(),
            tenant_slug: tenant.slug.as_str().to_owned(),
            framework,
            generated_at: now,
            summary,
            controls,
        })
    }
}
