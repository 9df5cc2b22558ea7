//! Audit trail benchmark: the append rate with the hash chain (events/s, in
//! transactions of `--batch` events, as services append them) and the time
//! `karen audit verify` takes over the chain, through the same store and
//! service code Karen runs.
//!
//! `cargo run --release -p karen-bench --bin audit-bench -- --events 1000000`
//! (SQLite in a temporary directory; add `--postgres-url postgres://postgres@127.0.0.1/bench`
//! for PostgreSQL: an existing, scratch database, migrated as its owner).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use karen_app::audit::{AuditPolicy, AuditTrail, Record};
use karen_domain::clock::{Clock, SystemClock};
use karen_domain::ports::Store;
use karen_domain::tenant::{Tenant, TenantSettings, TenantStatus};
use karen_domain::values::{PlanName, Slug, TenantName};
use karen_domain::{Actor, SystemReason, TenantId, TenantScope, UserId};
use karen_sql::{SqlOptions, SqlStore};

/// Audit trail benchmark (append rate, verification time).
#[derive(Parser, Debug)]
struct Args {
    /// Events to append (and then verify).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Events per transaction.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Sign a checkpoint every this many events.
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every: u64,
    /// Also (or only, with --no-sqlite) measure PostgreSQL at this owner URL.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Skip SQLite.
    #[arg(long)]
    no_sqlite: bool,
}

async fn run(name: &str, url: &str, args: &Args) -> anyhow::Result<()> {
    let store = Arc::new(
        SqlStore::connect(&SqlOptions::new(url))
            .await
            .context("connecting")?,
    );
    store.migrate_up().await.context("migrating")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let id = TenantId::generate();
    let tenant = Tenant {
        id,
        slug: Slug::parse(&format!("bench-{}", &id.to_string()[..8]))?,
        name: TenantName::parse("Audit bench")?,
        plan: PlanName::parse("free")?,
        status: TenantStatus::Active,
        settings: TenantSettings::default(),
        created_at: now,
        updated_at: now,
    };
    let port: Arc<dyn Store> = store.clone();
    let mut platform = port.platform().await?;
    platform.insert_tenant(&tenant).await?;
    platform.commit().await?;
    let key_path = std::env::temp_dir().join(format!("karen-audit-bench-{}.key", uuid_suffix(id)));
    let signer = karen_crypto::FileAuditSigner::load_or_create(&key_path, true)?;
    let trail = AuditTrail::new(
        port.clone(),
        clock,
        Some(Arc::new(signer)),
        AuditPolicy {
            checkpoint_every: args.checkpoint_every,
            checkpoint_interval: None,
        },
    );
    let scope = TenantScope::system(id, SystemReason::Cli);
    let actor = Actor::User(UserId::generate());
    let started = Instant::now();
    let mut written = 0;
    while written < args.events {
        let mut tx = port.tenant(scope).await?;
        let upto = (written + args.batch).min(args.events);
        for n in written..upto {
            let record = Record::new("bench.event")
                .target("bench", n)
                .after(&serde_json::json!({ "n": n }));
            trail.record(&mut *tx, actor, record).await?;
        }
        tx.commit().await?;
        written = upto;
    }
    let append = started.elapsed();
    println!(
        "{name}: appended {} events in {:.2}s: {:.0} events/s ({} per transaction)",
        args.events,
        append.as_secs_f64(),
        args.events as f64 / append.as_secs_f64(),
        args.batch
    );
    verify(name, "", &trail, scope).await?;
    // Right after a bulk load PostgreSQL's planner statistics still describe
    // an almost empty table (autovacuum refreshes them later), and its plan
    // for the paged read sorts every remaining row: measure again as
    // autovacuum would leave it.
    if let Some(pool) = store.postgres_pool() {
        sqlx::query("ANALYZE audit_events").execute(pool).await?;
        verify(name, " after ANALYZE", &trail, scope).await?;
    }
    let _ = std::fs::remove_file(key_path);
    store.close().await;
    Ok(())
}

async fn verify(
    name: &str,
    when: &str,
    trail: &AuditTrail,
    scope: TenantScope,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = trail.verify(scope).await?;
    let verify = started.elapsed();
    println!(
        "{name}: verified {} events and {} checkpoints{when} in {:.2}s ({:.0} events/s): {}",
        report.events,
        report.checkpoints,
        verify.as_secs_f64(),
        report.events as f64 / verify.as_secs_f64(),
        if report.ok() { "ok" } else { "FAILED" }
    );
    Ok(())
}

fn uuid_suffix(id: TenantId) -> String {
    id.to_string().replace('-', "")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    if !args.no_sqlite {
        let dir = std::env::temp_dir().join(format!("karen-audit-bench-{}", std::process::id()));
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let result = run("sqlite", &url, &args).await;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    if let Some(url) = &args.postgres_url {
        run("postgres", url, &args).await?;
    }
    Ok(())
}
