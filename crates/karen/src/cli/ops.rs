//! Server and database operations: serve, migrate, config check.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use karen::config::Config;
use karen::traces::Telemetry;
use karen::{Karen, logging, migration_store};
use karen_domain::clock::SystemClock;
use karen_sql::SqlStore;
use secrecy::ExposeSecret;

/// Loads and validates the configuration for the server, logging and
/// tracing as configured (the telemetry is shut down after serving).
pub(super) fn load_for_server(path: Option<&Path>) -> anyhow::Result<(Config, Telemetry)> {
    let config = Config::load(path)?;
    let telemetry = logging::init(&config)?;
    Ok((config, telemetry))
}

/// Loads and validates the configuration for an administration command: its
/// output is the command's, so only warnings and errors are logged, to stderr.
pub(super) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let config = Config::load(path)?;
    let quiet = karen::config::LogConfig {
        level: "warn,sqlx=error".into(),
        ..config.log.clone()
    };
    logging::init_with_writer(&quiet, std::io::stderr);
    Ok(config)
}

/// `karen config check`
pub(super) fn config_check(path: Option<&Path>) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            print!("{}", config.to_redacted_toml());
            eprintln!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprint!("{error}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `karen serve`
pub(super) async fn serve((config, telemetry): (Config, Telemetry)) -> anyhow::Result<ExitCode> {
    let result = serve_until_stopped(&config).await;
    // The spans of the last requests are still buffered: send them.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn serve_until_stopped(config: &Config) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    // The embedded search indexes belong to this process while it serves.
    let _indexes = karen::maintenance::IndexLock::acquire(config)?;
    let karen = Karen::open(config.clone(), Arc::new(SystemClock)).await?;
    if let Some(key) = karen.services.auth.bootstrap_operator_key().await? {
        // Printed once, straight to the terminal (not through the log pipeline).
        eprintln!();
        eprintln!("  First start: a platform operator key was created. It is shown only now.");
        eprintln!("  Use it to create tenants (POST /v1/platform/tenants) — keep it secret:");
        eprintln!();
        eprintln!("      {}", key.expose_secret());
        eprintln!();
        eprintln!("  Lost it? On this machine run: karen operator-key create --name <name>");
        eprintln!();
    }
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(
        %address,
        backend = karen.services.health.backend(),
        startup_ms = started.elapsed().as_millis() as u64,
        "karen is listening"
    );
    karen.serve(listener, karen::shutdown_signal()).await?;
    tracing::info!("karen stopped");
    Ok(ExitCode::SUCCESS)
}

/// `karen migrate up`
pub(super) async fn migrate_up(config: &Config) -> anyhow::Result<ExitCode> {
    karen::migrate_up(config).await?;
    println!(
        "migrations applied; application role '{}' granted (PostgreSQL)",
        config.database.app_role
    );
    Ok(ExitCode::SUCCESS)
}

/// `karen migrate down`
pub(super) async fn migrate_down(config: &Config, to: Option<i64>) -> anyhow::Result<ExitCode> {
    let store = migration_store(config).await?;
    let status = store.migration_status().await?;
    let target = match to {
        Some(target) => target,
        None => {
            let applied: Vec<i64> = status
                .iter()
                .filter(|m| m.applied)
                .map(|m| m.version)
                .collect();
            let Some(newest) = applied.last() else {
                println!("nothing to revert");
                return Ok(ExitCode::SUCCESS);
            };
            applied
                .iter()
                .rev()
                .nth(1)
                .copied()
                .unwrap_or(0)
                .min(*newest)
        }
    };
    store.migrate_down(target).await?;
    println!("reverted migrations newer than {target}");
    Ok(ExitCode::SUCCESS)
}

/// `karen migrate status`
pub(super) async fn migrate_status(config: &Config) -> anyhow::Result<ExitCode> {
    let store = migration_store(config).await?;
    let status = store.migration_status().await?;
    let mut pending = 0;
    for migration in &status {
        let state = if migration.applied {
            "applied"
        } else {
            "pending"
        };
        pending += usize::from(!migration.applied);
        println!(
            "{:>6}  {:<8}  {}",
            migration.version, state, migration.description
        );
    }
    println!("{} applied, {pending} pending", status.len() - pending);
    Ok(ExitCode::SUCCESS)
}

/// `karen migrate verify`
pub(super) async fn migrate_verify(config: &Config) -> anyhow::Result<ExitCode> {
    let url = match config.database.migration_url.clone() {
        Some(url) => url,
        None => config.database_url(),
    };
    let report = SqlStore::verify_on_scratch(&url).await?;
    if report.problems.is_empty() {
        println!(
            "ok: {} migration(s) applied up → down → up on a scratch database; {} schema objects identical; tenancy checks pass",
            report.migrations, report.objects
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for problem in &report.problems {
            println!("problem: {problem}");
        }
        Ok(ExitCode::FAILURE)
    }
}
