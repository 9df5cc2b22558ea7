//! `karen index` (rebuild and check the search indexes) and `karen doc`
//! (import documents), with progress bars on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use karen::Karen;
use karen::config::Config;
use karen::maintenance::{self, FileOutcome, ImportOptions, IndexLock};
use karen_app::memory::{Drift, Progress};
use karen_domain::clock::SystemClock;

#[derive(Subcommand, Debug)]
pub(super) enum IndexCommand {
    /// Rebuild the vector and text indexes from the database (re-embedding only what the cache lacks).
    Rebuild {
        /// One tenant (id or slug); all tenants if absent.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Report drift between the indexes and the database; exit 1 if any (unless repaired).
    Check {
        /// One tenant (id or slug); all tenants if absent.
        #[arg(long)]
        tenant: Option<String>,
        /// Write what is missing, remove what is orphaned, drop unused vector spaces.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum DocCommand {
    /// Import every document (text, Markdown, HTML, PDF) of a directory; exit 1 if any was refused.
    Import {
        /// The directory.
        dir: PathBuf,
        /// The tenant (id or slug).
        #[arg(long)]
        tenant: String,
        /// Roles that may read the documents, comma-separated (default: the whole tenant).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Import subdirectories too.
        #[arg(long)]
        recursive: bool,
        /// Record this user (id or email) as the uploader.
        #[arg(long)]
        user: Option<String>,
    },
}

/// A progress bar on stderr (drawn only on a terminal), a new one for each
/// tenant or directory.
struct Bar {
    bar: std::sync::Mutex<ProgressBar>,
    unit: &'static str,
}

impl Bar {
    fn new(unit: &'static str) -> Self {
        Self {
            bar: std::sync::Mutex::new(ProgressBar::hidden()),
            unit,
        }
    }

    fn current(&self) -> ProgressBar {
        self.bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: u64) {
        let bar = ProgressBar::new(total);
        let template = format!(
            "{{prefix}} [{{bar:40}}] {{pos}}/{{len}} {} ({{eta}})",
            self.unit
        );
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        *self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bar;
    }

    fn advance(&self, by: u64) {
        self.current().inc(by);
    }

    fn end(&self) {
        self.current().finish_and_clear();
    }
}

async fn open(config: &Config) -> anyhow::Result<(IndexLock, Karen)> {
    let lock = IndexLock::acquire(config)?;
    let karen = Karen::open(config.clone(), Arc::new(SystemClock)).await?;
    Ok((lock, karen))
}

fn describe(drift: &Drift) -> String {
    let mut what = format!("{} index ({}", drift.index, drift.backend);
    if let Some(space) = &drift.space {
        what.push_str(&format!(", {} × {}", space.model, space.dims));
    }
    what.push(')');
    if drift.is_clean() {
        return format!("{what}: ok");
    }

    let mut problems = Vec::new();
    if !drift.missing.is_empty() {
        problems.push(format!("{} missing", drift.missing.len()));
    }
    if !drift.orphaned.is_empty() {
        problems.push(format!("{} orphaned", drift.orphaned.len()));
    }
    if drift.rebuild_needed {
        problems.push("reset after damage, needs a rebuild".to_owned());
    }
    format!("{what}: {}", problems.join(", "))
}

pub(super) async fn index(config: &Config, command: IndexCommand) -> anyhow::Result<ExitCode> {
    let (_lock, karen) = open(config).await?;
    let progress = Bar::new("entries");
    match command {
        IndexCommand::Rebuild { tenant } => {
            for (tenant, report) in
                maintenance::rebuild(&karen, tenant.as_deref(), &progress).await?
            {
                println!(
                    "{}: rebuilt {} memories and {} passages with {} ({} vectors; {} texts embedded, the rest from the cache)",
                    tenant.slug,
                    report.memories,
                    report.chunks,
                    report.model,
                    report.vectors,
                    report.embedded
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        IndexCommand::Check { tenant, repair } => {
            let mut drifted = false;
            let reports = maintenance::check(&karen, tenant.as_deref(), repair, &progress).await?;
            for (tenant, report) in reports {
                println!(
                    "{}: {} entries in the database",
                    tenant.slug, report.entries
                );
                for drift in [&report.text, &report.vector] {
                    println!("  {}", describe(drift));
                    for key in drift.missing.iter().take(20) {
                        println!("    missing  {key}");
                    }
                    for key in drift.orphaned.iter().take(20) {
                        println!("    orphaned {key}");
                    }
                }
                for space in &report.stale_spaces {
                    println!(
                        "  vector space {} × {}: no longer used by the tenant",
                        space.model, space.dims
                    );
                }
                if report.repaired {
                    println!("  repaired");
                } else if !report.is_clean() {
                    drifted = true;
                }
            }
            if drifted {
                eprintln!(
                    "drift found; run `karen index check --repair` (or `karen index rebuild`)"
                );
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) async fn doc(config: &Config, command: DocCommand) -> anyhow::Result<ExitCode> {
    let DocCommand::Import {
        dir,
        tenant,
        roles,
        recursive,
        user,
    } = command;
    let (_lock, karen) = open(config).await?;
    let options = ImportOptions {
        dir,
        tenant,
        roles,
        recursive,
        user,
    };
    let report = maintenance::import_documents(&karen, &options, &Bar::new("files")).await?;
    for (path, outcome) in &report.files {
        match outcome {
            FileOutcome::Imported { document, chunks } => {
                println!(
                    "imported  {}  document {document}, {chunks} passages",
                    path.display()
                );
            }
            FileOutcome::Skipped(reason) => println!("skipped   {}  {reason}", path.display()),
            FileOutcome::Failed(reason) => println!("refused   {}  {reason}", path.display()),
        }
    }
    println!(
        "{} imported, {} refused, {} skipped",
        report.imported(),
        report.failed(),
        report.skipped()
    );
    Ok(if report.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
