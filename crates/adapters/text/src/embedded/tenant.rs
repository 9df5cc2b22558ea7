//! One tenant's index on disk: opening it, resetting it when it is missing or
//! damaged, its writer, and removing it.
//!
//! Layout under the tenant's directory: `text/index/` holds the tantivy index,
//! `text/rebuild-needed` exists from a reset until the caller reports that it
//! rebuilt the index from the SQL store ([`TenantSlot::mark_rebuilt`]).
//!
//! Crash safety comes from tantivy's commit: segment files are written and
//! synced first, then `meta.json` is replaced atomically (temporary file,
//! fsync, rename), and we fsync the directory after each commit so that the
//! rename itself is durable before the call returns. A crash at any point
//! leaves the last committed state; files of an unfinished commit are not
//! referenced by `meta.json` and are garbage-collected by the next writer. The
//! writer's lock file is an advisory `flock`, released by the kernel when a
//! process dies, so a crash never leaves the index locked.

use std::fs::{self, File};
use std::io::{self, ErrorKind, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use karen_domain::{Error, Result, TenantId};
use tantivy::indexer::IndexWriterOptions;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyError};
use tracing::{info, warn};

use super::schema::{Fields, register_analyzer, schema};
use crate::unavailable;

const INDEX_DIR: &str = "index";
const REBUILD_MARKER: &str = "rebuild-needed";
/// The reset reason of an index that was not there.
const MISSING: &str = "missing";

/// Locks a mutex, recovering the data if a panicking thread poisoned it: every
/// critical section here leaves its data consistent between statements.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_error(path: &Path, error: io::Error) -> Error {
    unavailable(format!("{}: {error}", path.display()))
}

fn tantivy_error(error: &TantivyError) -> Error {
    unavailable(error)
}

/// Whether an error means the files are damaged (reset and rebuild) rather
/// than a passing failure (disk full, too many open files: report and retry).
pub(crate) fn is_damage(error: &TantivyError) -> bool {
    use tantivy::directory::error::OpenReadError;
    match error {
        TantivyError::DataCorruption(_)
        | TantivyError::IncompatibleIndex(_)
        | TantivyError::SchemaError(_)
        | TantivyError::DeserializeError(_)
        | TantivyError::OpenReadError(
            OpenReadError::FileDoesNotExist(_) | OpenReadError::IncompatibleIndex(_),
        ) => true,
        TantivyError::IoError(e) => {
            matches!(e.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof)
        }
        _ => false,
    }
}

/// Makes renames and new files in `path` durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// An opened index of one tenant.
pub(crate) struct OpenIndex {
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    pub(crate) fields: Fields,
    rebuild_needed: AtomicBool,
}

impl OpenIndex {
    /// Whether the index was reset since the caller last rebuilt it.
    pub(crate) fn rebuild_needed(&self) -> bool {
        self.rebuild_needed.load(Ordering::Acquire)
    }
}

/// A writer, counted so that the number open at once stays bounded.
pub(crate) struct CountedWriter {
    writer: IndexWriter,
    open_writers: Arc<AtomicUsize>,
}

