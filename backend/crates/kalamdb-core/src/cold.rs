//! The cold tier as the engine sees it: manifests (cached), the flush watermarks
//! that tell writers when a replaced version lives in Parquet, and point reads of
//! cold row versions.
//!
//! Consistency between tiers: a flush publishes a scope's new manifest and deletes
//! the flushed hot rows while holding [`ColdTier::commit_lock`] for writing; a reader
//! captures the manifest and reads the hot rows while holding it for reading. So a
//! reader sees a row either hot or cold, never both and never neither.

use std::collections::HashMap;
use std::sync::Arc;

use kalamdb_cold::{Manifest, ScopeDir, Storage, layout};
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use kalamdb_store::{DecodedRow, Store, StoreBatch, StoreView};
use parking_lot::{Mutex, RwLock};

use crate::base::store_error;
#[cfg(test)]
use crate::catalog::LOCAL_STORAGE;
use crate::catalog::TableDef;
use crate::segment::{decode_row, seq_column};

const WATERMARK_PREFIX: &str = "flushwm/";

/// `STORAGE_UNAVAILABLE` naming the storage (a backend's message has no secret:
/// keys are sent only as signatures).
pub(crate) fn storage_unavailable(storage: &str, why: impl std::fmt::Display) -> KalamError {
    KalamError::new(
        ErrorCode::StorageUnavailable,
        format!("storage '{storage}' is unavailable: {why}"),
    )
}

/// A failure of the cold tier: `STORAGE_UNAVAILABLE` naming the storage when its
/// backend failed (unreachable, refusing, timing out), else an internal error.
pub(crate) fn cold_error(e: kalamdb_cold::ColdError) -> KalamError {
    match e.unavailable_storage() {
        Some(storage) => storage_unavailable(storage, &e),
        None => KalamError::internal(format!("cold storage failure: {e}")),
    }
}

/// A failure of a scan's Parquet read: `STORAGE_UNAVAILABLE` naming the storage
/// when its backend failed, else as it is.
pub(crate) fn scan_error(
    storage: &str,
    e: datafusion::error::DataFusionError,
) -> datafusion::error::DataFusionError {
    use datafusion::error::DataFusionError;
    use datafusion::parquet::errors::ParquetError;
    let backend = match e.find_root() {
        DataFusionError::ObjectStore(_) => true,
        DataFusionError::ParquetError(p) => match p.as_ref() {
            ParquetError::External(inner) => inner.is::<object_store::Error>(),
            // DataFusion's reader reports a failed footer fetch as text only.
            ParquetError::General(message) => message.contains("Object Store error"),
            _ => false,
        },
        DataFusionError::External(inner) => inner.is::<object_store::Error>(),
        _ => false,
    };
    if !backend {
        return e;
    }
    DataFusionError::External(Box::new(storage_unavailable(storage, e.find_root())))
}

/// Segments, bytes and row versions in Parquet (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ColdFigures {
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
    /// Segments below half the compaction target (what a compaction policy counts:
    /// larger ones are what compaction writes).
    pub small_files: u64,
}

impl ColdFigures {
    fn of(manifest: &Manifest, small_below: u64) -> ColdFigures {
        ColdFigures {
            files: manifest.segments.len() as u64,
            bytes: manifest.size_bytes(),
            rows: manifest.row_count(),
            small_files: (manifest.segments.iter())
                .filter(|s| s.size_bytes < small_below)
                .count() as u64,
        }
    }
}

/// The figures of every scope with segments, and their sum, kept as manifests are
/// published: reading the total costs nothing, whatever the number of files.
#[derive(Default)]
struct FigureBook {
    by_scope: HashMap<(u32, String), ColdFigures>,
    total: ColdFigures,
}

impl FigureBook {
    fn set(&mut self, key: (u32, String), figures: ColdFigures) {
        let old = self.by_scope.insert(key, figures).unwrap_or_default();
        self.total.files = self.total.files - old.files + figures.files;
        self.total.bytes = self.total.bytes - old.bytes + figures.bytes;
        self.total.rows = self.total.rows - old.rows + figures.rows;
        self.total.small_files = self.total.small_files - old.small_files + figures.small_files;
    }

