//! `karen keys …`: the access-token signing key, and the keys of encryption
//! at rest (master key, per-tenant data keys).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use karen::Karen;
use karen::config::Config;
use karen_app::encryption::KeyManagement;
use karen_crypto::LocalKeyProvider;
use karen_domain::clock::{Clock, SystemClock};
use karen_domain::ports::{KeyProvider, Store};
use time::OffsetDateTime;

#[derive(Subcommand, Debug)]
pub(super) enum KeysCommand {
    /// Make a new signing key current; tokens signed by older keys stay valid until they expire.
    Rotate,
    /// Write a new random master key (base64 of 32 bytes, mode 0600) to --out; never overwrites.
    #[command(name = "generate-master")]
    GenerateMaster {
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-wrap every tenant's data keys under the master key in --new-key-file
    /// (one transaction per tenant; rerun to finish an interrupted run), then
    /// configure that file on every replica and restart.
    #[command(name = "rotate-master")]
    RotateMaster {
        #[arg(long)]
        new_key_file: PathBuf,
    },
    /// Make a new data key version for a tenant (id or slug), re-encrypt its
    /// content with it in batches, then retire the older versions.
    #[command(name = "rotate-tenant")]
    RotateTenant { tenant: String },
    /// List tenants with their data key versions, master key and ages.
    Status,
}

pub(super) async fn run(config: Option<Config>, command: KeysCommand) -> anyhow::Result<ExitCode> {
    if let KeysCommand::GenerateMaster { out } = &command {
        let provider = LocalKeyProvider::generate_file(out)?;
        println!(
            "master key {} written to {} (mode 0600); keep a copy apart from the data: without it the encrypted content cannot be read",
            provider.key_id(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let config = config.ok_or_else(|| anyhow::anyhow!("no configuration"))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let karen = Karen::open(config.clone(), clock.clone()).await?;
    let store: Arc<dyn Store> = karen.store.clone();
    let keys = KeyManagement::new(store, clock.clone(), karen.services.audit.clone());
    match command {
        KeysCommand::GenerateMaster { .. } => {}
        KeysCommand::Rotate => {
            let kid = karen.services.auth.rotate_signing_key().await?;
            println!(
                "new signing key {kid} is current; tokens signed by earlier keys remain valid until they expire"
            );
        }
        KeysCommand::RotateMaster { new_key_file } => {
            let new_master = LocalKeyProvider::from_file(&new_key_file)?;
            let total = keys
                .rotate_master(&new_master, &mut |tenant, rewrapped| {
                    println!("{}: {rewrapped} data key versions re-wrapped", tenant.slug);
                })
                .await?;
            println!(
                "{total} data key versions re-wrapped under master key {}; now set encryption.master_key_file = {} \
                 (or KAREN_MASTER_KEY) on every replica and restart",
                new_master.key_id(),
                new_key_file.display()
            );
        }
        KeysCommand::RotateTenant { tenant } => {
            let found = karen.services.tenants.find(&tenant).await?;
            let mut done = 0u64;
            let report = keys
                .rotate_tenant(found.id, config.encryption.rotation_batch, &mut |batch| {
                    done += batch.scanned;
                    if batch.scanned > 0 {
                        println!(
                            "{}: {} rows checked in {}, {} re-encrypted ({done} checked so far)",
                            found.slug, batch.scanned, batch.column, batch.resealed
                        );
                    }
                })
                .await?;
            if report.resumed {
                println!(
                    "{}: resumed the unfinished rotation to version {}",
                    found.slug, report.version
                );
            }
            println!(
                "tenant {}: data key version {} is current; {} of {} values re-encrypted; {} older versions retired",
                found.slug, report.version, report.resealed, report.scanned, report.retired
            );
        }
        KeysCommand::Status => {
            let now = clock.now();
            let configured = karen
                .store
                .encryption()
                .map(|e| e.master_key_id().to_owned());
            match &configured {
                Some(id) => println!("master key: {id}"),
                None => println!("encryption at rest is switched off"),
            }
            for entry in keys.status().await? {
                if entry.versions.is_empty() {
                    println!("{}  no data key yet", entry.tenant.slug);
                }
                for key in &entry.versions {
                    let state = match key.retired_at {
                        Some(at) => format!("retired {} ago", age(now, at)),
                        None => "current".to_owned(),
                    };
                    let elsewhere = if configured.as_deref() == Some(key.master_key_id.as_str()) {
                        ""
                    } else {
                        "  (not under the configured master key)"
                    };
                    println!(
                        "{}  v{}  {state}  master {}{elsewhere}  created {} ago",
                        entry.tenant.slug,
                        key.version,
                        key.master_key_id,
                        age(now, key.created_at)
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `3d 4h`, `5h 2m`, `40s`: how long ago `at` was.
fn age(now: OffsetDateTime, at: OffsetDateTime) -> String {
    let secs = (now - at).whole_seconds().max(0);
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m")
    } else {
        format!("{secs}s")
    }
}
