//! `karen report compliance`: a framework's controls with their status and
//! the evidence Karen holds, for one tenant or all of them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use karen::Karen;
use karen::config::Config;
use karen_app::compliance::{Format, Framework, render};
use karen_domain::clock::SystemClock;

#[derive(Subcommand, Debug)]
pub(super) enum ReportCommand {
    /// Each control of the framework: status (pass, fail, not_evidenced),
    /// evidence from Karen's own state, and what Karen cannot evidence.
    Compliance {
        /// soc2, gdpr or hipaa.
        #[arg(long)]
        framework: String,
        /// One tenant (id or slug); all tenants if absent.
        #[arg(long)]
        tenant: Option<String>,
        /// json, html or csv.
        #[arg(long, default_value = "json")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) async fn run(config: &Config, command: ReportCommand) -> anyhow::Result<ExitCode> {
    let ReportCommand::Compliance {
        framework,
        tenant,
        format,
        out,
    } = command;
    let framework = Framework::parse(&framework)?;
    let format = Format::parse(&format)?;
    let karen = Karen::open(config.clone(), Arc::new(SystemClock)).await?;
    let only = match tenant.as_deref() {
        Some(t) => Some(karen.services.tenants.find(t).await?.id),
        None => None,
    };
    let reports = karen::audit::compliance_reports(&karen.services, only, framework).await?;
    let text = render(&reports, format)?;
    match out {
        Some(path) => {
            std::fs::write(&path, text)?;
            eprintln!("wrote {} ({} tenants)", path.display(), reports.len());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
