//! The command line: what each command is, in one line each (`karen --help`).

mod admin;
mod audit;
mod index;
mod insights;
mod keys;
mod ops;
mod report;
mod retention;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Karen: a self-hosted, multi-tenant AI-assistant platform.
#[derive(Parser, Debug)]
#[command(name = "karen", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./karen.toml when present). KAREN_* variables override it.
    #[arg(long, global = true, env = "KAREN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (embedded SQLite and in-process cache unless configured otherwise).
    Serve,
    /// Apply, revert, inspect or verify database migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Create, list, show, suspend, resume or delete tenants.
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Create, list, disable or enable users of a tenant.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Create, list or revoke API keys of a tenant.
    #[command(subcommand)]
    Apikey(admin::ApiKeyCommand),
    /// Manage platform operator keys (they create and remove tenants).
    #[command(subcommand, name = "operator-key")]
    OperatorKey(admin::OperatorKeyCommand),
    /// Rebuild or check the search indexes (vector and full text) from the database.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Import documents into a tenant.
    #[command(subcommand)]
    Doc(index::DocCommand),
    /// Verify the tamper-evident audit trail, sign checkpoints, make a signing key.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Compliance reports (SOC 2, GDPR, HIPAA) from Karen's own state.
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Enforce retention policies now (`run [--tenant T] [--dry-run]`).
    #[command(subcommand)]
    Retention(retention::RetentionCommand),
    /// Rotate the access-token signing key; manage the keys of encryption at rest
    /// (generate or rotate the master key, rotate a tenant's data key, status).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Check the configuration and print it with secrets redacted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the OpenAPI 3.1 document of the HTTP API.
    Openapi,
    /// Print a running server's insight report: slowest routes, slow queries,
    /// cache hit ratios, providers, rejections, spending and recommendations
    /// (operator key in KAREN_OPERATOR_TOKEN).
    Insights(insights::InsightsArgs),
}

#[derive(Subcommand, Debug)]
enum MigrateCommand {
    /// Apply every pending migration and grant the application role (PostgreSQL).
    Up,
    /// Revert migrations newer than --to (default: revert the newest one).
    Down {
        /// Revert down to this version (0 reverts everything).
        #[arg(long)]
        to: Option<i64>,
    },
    /// List migrations and whether each is applied.
    Status,
    /// Apply up, down, up on a scratch database and compare schemas.
    Verify,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the effective configuration and print it (passwords redacted); non-zero exit if invalid.
    Check,
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let path = cli.config.as_deref();
    match cli.command {
        Command::Config(ConfigCommand::Check) => ops::config_check(path),
        Command::Openapi => {
            println!("{}", karen_http::openapi_document().to_pretty_json()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => ops::serve(ops::load_for_server(path)?).await,
        Command::Migrate(MigrateCommand::Up) => ops::migrate_up(&ops::load(path)?).await,
        Command::Migrate(MigrateCommand::Down { to }) => {
            ops::migrate_down(&ops::load(path)?, to).await
        }
        Command::Migrate(MigrateCommand::Status) => ops::migrate_status(&ops::load(path)?).await,
        Command::Migrate(MigrateCommand::Verify) => ops::migrate_verify(&ops::load(path)?).await,
        Command::Keys(command @ keys::KeysCommand::GenerateMaster { .. }) => {
            keys::run(None, command).await
        }
        Command::Keys(command) => keys::run(Some(ops::load(path)?), command).await,
        Command::Tenant(command) => admin::tenant(&ops::load(path)?, command).await,
        Command::User(command) => admin::user(&ops::load(path)?, command).await,
        Command::Apikey(command) => admin::api_key(&ops::load(path)?, command).await,
        Command::OperatorKey(command) => admin::operator_key(&ops::load(path)?, command).await,
        Command::Index(command) => index::index(&ops::load(path)?, command).await,
        Command::Doc(command) => index::doc(&ops::load(path)?, command).await,
        Command::Audit(command) => audit::run(&ops::load(path)?, command).await,
        Command::Report(command) => report::run(&ops::load(path)?, command).await,
        Command::Retention(command) => retention::run(&ops::load(path)?, command).await,
        Command::Insights(args) => insights::run(&ops::load(path)?, args).await,
    }
}