    fn forget_table(&mut self, table_id: u32) {
        let keys: Vec<_> = self
            .by_scope
            .keys()
            .filter(|(id, _)| *id == table_id)
            .cloned()
            .collect();
        for key in keys {
            self.set(key.clone(), ColdFigures::default());
            self.by_scope.remove(&key);
        }
    }
}

/// Manifests kept in memory at most; beyond, one is dropped for each one loaded
/// (a dropped one is read again from its file when needed). The manifests of a
/// table being flushed are never dropped: the flush saves a scope's next manifest
/// before it publishes it, and a reader loading the file in between would see
/// segments whose rows are still hot.
const MAX_CACHED_MANIFESTS: usize = 4096;

pub(crate) struct ColdTier {
    /// Every storage by name, `local` included.
    storages: RwLock<HashMap<String, Arc<Storage>>>,
    manifests: Mutex<HashMap<(u32, String), Arc<Manifest>>>,
    figures: Mutex<FigureBook>,
    /// Tables with a running flush, whose cached manifests stay cached.
    flushing: Mutex<HashMap<u32, usize>>,
    /// Per table: the highest watermark of any flush that started. A write that
    /// replaces a version with `_seq <= watermark` records a stale marker, because
    /// that version is (or is about to be) in a Parquet segment.
    watermarks: Mutex<HashMap<u32, u64>>,
    /// Held for writing while a flush commits one scope (manifest + hot delete);
    /// for reading while a scan captures its view of both tiers.
    pub commit_lock: RwLock<()>,
    /// Parsed footers of segments point reads read.
    segment_metadata: kalamdb_cold::SegmentMetadataCache,
    /// Per table: held for reading by a flush job from its watermark to its end, for
    /// writing by the build of an index, which must see no version move between
    /// the tiers while it reads them.
    flush_gates: Mutex<HashMap<u32, Arc<tokio::sync::RwLock<()>>>>,
    /// Tables dropped since start-up (ids are never reused): replaced segments of
    /// theirs are not deleted later ([`ColdTier::retire`]).
    dropped: Arc<Mutex<std::collections::HashSet<u32>>>,
    /// Per scope being compacted: the stale markers commits wrote since the
    /// compaction's snapshot (they name versions it copies, and must outlive its
    /// clean-up); `marker_logs_open` counts them, so commits elsewhere skip the lock.
    marker_logs: Mutex<HashMap<(u32, String), Vec<u64>>>,
    marker_logs_open: std::sync::atomic::AtomicUsize,
    /// Half the compaction target: a smaller segment counts toward a compaction policy.
    small_below: u64,
    /// Scopes whose last manifest commit has an unknown outcome (the storage answered
    /// neither the put nor its read-back): their cached manifest may be stale and their
    /// next segment number taken, so no reader or job uses them until a restart's
    /// recovery settles which version is current.
    unsettled: Mutex<std::collections::HashSet<(u32, String)>>,
    /// Manifests as of earlier moments, for the transactions that read them
    /// ([`ColdTier::pin_moment`], [`ColdTier::manifest_at`]).
    history: Mutex<ManifestHistory>,
}

/// Per (table, scope): the manifests replaced while older pins were open, each with
/// the epoch that replaced it.
type ReplacedManifests = HashMap<(u32, String), Vec<(u64, Arc<Manifest>)>>;

/// The manifests open transactions may still read: each publish is one epoch, and a
/// manifest replaced while a transaction pinned an earlier epoch is kept (with the
/// epoch that replaced it) until no such transaction is left. Holding it also keeps
/// the files it lists ([`ColdTier::retire`] waits for its last holder).
#[derive(Default)]
struct ManifestHistory {
    /// Publishes so far (since start-up).
    epoch: u64,
    /// Open pins by epoch, with their counts.
    pins: std::collections::BTreeMap<u64, usize>,
    /// Replaced manifests: (table, scope) → [(epoch that replaced it, manifest)].
    replaced: ReplacedManifests,
}

