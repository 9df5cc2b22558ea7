//! `karen retention`: enforce retention policies now.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use karen::Karen;
use karen::config::Config;
use karen_domain::clock::SystemClock;

#[derive(Subcommand, Debug)]
pub(super) enum RetentionCommand {
    /// Delete what is older than each tenant's policy and under no legal hold;
    /// print the counts per tenant.
    Run {
        /// One tenant (id or slug); all tenants if absent.
        #[arg(long)]
        tenant: Option<String>,
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the reports as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn run(config: &Config, command: RetentionCommand) -> anyhow::Result<ExitCode> {
    // Deleting memories and documents writes the search indexes: the embedded
    // ones belong to one process (refused while `karen serve` holds them).
    let _indexes = karen::maintenance::IndexLock::acquire(config)?;
    let karen = Karen::open(config.clone(), Arc::new(SystemClock)).await?;
    let RetentionCommand::Run {
        tenant,
        dry_run,
        json,
    } = command;
    let only = match tenant.as_deref() {
        Some(t) => Some(karen.services.tenants.find(t).await?.id),
        None => None,
    };
    let reports = karen::retention::run(&karen.services, only, dry_run).await?;
    for (tenant, report) in &reports {
        if json {
            println!("{}", serde_json::to_string(report)?);
            continue;
        }
        let c = &report.counts;
        println!(
            "{}{}: conversations {}, memories {}, documents {}, usage records {}, audit events {}, kept under legal hold {}{}",
            tenant.slug,
            if report.dry_run { " (dry run)" } else { "" },
            c.conversations,
            c.memories,
            c.documents,
            c.usage_records,
            c.audit_events,
            c.held,
            report
                .audit_skipped
                .as_ref()
                .map(|why| format!("; audit events kept: {why}"))
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}
