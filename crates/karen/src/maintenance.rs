//! What the `karen index` and `karen doc` commands do, apart from printing:
//! rebuilding and checking the search indexes of one tenant or all of them,
//! and importing a directory of documents through the same document service
//! the API uses. Kept in the library so that tests drive them directly.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use karen_app::Authority;
use karen_app::memory::{CheckReport, DocumentUpload, Progress, RebuildReport};
use karen_domain::documents::DocumentFormat;
use karen_domain::page::{MAX_LIMIT, PageRequest};
use karen_domain::tenant::{Tenant, TenantStatus};
use karen_domain::{DocumentId, SystemReason, TenantScope};

use crate::Karen;
use crate::config::Config;
use crate::indexes::IndexBackend;

/// Holds the lock on the embedded search indexes of a data directory: they
/// belong to one process, so `karen serve` and the commands that write them
/// (`index rebuild`, `index check --repair`, `doc import`) take it first.
#[derive(Debug)]
pub struct IndexLock {
    _file: Option<File>,
}

impl IndexLock {
    /// Takes the lock when an index is embedded (nothing to lock for Milvus
    /// and PostgreSQL); fails at once when another process holds it.
    pub fn acquire(config: &Config) -> anyhow::Result<Self> {
        let memory = &config.memory;
        let postgres = config.database_url().starts_with("postgres");
        let embedded = memory.vector_backend(config.mode) == Ok(IndexBackend::Embedded)
            || memory.text_backend(postgres) == Ok(IndexBackend::Embedded);
        if !embedded {
            return Ok(Self { _file: None });
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let path = config.data_dir.join("search-indexes.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: Some(file) }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another karen process (karen serve, or another command) is using the embedded search \
                 indexes in {}; stop it first (or upload documents through the API)",
                config.data_dir.display()
            ),
            Err(std::fs::TryLockError::Error(error)) => {
                Err(error).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// The tenant named by id or slug, or every tenant not being deleted.
pub async fn tenants(karen: &Karen, tenant: Option<&str>) -> anyhow::Result<Vec<Tenant>> {
    let service = &karen.services.tenants;
    if let Some(tenant) = tenant {
        return Ok(vec![service.find(tenant).await?]);
    }
    let mut all = Vec::new();
    let mut page = PageRequest {
        after: None,
        limit: MAX_LIMIT,
    };
    loop {
        let result = service.list(&page).await?;
        all.extend(
            result
                .items
                .into_iter()
                .filter(|t| t.status != TenantStatus::Deleting),
        );
        match result.next_cursor.and_then(|c| c.parse().ok()) {
            Some(after) => page.after = Some(after),
            None => return Ok(all),
        }
    }
}

/// Rebuilds the search indexes of `tenant` (or of every tenant).
pub async fn rebuild(
    karen: &Karen,
    tenant: Option<&str>,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<(Tenant, RebuildReport)>> {
    let mut reports = Vec::new();
    for tenant in tenants(karen, tenant).await? {
        let report = karen
            .services
            .memory
            .maintenance
            .rebuild(tenant.id, progress)
            .await
            .with_context(|| format!("rebuilding the indexes of tenant {}", tenant.slug))?;
        reports.push((tenant, report));
    }
    Ok(reports)
}

/// Checks (and with `repair`, repairs) the search indexes of `tenant` (or of
/// every tenant).
pub async fn check(
    karen: &Karen,
    tenant: Option<&str>,
    repair: bool,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<(Tenant, CheckReport)>> {
    let mut reports = Vec::new();
    for tenant in tenants(karen, tenant).await? {
        let report = karen
            .services
            .memory
            .maintenance
            .check(tenant.id, repair, progress)
            .await
            .with_context(|| format!("checking the indexes of tenant {}", tenant.slug))?;
        reports.push((tenant, report));
    }
    Ok(reports)
}

/// What `karen doc import` does.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub dir: PathBuf,
    /// Tenant id or slug.
    pub tenant: String,
    /// Roles that may read the documents (empty: the whole tenant).
    pub roles: Vec<String>,
    /// Into subdirectories too.
    pub recursive: bool,
    /// The uploader recorded (id or email); none: the platform.
    pub user: Option<String>,
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// Stored and indexed.
    Imported { document: DocumentId, chunks: u32 },
    /// Not a document format Karen reads (by its extension): left alone.
    Skipped(String),
    /// Refused (unreadable, corrupt, empty, too large): nothing of it was stored.
    Failed(String),
}

/// Every file an import looked at, in path order.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub files: Vec<(PathBuf, FileOutcome)>,
}

impl ImportReport {
    fn count(&self, wanted: fn(&FileOutcome) -> bool) -> usize {
        self.files.iter().filter(|(_, o)| wanted(o)).count()
    }

    pub fn imported(&self) -> usize {
        self.count(|o| matches!(o, FileOutcome::Imported { .. }))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, FileOutcome::Skipped(_)))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, FileOutcome::Failed(_)))
    }
}

/// The files under `dir` (hidden ones excluded), sorted.
fn files_in(dir: &Path, recursive: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .with_context(|| format!("reading the directory {}", current.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", current.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                if recursive {
                    pending.push(path);
                }
            } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Imports every supported file of a directory into a tenant, each through
/// the document service (its own transaction: a refused file leaves nothing
/// behind, and does not stop the others).
pub async fn import_documents(
    karen: &Karen,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> anyhow::Result<ImportReport> {
    let tenant = karen.services.tenants.find(&options.tenant).await?;
    let scope = TenantScope::system(tenant.id, SystemReason::Cli);
    let uploaded_by = match &options.user {
        Some(user) => Some(
            karen
                .services
                .users
                .find(Authority::platform(scope), user)
                .await
                .with_context(|| format!("--user {user}"))?
                .id,
        ),
        None => None,
    };
    let files = files_in(&options.dir, options.recursive)?;
    let limit = karen.config.memory.max_document_bytes;
    let documents = &karen.services.memory.documents;
    let mut report = ImportReport::default();
    progress.begin(tenant.slug.as_ref(), files.len() as u64);
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let outcome = if DocumentFormat::from_file_name(&name).is_none() {
            FileOutcome::Skipped(
                "not a supported document type (.txt, .md, .html, .pdf)".to_owned(),
            )
        } else {
            match read_limited(&path, limit) {
                Err(reason) => FileOutcome::Failed(reason),
                Ok(bytes) => {
                    let upload = DocumentUpload {
                        bytes,
                        media_type: None,
                        file_name: Some(name),
                        title: None,
                        access_roles: options.roles.clone(),
                    };
                    match documents
                        .import(Authority::platform(scope), uploaded_by, upload)
                        .await
                    {
                        Ok(document) => FileOutcome::Imported {
                            document: document.id,
                            chunks: document.chunk_count,
                        },
                        Err(error) => FileOutcome::Failed(error.to_string()),
                    }
                }
            }
        };
        report.files.push((path, outcome));
        progress.advance(1);
    }
    progress.end();
    Ok(report)
}

/// The bytes of a file no larger than `limit`.
fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    if size > limit as u64 {
        return Err(format!(
            "the document is {size} bytes; at most {limit} bytes are accepted (memory.max_document_bytes)"
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_embedded_indexes_are_locked_to_one_holder() {
        let dir =
            std::env::temp_dir().join(format!("karen-lock-{}", uuid::Uuid::now_v7().simple()));
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let held = IndexLock::acquire(&config).unwrap();
        let refused = IndexLock::acquire(&config).unwrap_err();
        assert!(refused.to_string().contains("stop it first"), "{refused}");
        drop(held);
        IndexLock::acquire(&config).unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