impl ColdTier {
    /// `compaction_target_bytes`: the size of the segments compaction writes.
    /// `storages`: every storage, `local` included.
    pub fn open(
        storages: Vec<Arc<Storage>>,
        store: &Store,
        compaction_target_bytes: u64,
    ) -> KalamResult<ColdTier> {
        let mut watermarks = HashMap::new();
        for (key, value) in store
            .latest()
            .system_scan(WATERMARK_PREFIX)
            .map_err(store_error)?
        {
            let table_id: u32 = key[WATERMARK_PREFIX.len()..]
                .parse()
                .map_err(|_| KalamError::internal(format!("corrupt key {key}")))?;
            let wm = u64::from_be_bytes(
                value
                    .try_into()
                    .map_err(|_| KalamError::internal(format!("corrupt {key}")))?,
            );
            watermarks.insert(table_id, wm);
        }
        Ok(ColdTier {
            storages: RwLock::new(storages.into_iter().map(|s| (s.name().to_string(), s)).collect()),
            manifests: Mutex::new(HashMap::new()),
            figures: Mutex::new(FigureBook::default()),
            flushing: Mutex::new(HashMap::new()),
            watermarks: Mutex::new(watermarks),
            commit_lock: RwLock::new(()),
            segment_metadata: Default::default(),
            flush_gates: Mutex::new(HashMap::new()),
            dropped: Default::default(),
            small_below: compaction_target_bytes / 2,
            marker_logs: Mutex::default(),
            marker_logs_open: Default::default(),
            unsettled: Mutex::default(),
            history: Mutex::default(),
        })
    }

    /// The flush gate of a table (see `flush_gates`).
    pub fn flush_gate(&self, table_id: u32) -> Arc<tokio::sync::RwLock<()>> {
        self.flush_gates.lock().entry(table_id).or_default().clone()
    }

    /// The storage named `name`.
    pub fn storage(&self, name: &str) -> KalamResult<Arc<Storage>> {
        self.storages.read().get(name).cloned().ok_or_else(|| {
            KalamError::new(
                ErrorCode::StorageNotFound,
                format!("storage '{name}' does not exist"),
            )
        })
    }

