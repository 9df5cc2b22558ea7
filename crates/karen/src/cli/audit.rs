//! `karen audit`: verify the tamper-evident audit trail, sign checkpoints,
//! make a checkpoint signing key.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use karen::Karen;
use karen::config::Config;
use karen_domain::TenantId;
use karen_domain::audit::hex;
use karen_domain::clock::SystemClock;
use karen_domain::ports::AuditSigner as _;

#[derive(Subcommand, Debug)]
pub(super) enum AuditCommand {
    /// Check every hash, link and checkpoint signature; report the first bad
    /// sequence number of each tenant (and of the platform chain); exit 1 if
    /// any chain fails.
    Verify {
        /// One tenant (id or slug); all tenants and the platform chain if absent.
        #[arg(long, conflicts_with = "platform")]
        tenant: Option<String>,
        /// Only the platform chain (operator actions outside any tenant).
        #[arg(long)]
        platform: bool,
        /// Print the reports as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Sign a checkpoint of each tenant's newest event (those that grew since
    /// their last one), and of the platform chain's when no tenant is named.
    Checkpoint {
        /// One tenant (id or slug); all tenants if absent.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Create a new checkpoint signing key file (mode 0600) for audit.signing_key_file.
    Keygen {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

async fn tenant_id(karen: &Karen, tenant: Option<&str>) -> anyhow::Result<Option<TenantId>> {
    match tenant {
        Some(t) => Ok(Some(karen.services.tenants.find(t).await?.id)),
        None => Ok(None),
    }
}

pub(super) async fn run(config: &Config, command: AuditCommand) -> anyhow::Result<ExitCode> {
    if let AuditCommand::Keygen { out } = &command {
        if out.exists() {
            anyhow::bail!("{} exists; refusing to overwrite a key", out.display());
        }
        let signer = karen_crypto::FileAuditSigner::load_or_create(out, true)?;
        println!(
            "wrote {} (key id {}, public key {})",
            out.display(),
            signer.key_id(),
            hex(signer.public_key())
        );
        return Ok(ExitCode::SUCCESS);
    }
    let karen = Karen::open(config.clone(), Arc::new(SystemClock)).await?;
    match command {
        AuditCommand::Verify {
            tenant,
            platform,
            json,
        } => {
            let only = tenant_id(&karen, tenant.as_deref()).await?;
            let started = std::time::Instant::now();
            let mut reports: Vec<(String, karen_app::audit::VerifyReport)> = Vec::new();
            if !platform {
                for (tenant, report) in karen::audit::verify(&karen.services, only).await? {
                    reports.push((tenant.slug.to_string(), report));
                }
            }
            if only.is_none() {
                let report = karen::audit::verify_platform(&karen.services).await?;
                reports.push(("(platform)".to_owned(), report));
            }
            let mut failed = false;
            for (name, report) in &reports {
                failed |= !report.ok();
                if json {
                    println!("{}", serde_json::to_string(report)?);
                    continue;
                }
                match &report.problem {
                    None => println!(
                        "{name}: ok ({} events, {} checkpoints)",
                        report.events, report.checkpoints
                    ),
                    Some(problem) => println!(
                        "{name}: FAILED at sequence {} ({}): {}",
                        problem.seq, problem.kind, problem.detail
                    ),
                }
            }
            if !json {
                eprintln!(
                    "verified {} chain(s) in {:.2}s",
                    reports.len(),
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        AuditCommand::Checkpoint { tenant } => {
            let only = tenant_id(&karen, tenant.as_deref()).await?;
            let written = karen::audit::checkpoint_all(&karen.services, only).await?;
            for checkpoint in &written {
                println!(
                    "{}: checkpoint at {} ({}) signed by {}",
                    checkpoint.tenant_id,
                    checkpoint.seq,
                    hex(&checkpoint.hash),
                    checkpoint.key_id
                );
            }
            if written.is_empty() {
                println!("nothing new to sign (or no signing key configured)");
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Keygen { .. } => Ok(ExitCode::SUCCESS),
    }
}