impl Drop for CountedWriter {
    fn drop(&mut self) {
        self.open_writers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How a writer is made.
#[derive(Debug, Clone)]
pub(crate) struct WriterConfig {
    pub(crate) memory_bytes: usize,
    pub(crate) open_writers: Arc<AtomicUsize>,
}

/// One tenant's index, opened lazily. Lock order: `writer` before `open`.
pub(crate) struct TenantSlot {
    tenant: TenantId,
    /// `<tenant directory>/text`.
    dir: PathBuf,
    open: Mutex<Option<Arc<OpenIndex>>>,
    writer: Mutex<Option<CountedWriter>>,
    has_writer: AtomicBool,
    /// Cache ticks of the last use and the last write (for LRU eviction).
    pub(crate) last_used: AtomicU64,
    pub(crate) last_write: AtomicU64,
}

impl TenantSlot {
    pub(crate) fn new(tenant: TenantId, dir: PathBuf, tick: u64) -> Self {
        Self {
            tenant,
            dir,
            open: Mutex::new(None),
            writer: Mutex::new(None),
            has_writer: AtomicBool::new(false),
            last_used: AtomicU64::new(tick),
            last_write: AtomicU64::new(0),
        }
    }

    pub(crate) fn has_writer(&self) -> bool {
        self.has_writer.load(Ordering::Acquire)
    }

    fn index_dir(&self) -> PathBuf {
        self.dir.join(INDEX_DIR)
    }

    fn marker(&self) -> PathBuf {
        self.dir.join(REBUILD_MARKER)
    }

    /// The opened index; when none is on disk, `None` unless `create`, which
    /// creates it empty (and needing a rebuild). A damaged index is reset
    /// either way.
    pub(crate) fn current(&self, create: bool) -> Result<Option<Arc<OpenIndex>>> {
        let mut open = lock(&self.open);
        if let Some(index) = open.as_ref() {
            return Ok(Some(index.clone()));
        }
        let index_dir = self.index_dir();
        let exists = index_dir.join("meta.json").try_exists();
        let loaded = match exists {
            Err(e) => return Err(io_error(&index_dir, e)),
            Ok(false) if !create => return Ok(None),
            Ok(false) => self.reset(MISSING)?,
            Ok(true) => match catch_unwind(AssertUnwindSafe(|| self.open_existing(&index_dir))) {
                Ok(Ok(index)) => index,
                Ok(Err(e)) if is_damage(&e) => self.reset(&format!("damaged: {e}"))?,
                Ok(Err(e)) => return Err(tantivy_error(&e)),
                // tantivy may panic on some malformed files instead of returning an error.
                Err(_) => self.reset("damaged: opening it panicked")?,
            },
        };
        let loaded = Arc::new(loaded);
        *open = Some(loaded.clone());
        Ok(Some(loaded))
    }

    fn open_existing(&self, index_dir: &Path) -> tantivy::Result<OpenIndex> {
        let (expected, fields) = schema();
        let index = Index::open_in_dir(index_dir)?;
        if index.schema() != expected {
            return Err(TantivyError::SchemaError(
                "the index was built with another schema or analyzer".into(),
            ));
        }
        register_analyzer(&index);
        // The reader opens every segment and checks its files' footers: a
        // truncated or missing file shows up here, not at the first query.
        let reader = reader(&index)?;
        let rebuild_needed = self.marker().try_exists().map_err(TantivyError::from)?;
        Ok(OpenIndex {
            index,
            reader,
            fields,
            rebuild_needed: AtomicBool::new(rebuild_needed),
        })
    }

    /// Replaces whatever is on disk with an empty index that needs a rebuild.
    /// The marker is written (durably) first, so a crash halfway through still
    /// reports the rebuild at the next open.
    fn reset(&self, reason: &str) -> Result<OpenIndex> {
        if reason == MISSING {
            info!(tenant_id = %self.tenant, "text index created; it needs a rebuild");
        } else {
            warn!(tenant_id = %self.tenant, reason, "text index reset; it needs a rebuild");
        }
        fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let marker = self.marker();
        let write_marker = || -> io::Result<()> {
            let mut file = File::create(&marker)?;
            file.write_all(reason.as_bytes())?;
            file.sync_all()?;
            sync_dir(&self.dir)
        };
        write_marker().map_err(|e| io_error(&marker, e))?;
        let index_dir = self.index_dir();
        match fs::remove_dir_all(&index_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&index_dir, e)),
        }
        fs::create_dir_all(&index_dir).map_err(|e| io_error(&index_dir, e))?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(&index_dir, schema).map_err(|e| tantivy_error(&e))?;
        sync_dir(&index_dir)
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|e| io_error(&index_dir, e))?;
        register_analyzer(&index);
        let reader = reader(&index).map_err(|e| tantivy_error(&e))?;
        Ok(OpenIndex {
            index,
            reader,
            fields,
            rebuild_needed: AtomicBool::new(true),
        })
    }

    /// Runs `write` with the tenant's writer (creating the index and the
    /// writer as needed), commits, makes the commit durable and visible.
    /// `make_room` is called before a new writer is opened. On failure the
    /// writer is dropped (the next one starts from the last commit), and a
    /// damaged index is reset.
    pub(crate) fn write(
        &self,
        config: &WriterConfig,
        make_room: impl FnOnce(),
        write: impl FnOnce(&mut IndexWriter, &OpenIndex) -> tantivy::Result<()>,
    ) -> Result<()> {
        let mut writer = lock(&self.writer);
        let Some(open) = self.current(true)? else {
            return Err(Error::internal("text index missing after creation"));
        };
        if writer.is_none() {
            make_room();
            let options = IndexWriterOptions::builder()
                .memory_budget_per_thread(config.memory_bytes)
                .num_worker_threads(1)
                .num_merge_threads(1)
                .build();
            let created = open.index.writer_with_options(options).map_err(|e| {
                if matches!(e, TantivyError::LockFailure(..)) {
                    unavailable(format!(
                        "the index of tenant {} is locked by another process sharing this data directory",
                        self.tenant
                    ))
                } else {
                    tantivy_error(&e)
                }
            })?;
            config.open_writers.fetch_add(1, Ordering::AcqRel);
            *writer = Some(CountedWriter {
                writer: created,
                open_writers: config.open_writers.clone(),
            });
            self.has_writer.store(true, Ordering::Release);
        }
        let Some(counted) = writer.as_mut() else {
            return Err(Error::internal("text index writer vanished"));
        };
        let outcome = write(&mut counted.writer, &open)
            .and_then(|()| counted.writer.commit().map(drop))
            .and_then(|()| {
                sync_dir(&self.index_dir()).map_err(|e| TantivyError::IoError(Arc::new(e)))
            })
            .and_then(|()| open.reader.reload());
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                *writer = None;
                self.has_writer.store(false, Ordering::Release);
                if is_damage(&e) {
                    self.replace_damaged(&format!("damaged: {e}"))?;
                }
                Err(tantivy_error(&e))
            }
        }
    }

    /// Closes the writer if no one is using it (for the writer LRU). Returns
    /// the writer so the caller drops it (joining its threads) outside locks.
    pub(crate) fn try_take_writer(&self) -> Option<CountedWriter> {
        let mut writer = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        self.has_writer.store(false, Ordering::Release);
        writer.take()
    }

    /// A read of `damaged` found it damaged: reset it so that the next calls
    /// see an empty index needing a rebuild. Nothing happens if another call
    /// already replaced that index (its successor may hold new entries).
    pub(crate) fn reset_damaged(&self, damaged: &Arc<OpenIndex>, reason: &str) -> Result<()> {
        let mut writer = lock(&self.writer);
        let current = lock(&self.open).clone();
        if !current.is_some_and(|current| Arc::ptr_eq(&current, damaged)) {
            return Ok(());
        }
        *writer = None;
        self.has_writer.store(false, Ordering::Release);
        self.replace_damaged(reason)
    }

    /// Caller holds the writer lock.
    fn replace_damaged(&self, reason: &str) -> Result<()> {
        let mut open = lock(&self.open);
        *open = None;
        let fresh = self.reset(reason)?;
        *open = Some(Arc::new(fresh));
        Ok(())
    }

    /// The caller rebuilt the index from the SQL store: clear the marker.
    pub(crate) fn mark_rebuilt(&self) -> Result<()> {
        let _writer = lock(&self.writer);
        let open = lock(&self.open);
        let marker = self.marker();
        match fs::remove_file(&marker) {
            Ok(()) => sync_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&marker, e)),
        }
        if let Some(index) = open.as_ref() {
            index.rebuild_needed.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Closes the index and deletes its files.
    pub(crate) fn purge(&self) -> Result<()> {
        let mut writer = lock(&self.writer);
        let mut open = lock(&self.open);
        *writer = None;
        self.has_writer.store(false, Ordering::Release);
        *open = None;
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.dir, e)),
        }
        if let Some(parent) = self.dir.parent() {
            // Best effort: the tenant directory itself may be gone too.
            let _ = sync_dir(parent);
        }
        Ok(())
    }
}

fn reader(index: &Index) -> tantivy::Result<IndexReader> {
    // Manual reloads (right after our own commits): no watcher thread per tenant.
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
}