    /// Every storage, by name.
    pub fn storages(&self) -> Vec<Arc<Storage>> {
        let mut all: Vec<_> = self.storages.read().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    pub fn add_storage(&self, storage: Arc<Storage>) {
        self.storages.write().insert(storage.name().to_string(), storage);
    }

    pub fn remove_storage(&self, name: &str) {
        self.storages.write().remove(name);
    }

    /// The storage of a table.
    pub fn storage_of(&self, table: &TableDef) -> KalamResult<Arc<Storage>> {
        self.storage(table.storage_name())
    }

    /// Where a scope of a table keeps its segments and manifests.
    pub fn scope_dir(&self, table: &TableDef, scope: &str) -> KalamResult<ScopeDir> {
        Ok(ScopeDir::new(
            self.storage_of(table)?,
            &table.namespace,
            &table.name,
            scope,
        ))
    }

    /// The current manifest of one scope of a table (loaded once, then cached).
    pub fn manifest(&self, table: &TableDef, scope: &str) -> KalamResult<Arc<Manifest>> {
        let key = (table.table_id, scope.to_string());
        if self.unsettled.lock().contains(&key) {
            return Err(KalamError::new(
                ErrorCode::StorageUnavailable,
                format!(
                    "storage '{}': the last commit of {}'s Parquet segments (scope {scope}) has an unknown outcome; restart the server to settle it",
                    table.storage_name(),
                    table.qualified_name()
                ),
            ));
        }
        if let Some(m) = self.manifests.lock().get(&key) {
            return Ok(m.clone());
        }
        if table.table_type != kalamdb_commons::TableType::User {
            return Ok(Arc::new(Manifest::empty(table.table_id)));
        }
        let loaded =
            Arc::new(Manifest::load(&self.scope_dir(table, scope)?, table.table_id).map_err(cold_error)?);
        let mut cache = self.manifests.lock();
        self.make_room(&mut cache);
        Ok(cache.entry(key).or_insert(loaded).clone())
    }

    /// Marks a scope whose manifest commit has an unknown outcome (see `unsettled`).
    pub fn unsettle(&self, table_id: u32, scope: &str) {
        self.unsettled.lock().insert((table_id, scope.to_string()));
    }

    /// Makes `manifest` the one readers see. Call with `commit_lock` held for writing.
    /// `previous`, the manifest it replaces, stays readable by the transactions whose
    /// moment is older ([`ColdTier::manifest_at`]).
    pub fn publish(
        &self,
        table_id: u32,
        scope: &str,
        previous: &Arc<Manifest>,
        manifest: Manifest,
    ) -> Arc<Manifest> {
        let mut history = self.history.lock();
        history.epoch += 1;
        if !history.pins.is_empty() {
            let epoch = history.epoch;
            (history.replaced.entry((table_id, scope.to_string())).or_default())
                .push((epoch, previous.clone()));
        }
        self.note_manifest(table_id, scope, &manifest);
        let manifest = Arc::new(manifest);
        let mut cache = self.manifests.lock();
        self.make_room(&mut cache);
        cache.insert((table_id, scope.to_string()), manifest.clone());
        manifest
    }

    /// Pins this moment of the cold tier and returns its epoch (call with
    /// `commit_lock` held for reading, with the store view it goes with taken under
    /// it): [`ColdTier::manifest_at`] answers the manifests of that moment until
    /// [`ColdTier::unpin`].
    pub fn pin_moment(&self) -> u64 {
        let mut history = self.history.lock();
        let epoch = history.epoch;
        *history.pins.entry(epoch).or_insert(0) += 1;
        epoch
    }

    pub fn unpin(&self, epoch: u64) {
        let mut history = self.history.lock();
        if let Some(count) = history.pins.get_mut(&epoch) {
            *count -= 1;
            if *count == 0 {
                history.pins.remove(&epoch);
            }
        }
        // A replaced manifest is needed by pins older than its replacement.
        match history.pins.keys().next().copied() {
            None => history.replaced.clear(),
            Some(oldest) => history.replaced.retain(|_, versions| {
                versions.retain(|(until, _)| oldest < *until);
                !versions.is_empty()
            }),
        }
    }

    /// The manifest of one scope as it was at the pinned moment `epoch`: the first
    /// one replaced after it, or the current one when none was.
    pub fn manifest_at(&self, table: &TableDef, scope: &str, epoch: u64) -> KalamResult<Arc<Manifest>> {
        // Held across both steps: no publish between the history and the cache.
        let _tiers = self.commit_lock.read_recursive();
        {
            let history = self.history.lock();
            let then = (history.replaced.get(&(table.table_id, scope.to_string())))
                .and_then(|versions| versions.iter().find(|(until, _)| *until > epoch));
            if let Some((_, manifest)) = then {
                return Ok(manifest.clone());
            }
        }
        self.manifest(table, scope)
    }

    /// After a commit: the manifest versions below `current` go (best effort: what
    /// is left is removed at start-up).
    pub fn remove_older_manifests(dir: &ScopeDir, current: &Manifest) {
        if let Err(e) = current.remove_older(dir) {
            tracing::warn!(scope = %dir.prefix, "older manifest versions were not removed: {e}");
        }
    }

    /// Keeps the manifest cache below [`MAX_CACHED_MANIFESTS`] before an insert,
    /// dropping manifests of tables that are not being flushed.
    fn make_room(&self, cache: &mut HashMap<(u32, String), Arc<Manifest>>) {
        if cache.len() < MAX_CACHED_MANIFESTS {
            return;
        }
        let flushing = self.flushing.lock();
        let excess = cache.len() + 1 - MAX_CACHED_MANIFESTS;
        // A manifest a reader still holds stays: there is then one `Arc` per manifest
        // in memory, whose count [`ColdTier::retire`] waits on.
        let evict: Vec<(u32, String)> = cache
            .iter()
            .filter(|((table_id, _), m)| !flushing.contains_key(table_id) && Arc::strong_count(m) == 1)
            .map(|(key, _)| key)
            .take(excess)
            .cloned()
            .collect();
        for key in evict {
            cache.remove(&key);
        }
    }

    /// Keeps the table's manifests cached until the returned guard is dropped (for
    /// the length of a flush).
    pub fn pin_while_flushing(&self, table_id: u32) -> FlushPin<'_> {
        *self.flushing.lock().entry(table_id).or_insert(0) += 1;
        FlushPin { cold: self, table_id }
    }

    /// Deletes the segment `files` a compaction replaced once no reader holds
    /// `replaced`, the manifest that listed them (readers hold the manifest they read
    /// for as long as they may open its files: scans in their streams, point reads
    /// while they read). Files left by a stop meanwhile are removed at start-up (no
    /// manifest lists them).
    /// A table dropped meanwhile keeps its files (its directory went with it, and a
    /// table created under its name may have files of the same names).
    pub fn retire(&self, table_id: u32, replaced: Arc<Manifest>, dir: ScopeDir, files: Vec<String>) {
        let dropped = self.dropped.clone();
        let remove = move || {
            // Held while checking and deleting: `forget_table` waits for it.
            let dropped = dropped.lock();
            if dropped.contains(&table_id) {
                return;
            }
            for file in &files {
                if let Err(e) = dir.storage.delete(&dir.file(file)) {
                    tracing::warn!(file = %dir.describe(file), "a replaced segment was not removed: {e}");
                }
            }
        };
        if Arc::strong_count(&replaced) == 1 {
            return remove();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            while Arc::strong_count(&replaced) > 1 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let _ = tokio::task::spawn_blocking(remove).await;
        });
    }

    /// Starts recording the stale markers commits of a scope write (call with the
    /// scope's commit lock held, as commits write markers under it).
    pub fn open_marker_log(&self, table_id: u32, scope: &str) -> MarkerLog<'_> {
        self.marker_logs
            .lock()
            .insert((table_id, scope.to_string()), Vec::new());
        self.marker_logs_open
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        MarkerLog {
            cold: self,
            key: (table_id, scope.to_string()),
        }
    }

    /// Whether a scope's markers are being recorded (cheap when none is).
    pub fn logs_markers(&self, table_id: u32, scope: &str) -> bool {
        self.marker_logs_open.load(std::sync::atomic::Ordering::Acquire) > 0
            && self
                .marker_logs
                .lock()
                .contains_key(&(table_id, scope.to_string()))
    }

    /// Records markers a commit wrote (after it is written, its lock still held).
    pub fn note_markers(&self, table_id: u32, scope: &str, seqs: &[u64]) {
        if let Some(log) = self.marker_logs.lock().get_mut(&(table_id, scope.to_string())) {
            log.extend_from_slice(seqs);
        }
    }

    /// Records a scope's manifest in the `/metrics` figures (published, or found at
    /// start-up).
    pub fn note_manifest(&self, table_id: u32, scope: &str, manifest: &Manifest) {
        self.figures.lock().set(
            (table_id, scope.to_string()),
            ColdFigures::of(manifest, self.small_below),
        );
    }

    /// Whether some scope of a table has more than `segments` segments.
    /// Whether some scope of a table has more than `segments` segments below half the
    /// compaction target (those it writes are not counted: a scope they fill is done).
    pub fn has_scope_over(&self, table_id: u32, segments: u64) -> bool {
        (self.figures.lock().by_scope.iter()).any(|((id, _), f)| *id == table_id && f.small_files > segments)
    }

    /// Half the compaction target (see [`ColdFigures::small_files`]).
    pub fn small_below(&self) -> u64 {
        self.small_below
    }

    /// Segments, bytes and row versions of every USER table's cold tier.
    pub fn figures(&self) -> ColdFigures {
        self.figures.lock().total
    }

    pub fn watermark(&self, table_id: u32) -> u64 {
        self.watermarks.lock().get(&table_id).copied().unwrap_or(0)
    }

    /// Raises a table's watermark (in the batch and, once committed, in memory via
    /// [`ColdTier::apply_watermark`]). Call with the table's commit lock held.
    pub fn stage_watermark(batch: &mut StoreBatch<'_>, table_id: u32, watermark: u64) {
        batch.put_system(&format!("{WATERMARK_PREFIX}{table_id}"), &watermark.to_be_bytes());
    }

    pub fn apply_watermark(&self, table_id: u32, watermark: u64) {
        let mut map = self.watermarks.lock();
        let entry = map.entry(table_id).or_insert(0);
        *entry = (*entry).max(watermark);
    }

    /// Forgets a dropped table: its cached manifests, its watermark (staged) and its
    /// files. Call after the drop is committed.
    pub fn stage_drop(batch: &mut StoreBatch<'_>, table_id: u32) {
        batch.delete_system(&format!("{WATERMARK_PREFIX}{table_id}"));
    }

    pub fn forget_table(&self, table: &TableDef) -> KalamResult<()> {
        // Held while the directory goes: a compaction's replaced files are deleted
        // under it (`retire`), never after the table is gone.
        let mut dropped = self.dropped.lock();
        dropped.insert(table.table_id);
        self.manifests.lock().retain(|(id, _), _| *id != table.table_id);
        (self.history.lock().replaced).retain(|(id, _), _| *id != table.table_id);
        self.unsettled.lock().retain(|(id, _)| *id != table.table_id);
        self.figures.lock().forget_table(table.table_id);
        self.watermarks.lock().remove(&table.table_id);
        // Best effort: the drop is committed. What is left when the storage does not
        // answer stays there until a table of the same name is created on the same
        // storage (its manifests go above the leftover ones, and start-up recovery
        // deletes the segments no manifest lists); nothing reads it meanwhile.
        let deleted = (self.storage_of(table)).and_then(|s| {
            (s.delete_all(&layout::table_path(&table.namespace, &table.name))).map_err(cold_error)
        });
        if let Err(e) = deleted {
            tracing::warn!(table = %table.qualified_name(), "the dropped table's Parquet objects were not all removed: {}", e.message);
        }
        Ok(())
    }

    /// The user ids that have objects of this table in its storage.
    pub fn scopes_on_disk(&self, table: &TableDef) -> KalamResult<Vec<String>> {
        let storage = self.storage_of(table)?;
        let (_, mut scopes) = storage
            .list_level(&layout::table_path(&table.namespace, &table.name))
            .map_err(cold_error)?;
        scopes.sort();
        Ok(scopes)
    }

    /// Reads the cold row version `seq` of a scope: `None` when no segment has it.
    /// Visits every live row version of one scope's Parquet segments — those the pk
    /// index still names (not superseded, not deleted) — as `(_seq, row)`. Reads
    /// every segment whole: for building a UNIQUE index.
    pub fn for_each_live_row(
        &self,
        view: &StoreView,
        table: &TableDef,
        scope: &str,
        mut visit: impl FnMut(u64, &DecodedRow) -> KalamResult<()>,
    ) -> KalamResult<()> {
        let manifest = self.manifest(table, scope)?;
        let dir = self.scope_dir(table, scope)?;
        for segment in &manifest.segments {
            for batch in kalamdb_cold::read_all(&dir, segment).map_err(cold_error)? {
                let seqs = seq_column(segment, &batch)?;
                for i in 0..batch.num_rows() {
                    let seq = seqs.value(i) as u64;
                    let row = decode_row(table, segment, &batch, i)?;
                    if row.deleted {
                        continue;
                    }
                    let key = crate::index::row_key(table, &row);
                    let live = view
                        .pk_get(table.table_id, scope, &key)
                        .map_err(store_error)?
                        .is_some_and(|e| e.names_live(seq));
                    if live {
                        visit(seq, &row)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The cold row versions `seqs` of a scope, as `manifest` lists its segments
    /// (versions it does not hold are left out): one pass per segment that holds
    /// some, not one point read per version. Blocking.
    pub fn read_versions(
        &self,
        table: &TableDef,
        scope: &str,
        manifest: &Manifest,
        seqs: &[u64],
    ) -> KalamResult<HashMap<u64, DecodedRow>> {
        let mut by_segment: HashMap<usize, Vec<i64>> = HashMap::new();
        for &seq in seqs {
            let (Some(i), Ok(seq)) = (
                (manifest.segments.iter()).position(|s| s.min_seq <= seq && seq <= s.max_seq),
                i64::try_from(seq),
            ) else {
                continue;
            };
            by_segment.entry(i).or_default().push(seq);
        }
        let dir = self.scope_dir(table, scope)?;
        let mut rows = HashMap::with_capacity(seqs.len());
        for (i, mut wanted) in by_segment {
            let segment = &manifest.segments[i];
            wanted.sort_unstable();
            let batches = kalamdb_cold::read_seqs(&self.segment_metadata, &dir, segment, &wanted)
                .map_err(cold_error)?;
            for batch in batches {
                let seqs = seq_column(segment, &batch)?;
                for r in 0..batch.num_rows() {
                    rows.insert(seqs.value(r) as u64, decode_row(table, segment, &batch, r)?);
                }
            }
        }
        Ok(rows)
    }

    pub fn read_version(
        &self,
        table: &TableDef,
        scope: &str,
        manifest: &Manifest,
        seq: u64,
    ) -> KalamResult<Option<DecodedRow>> {
        let Some(segment) = manifest.segment_with_seq(seq) else {
            return Ok(None);
        };
        let dir = self.scope_dir(table, scope)?;
        let read = kalamdb_cold::read_seq(&self.segment_metadata, &dir, segment, seq);
        let Some(batch) = read.map_err(cold_error)? else {
            return Ok(None);
        };
        Ok(Some(decode_row(table, segment, &batch, 0)?))
    }
}

/// The markers a scope's commits wrote since [`ColdTier::open_marker_log`]; recording
/// stops when it is dropped.
pub(crate) struct MarkerLog<'a> {
    cold: &'a ColdTier,
    key: (u32, String),
}

impl MarkerLog<'_> {
    /// The markers recorded so far (call with the scope's commit lock held).
    pub fn written(&self) -> Vec<u64> {
        self.cold
            .marker_logs
            .lock()
            .get(&self.key)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for MarkerLog<'_> {
    fn drop(&mut self) {
        self.cold.marker_logs.lock().remove(&self.key);
        self.cold
            .marker_logs_open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// See [`ColdTier::pin_while_flushing`].
pub(crate) struct FlushPin<'a> {
    cold: &'a ColdTier,
    table_id: u32,
}

impl Drop for FlushPin<'_> {
    fn drop(&mut self) {
        let mut flushing = self.cold.flushing.lock();
        if let Some(count) = flushing.get_mut(&self.table_id) {
            *count -= 1;
            if *count == 0 {
                flushing.remove(&self.table_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_table(table_id: u32) -> TableDef {
        TableDef {
            table_id,
            namespace: "ns".into(),
            name: format!("t{table_id}"),
            table_type: kalamdb_commons::TableType::User,
            columns: Vec::new(),
            primary_key: None,
            next_column_id: 1,
            flush_policy: None,
            compact_segments: None,
            storage: None,
            ttl_seconds: None,
            access_level: None,
            created_at: 0,
            schema_version: 1,
            indexes: Vec::new(),
            next_index_id: 1,
            comment: None,
        }
    }

    #[test]
    fn an_unsettled_scope_is_not_read_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("rocksdb"), &Default::default()).unwrap();
        let local = Arc::new(Storage::local(LOCAL_STORAGE, &dir.path().join("storage"), true).unwrap());
        let cold = ColdTier::open(vec![local], &store, 512 << 20).unwrap();
        let table = user_table(1);
        cold.manifest(&table, "u1").unwrap();
        cold.unsettle(table.table_id, "u1");
        let error = cold.manifest(&table, "u1").unwrap_err();
        assert_eq!(error.code, ErrorCode::StorageUnavailable);
        assert!(error.message.contains("unknown outcome"), "{}", error.message);
        cold.manifest(&table, "u2").unwrap();
    }

    #[test]
    fn the_manifest_cache_is_bounded_but_keeps_tables_being_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("rocksdb"), &Default::default()).unwrap();
        let local = Arc::new(Storage::local(LOCAL_STORAGE, &dir.path().join("storage"), true).unwrap());
        let cold = ColdTier::open(vec![local], &store, 512 << 20).unwrap();
        let (flushed, other) = (user_table(1), user_table(2));
        let pin = cold.pin_while_flushing(flushed.table_id);
        for i in 0..10 {
            cold.manifest(&flushed, &format!("u{i}")).unwrap();
        }
        for i in 0..MAX_CACHED_MANIFESTS + 100 {
            cold.manifest(&other, &format!("u{i}")).unwrap();
        }
        {
            let cache = cold.manifests.lock();
            assert!(cache.len() <= MAX_CACHED_MANIFESTS, "bounded: {}", cache.len());
            let kept = cache.keys().filter(|(id, _)| *id == flushed.table_id).count();
            assert_eq!(kept, 10, "a table being flushed keeps its manifests");
        }
        drop(pin);
        for i in 0..MAX_CACHED_MANIFESTS {
            cold.manifest(&other, &format!("v{i}")).unwrap();
        }
        let cache = cold.manifests.lock();
        assert!(cache.len() <= MAX_CACHED_MANIFESTS);
        assert!(
            cache.keys().filter(|(id, _)| *id == flushed.table_id).count() < 10,
            "unpinned, they may go"
        );
    }
}
