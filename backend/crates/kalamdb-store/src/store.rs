//! The RocksDB instance, its column families and atomic write batches.

use std::path::Path;
use std::sync::Arc;

use kalamdb_commons::Value;
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction, IteratorMode, Options,
    ReadOptions, Snapshot, WriteBatch, WriteOptions,
};

use crate::FORMAT_VERSION;
use crate::index_key::encode_ordered;
use crate::keys::{
    change_key, change_key_seq, changes_pruned_key, hot_key, parse_hot_key, prefix_upper_bound, scope_prefix,
    table_prefix,
};
use crate::row_codec::RowCodecError;

pub(crate) const CF_SYSTEM: &str = "system";
const CF_HOT: &str = "hot";
/// The primary-key index (format version 2: order-preserving keys).
pub(crate) const CF_PK: &str = "pkey";
/// The primary-key index of format version 1 (row-codec keys), read once by the
/// upgrade and then dropped.
pub(crate) const CF_PK_V1: &str = "pk";
const CF_STALE: &str = "stale";
const CF_IDX: &str = "idx";
const CF_CHANGES: &str = "changes";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt row: {0}")]
    Codec(#[from] RowCodecError),
    #[error("corrupt key in column family {cf}")]
    CorruptKey { cf: &'static str },
    #[error("corrupt system record '{key}': {reason}")]
    CorruptRecord { key: String, reason: String },
    #[error("the data directory has format version {found}; this server reads up to {FORMAT_VERSION}")]
    NewerFormat { found: u32 },
    #[error("cannot upgrade the data directory: {0}")]
    Upgrade(String),
}

/// Settings of the RocksDB instance, explicit at the call site.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// fsync the WAL before a write is acknowledged (survives power loss, not only
    /// a process crash). Without it a write is in the OS page cache when acknowledged.
    pub sync_writes: bool,
    /// Memtable size per column family.
    pub write_buffer_bytes: usize,
    /// RocksDB background flush + compaction threads.
    pub background_jobs: i32,
    /// Crash tests only: writes that are not fsynced skip the WAL, so a `kill -9`
    /// loses them as a power loss would lose an unsynced WAL tail.
    pub unsynced_writes_skip_wal: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sync_writes: false,
            write_buffer_bytes: 64 << 20,
            background_jobs: 2,
            unsynced_writes_skip_wal: false,
        }
    }
}

/// A `pk` index entry: the latest version of a primary key in its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PkEntry {
    pub seq: u64,
    pub deleted: bool,
}

impl PkEntry {
    /// Whether the entry names a live row: not a tombstone, and not below `horizon`,
    /// the smallest `_seq` a live row of the table may have (a STREAM table's expiry;
    /// 0 for every other table). The one rule every reader and writer applies.
    pub fn is_live(&self, horizon: u64) -> bool {
        !self.deleted && self.seq >= horizon
    }

    /// Whether the entry names the live version `seq` (an index entry's or a
    /// segment row's version is still the key's latest, not deleted).
    pub fn names_live(&self, seq: u64) -> bool {
        self.seq == seq && !self.deleted
    }

    pub(crate) fn encode(self) -> [u8; 9] {
        let mut out = [0u8; 9];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8] = self.deleted as u8;
        out
    }

    fn decode(bytes: &[u8]) -> Option<PkEntry> {
        if bytes.len() != 9 {
            return None;
        }
        Some(PkEntry {
            seq: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            deleted: bytes[8] != 0,
        })
    }
}

/// The hot store. Cheap to share behind an `Arc`; every method is thread-safe.
pub struct Store {
    db: Arc<DB>,
    sync_writes: bool,
    unsynced_writes_skip_wal: bool,
}

impl Store {
    /// Opens (or creates) the RocksDB instance at `path` with the KalamDB column families.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_max_background_jobs(options.background_jobs);
        db_options.set_keep_log_file_num(4);
        let cf = |name: &str| {
            let mut cf_options = Options::default();
            // The change log is written with every row but read only by resumes: a
            // smaller memtable keeps its share of memory small under bulk loads.
            let write_buffer = match name {
                CF_CHANGES => (options.write_buffer_bytes / 4).max(4 << 20),
                _ => options.write_buffer_bytes,
            };
            cf_options.set_write_buffer_size(write_buffer);
            cf_options.set_compression_type(DBCompressionType::Lz4);
            if name == CF_SYSTEM {
                cf_options.set_merge_operator_associative("kalamdb_max_u64", max_u64_merge);
            }
            ColumnFamilyDescriptor::new(name, cf_options)
        };
        // A directory written by format version 1 still has its `pk` column family
        // (until the upgrade below has moved it); a new one never gets it.
        let has_v1_pk = DB::list_cf(&db_options, path)
            .map(|names| names.iter().any(|n| n == CF_PK_V1))
            .unwrap_or(false);
        let mut descriptors = vec![
            cf(CF_SYSTEM),
            cf(CF_HOT),
            cf(CF_PK),
            cf(CF_STALE),
            cf(CF_IDX),
            cf(CF_CHANGES),
        ];
        if has_v1_pk {
            descriptors.push(cf(CF_PK_V1));
        }
        let mut db = DB::open_cf_descriptors(&db_options, path, descriptors)?;
        crate::upgrade::to_current(&mut db, has_v1_pk)?;
        Ok(Store {
            db: Arc::new(db),
            sync_writes: options.sync_writes,
            unsynced_writes_skip_wal: options.unsynced_writes_skip_wal,
        })
    }

    fn cf(&self, name: &'static str) -> &ColumnFamily {
        cf(&self.db, name)
    }

    pub fn batch(&self) -> StoreBatch<'_> {
        StoreBatch {
            store: self,
            batch: WriteBatch::default(),
        }
    }

    /// Applies the batch atomically; the WAL record is written before this returns.
    pub fn commit(&self, batch: StoreBatch<'_>) -> Result<(), StoreError> {
        self.write(batch.batch, self.sync_writes)
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut write_options = WriteOptions::default();
        write_options.set_sync(sync);
        write_options.disable_wal(!sync && self.unsynced_writes_skip_wal);
        self.db.write_opt(batch, &write_options)?;
        Ok(())
    }

    /// Whether [`Store::commit`] fsyncs the WAL (and so may block for milliseconds).
    pub fn syncs_writes(&self) -> bool {
        self.sync_writes
    }

    /// [`Store::commit`] for a batch detached from its borrow of the store (so it can
    /// be committed on another thread).
    pub fn commit_detached(&self, batch: DetachedBatch) -> Result<(), StoreError> {
        self.write(batch.0, self.sync_writes)
    }

    /// Applies the batch atomically and fsyncs the WAL before returning, whatever
    /// `sync_writes` says: for records that files already written depend on (a
    /// flush's start), which a power loss must not take back.
    pub fn commit_synced(&self, batch: StoreBatch<'_>) -> Result<(), StoreError> {
        self.write(batch.batch, true)
    }

    /// A consistent, read-only view of the store as of now: every read through it
    /// (hot rows, stale markers, the pk index) sees the same RocksDB snapshot, so a
    /// write committed meanwhile is seen by all of them or by none. The view owns
    /// its snapshot: it can be kept by a query plan and read from any thread.
    pub fn view(&self) -> StoreView {
        StoreView(ViewOf::Snapshot(SnapshotCell::new(self.db.clone(), |db| {
            db.snapshot()
        })))
    }

    /// A view of the latest committed state: every read through it sees what is
    /// committed when it runs (no snapshot is taken). The one read API of the store
    /// is [`StoreView`]; this is it without a snapshot.
    pub fn latest(&self) -> StoreView {
        StoreView(ViewOf::Latest(self.db.clone()))
    }
}

type DbSnapshot<'a> = Snapshot<'a>;

self_cell::self_cell!(
    /// A RocksDB snapshot together with the database it belongs to.
    struct SnapshotCell {
        owner: Arc<DB>,
        #[covariant]
        dependent: DbSnapshot,
    }
);

/// The store's one read API: a snapshot ([`Store::view`]), whose reads never see a
/// write committed after it was taken, or the latest state ([`Store::latest`]), whose
/// reads see what is committed when each runs. Code that needs one moment across
/// several reads (scans, the commit's checks, version lookups) takes a snapshot.
pub struct StoreView(ViewOf);

enum ViewOf {
    Snapshot(SnapshotCell),
    Latest(Arc<DB>),
}

impl StoreView {
    fn db(&self) -> &DB {
        match &self.0 {
            ViewOf::Snapshot(cell) => cell.borrow_owner(),
            ViewOf::Latest(db) => db,
        }
    }

    fn snapshot(&self) -> Option<&Snapshot<'_>> {
        match &self.0 {
            ViewOf::Snapshot(cell) => Some(cell.borrow_dependent()),
            ViewOf::Latest(_) => None,
        }
    }

    pub fn system_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db().get_cf_opt(
            cf(self.db(), CF_SYSTEM),
            key.as_bytes(),
            &read_options(self.snapshot()),
        )?)
    }

    /// Every `system` record whose key starts with `prefix`, in key order.
    pub fn system_scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db().iterator_cf_opt(
            cf(self.db(), CF_SYSTEM),
            read_options(self.snapshot()),
            IteratorMode::From(prefix.as_bytes(), Direction::Forward),
        ) {
            let (key, value) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let key =
                String::from_utf8(key.to_vec()).map_err(|_| StoreError::CorruptKey { cf: CF_SYSTEM })?;
            out.push((key, value.to_vec()));
        }
        Ok(out)
    }

    /// Visits the `system` records whose key starts with `prefix`, in key order,
    /// until `visit` returns `false`.
    pub fn system_scan_while(
        &self,
        prefix: &str,
        mut visit: impl FnMut(&str, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut iter = self
            .db()
            .raw_iterator_cf_opt(cf(self.db(), CF_SYSTEM), read_options(self.snapshot()));
        iter.seek(prefix.as_bytes());
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = std::str::from_utf8(key).map_err(|_| StoreError::CorruptKey { cf: CF_SYSTEM })?;
            if !visit(key, value) {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    /// The scopes (user ids) that have hot rows in a table, in key order. One seek
    /// per scope: the cost does not grow with the number of rows.
    pub fn hot_scopes(&self, table_id: u32) -> Result<Vec<String>, StoreError> {
        let prefix = table_prefix(table_id);
        let mut options = read_options(self.snapshot());
        if let Some(upper) = prefix_upper_bound(&prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_HOT), options);
        let mut scopes = Vec::new();
        iter.seek(&prefix);
        while iter.valid() {
            let key = iter.key().expect("valid iterator has a key");
            let (_, scope, _) = parse_hot_key(key).ok_or(StoreError::CorruptKey { cf: CF_HOT })?;
            let next = prefix_upper_bound(&scope_prefix(table_id, scope));
            scopes.push(scope.to_string());
            match next {
                Some(next) => iter.seek(&next),
                None => break,
            }
        }
        iter.status()?;
        Ok(scopes)
    }

    /// How many hot row versions a table has (all scopes). Reads keys only.
    pub fn hot_count(&self, table_id: u32) -> Result<u64, StoreError> {
        let mut count = 0u64;
        let prefix = table_prefix(table_id);
        let mut options = read_options(self.snapshot());
        if let Some(upper) = prefix_upper_bound(&prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_HOT), options);
        iter.seek(&prefix);
        while iter.valid() {
            count += 1;
            iter.next();
        }
        iter.status()?;
        Ok(count)
    }

    /// The `_seq`s that index entries name (`None`: no such entry).
    pub fn index_multi_get(&self, keys: &[&[u8]]) -> Result<Vec<Option<u64>>, StoreError> {
        let idx = cf(self.db(), CF_IDX);
        self.db()
            .multi_get_cf_opt(keys.iter().map(|k| (idx, *k)), &read_options(self.snapshot()))
            .into_iter()
            .map(|r| match r? {
                Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                    .map(|b| Some(u64::from_be_bytes(b)))
                    .map_err(|_| StoreError::CorruptKey { cf: CF_IDX }),
                None => Ok(None),
            })
            .collect()
    }

    /// Whether a table has logged changes in time buckets before `bucket`.
    pub fn has_changes_before(&self, table_id: u32, bucket: u32) -> Result<bool, StoreError> {
        let mut upper = table_prefix(table_id);
        upper.extend_from_slice(&bucket.to_be_bytes());
        let mut options = read_options(self.snapshot());
        options.set_iterate_upper_bound(upper);
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_CHANGES), options);
        iter.seek(table_prefix(table_id));
        let found = iter.valid();
        iter.status()?;
        Ok(found)
    }

    /// The first time bucket in which a table has logged changes.
    pub fn first_change_bucket(&self, table_id: u32) -> Result<Option<u32>, StoreError> {
        let prefix = table_prefix(table_id);
        let mut iter = self
            .db()
            .raw_iterator_cf_opt(cf(self.db(), CF_CHANGES), read_options(self.snapshot()));
        iter.seek(&prefix);
        let bucket = match iter.key() {
            Some(key) if key.starts_with(&prefix) => key
                .get(4..8)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes),
            _ => None,
        };
        iter.status()?;
        Ok(bucket)
    }

    pub fn hot_get(&self, table_id: u32, scope: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db().get_cf_opt(
            cf(self.db(), CF_HOT),
            hot_key(table_id, scope, seq),
            &read_options(self.snapshot()),
        )?)
    }

    /// Visits one scope's hot rows in `_seq` order without copying them: `visit`
    /// gets `(_seq, encoded row)` and returns `false` to stop.
    pub fn hot_visit(
        &self,
        table_id: u32,
        scope: &str,
        mut visit: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let prefix = scope_prefix(table_id, scope);
        let upper = prefix_upper_bound(&prefix);
        hot_scan_range(self.db(), self.snapshot(), prefix, upper, |seq, _, value| {
            visit(seq, value)
        })
    }

    /// The smallest and largest `_seq` of one scope's hot rows with `_seq >=
    /// from_seq` (`None`: there are none). Two seeks.
    pub fn hot_seq_bounds(
        &self,
        table_id: u32,
        scope: &str,
        from_seq: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let prefix = scope_prefix(table_id, scope);
        let mut options = read_options(self.snapshot());
        if let Some(upper) = prefix_upper_bound(&prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_HOT), options);
        iter.seek(hot_key(table_id, scope, from_seq));
        let Some(first) = iter.key() else {
            iter.status()?;
            return Ok(None);
        };
        let (_, _, first) = parse_hot_key(first).ok_or(StoreError::CorruptKey { cf: CF_HOT })?;
        iter.seek_to_last();
        let last = match iter.key() {
            Some(key) => parse_hot_key(key).ok_or(StoreError::CorruptKey { cf: CF_HOT })?.2,
            None => first,
        };
        iter.status()?;
        Ok(Some((first, last.max(first))))
    }

    /// [`StoreView::hot_visit`] of the rows with `from_seq <= _seq <= through_seq`.
    pub fn hot_visit_between(
        &self,
        table_id: u32,
        scope: &str,
        from_seq: u64,
        through_seq: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        hot_scan_range(
            self.db(),
            self.snapshot(),
            hot_key(table_id, scope, from_seq),
            seq_upper_bound(table_id, scope, through_seq),
            |seq, _, value| visit(seq, value),
        )
    }

    /// Visits the index entries with keys in `[from, to)` in key order: `visit` gets
    /// `(key, _seq)` and returns `false` to stop.
    pub fn index_visit(
        &self,
        from: &[u8],
        to: &[u8],
        mut visit: impl FnMut(&[u8], u64) -> bool,
    ) -> Result<(), StoreError> {
        let mut options = read_options(self.snapshot());
        options.set_iterate_upper_bound(to.to_vec());
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_IDX), options);
        iter.seek(from);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let seq = <[u8; 8]>::try_from(value)
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::CorruptKey { cf: CF_IDX })?;
            if !visit(key, seq) {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    /// Many hot row versions of one scope by `_seq` (one RocksDB multi-get), in the
    /// order asked; `None` for a version no longer hot.
    pub fn hot_multi_get(
        &self,
        table_id: u32,
        scope: &str,
        seqs: &[u64],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let hot = cf(self.db(), CF_HOT);
        let keys: Vec<_> = seqs
            .iter()
            .map(|&seq| (hot, hot_key(table_id, scope, seq)))
            .collect();
        self.db()
            .multi_get_cf_opt(keys, &read_options(self.snapshot()))
            .into_iter()
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    /// The `_seq`s of one scope's Parquet row versions that a later write superseded
    /// (see [`StoreBatch::put_stale`]), in ascending order.
    pub fn stale_seqs(&self, table_id: u32, scope: &str) -> Result<Vec<u64>, StoreError> {
        let prefix = scope_prefix(table_id, scope);
        let mut options = read_options(self.snapshot());
        if let Some(upper) = prefix_upper_bound(&prefix) {
            options.set_iterate_upper_bound(upper);
        }
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_STALE), options);
        let mut seqs = Vec::new();
        iter.seek(&prefix);
        while let Some(key) = iter.key() {
            let (_, _, seq) = parse_hot_key(key).ok_or(StoreError::CorruptKey { cf: CF_STALE })?;
            seqs.push(seq);
            iter.next();
        }
        iter.status()?;
        Ok(seqs)
    }

    pub fn pk_get(&self, table_id: u32, scope: &str, pk: &Value) -> Result<Option<PkEntry>, StoreError> {
        let key = pk_key(table_id, scope, pk);
        match (self.db()).get_pinned_cf_opt(cf(self.db(), CF_PK), key, &read_options(self.snapshot()))? {
            Some(bytes) => PkEntry::decode(&bytes)
                .map(Some)
                .ok_or(StoreError::CorruptKey { cf: CF_PK }),
            None => Ok(None),
        }
    }

    /// Visits one scope's logged changes of one time bucket with `_seq` in
    /// `(after, through]`, in `_seq` order: `visit` gets `(_seq, value)` and returns
    /// `false` to stop.
    pub fn changes_visit(
        &self,
        table_id: u32,
        bucket: u32,
        scope: &str,
        after: u64,
        through: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if after >= through {
            return Ok(());
        }
        let from = change_key(table_id, bucket, scope, after + 1);
        let mut options = read_options(self.snapshot());
        // Just above the key of `through`: below that of `through + 1`.
        let mut upper = change_key(table_id, bucket, scope, through);
        upper.push(0);
        options.set_iterate_upper_bound(upper);
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_CHANGES), options);
        iter.seek(&from);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let seq = change_key_seq(key).ok_or(StoreError::CorruptKey { cf: CF_CHANGES })?;
            if !visit(seq, value)? {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    /// The pk entry of the key whose row-codec cell is `pk_cell` (as an index
    /// entry's key ends).
    pub fn pk_get_cell(
        &self,
        table_id: u32,
        scope: &str,
        pk_cell: &[u8],
    ) -> Result<Option<PkEntry>, StoreError> {
        self.pk_get(table_id, scope, &crate::row_codec::decode_value(pk_cell)?)
    }

    /// Visits the pk entries with keys in `[from, to)` (keys built with
    /// [`pk_range_key`]) in key order, that is in primary-key order: `visit` gets
    /// each entry's key and entry and returns `false` to stop.
    pub fn pk_visit(
        &self,
        from: &[u8],
        to: &[u8],
        mut visit: impl FnMut(&[u8], PkEntry) -> bool,
    ) -> Result<(), StoreError> {
        let mut read_options = read_options(self.snapshot());
        read_options.set_iterate_upper_bound(to.to_vec());
        let mut iter = self.db().raw_iterator_cf_opt(cf(self.db(), CF_PK), read_options);
        iter.seek(from);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let entry = PkEntry::decode(value).ok_or(StoreError::CorruptKey { cf: CF_PK })?;
            if !visit(key, entry) {
                return Ok(());
            }
            iter.next();
        }
        iter.status()?;
        Ok(())
    }

    /// The `pk` entries of many keys of one scope, in the order of `keys`: one RocksDB
    /// multi-get, not a read per key. With [`StoreView::hot_get`] on the same view,
    /// the versions the entries name are there to read.
    pub fn pk_multi_get<'a>(
        &self,
        table_id: u32,
        scope: &str,
        keys: impl IntoIterator<Item = &'a Value>,
    ) -> Result<Vec<Option<PkEntry>>, StoreError> {
        let encoded: Vec<Vec<u8>> = keys.into_iter().map(|k| pk_key(table_id, scope, k)).collect();
        (self.db())
            .batched_multi_get_cf_opt(
                cf(self.db(), CF_PK),
                &encoded,
                false,
                &read_options(self.snapshot()),
            )
            .into_iter()
            .map(|result| match result? {
                Some(bytes) => PkEntry::decode(&bytes)
                    .map(Some)
                    .ok_or(StoreError::CorruptKey { cf: CF_PK }),
                None => Ok(None),
            })
            .collect()
    }
}

fn cf<'a>(db: &'a DB, name: &'static str) -> &'a ColumnFamily {
    db.cf_handle(name).expect("column family created at open")
}

/// Visits the hot rows from `prefix` up to `upper` in key order: `visit` gets
/// `(_seq, scope, encoded row)` and returns `false` to stop.
fn hot_scan_range(
    db: &DB,
    snapshot: Option<&Snapshot<'_>>,
    prefix: Vec<u8>,
    upper: Option<Vec<u8>>,
    mut visit: impl FnMut(u64, &str, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let mut read_options = read_options(snapshot);
    if let Some(upper) = upper {
        read_options.set_iterate_upper_bound(upper);
    }
    let mut iter = db.raw_iterator_cf_opt(cf(db, CF_HOT), read_options);
    iter.seek(&prefix);
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        let (_, row_scope, seq) = parse_hot_key(key).ok_or(StoreError::CorruptKey { cf: CF_HOT })?;
        if !visit(seq, row_scope, value)? {
            return Ok(());
        }
        iter.next();
    }
    iter.status()?;
    Ok(())
}

fn read_options(snapshot: Option<&Snapshot<'_>>) -> ReadOptions {
    let mut options = ReadOptions::default();
    if let Some(snapshot) = snapshot {
        options.set_snapshot(snapshot);
    }
    options
}

/// The first hot key of `scope` after `_seq = max_seq` (`None`: no bound).
fn seq_upper_bound(table_id: u32, scope: &str, max_seq: u64) -> Option<Vec<u8>> {
    match max_seq.checked_add(1) {
        Some(next) => Some(hot_key(table_id, scope, next)),
        None => prefix_upper_bound(&scope_prefix(table_id, scope)),
    }
}

fn pk_key(table_id: u32, scope: &str, pk: &Value) -> Vec<u8> {
    let mut key = scope_prefix(table_id, scope);
    encode_ordered(pk, &mut key);
    key
}

/// The `pk` key of `pk` in one scope, or (`None`) the scope's prefix: the bounds
/// of a [`StoreView::pk_visit`] range (`prefix_upper_bound` of a key is the first
/// key after it).
pub fn pk_range_key(table_id: u32, scope: &str, pk: Option<&Value>) -> Vec<u8> {
    match pk {
        Some(pk) => pk_key(table_id, scope, pk),
        None => scope_prefix(table_id, scope),
    }
}

/// The merge operator of the `system` column family: the largest of the stored
/// counter and its operands (8-byte big-endian values; anything else is ignored, so
/// a corrupt operand cannot lower a counter).
fn max_u64_merge(_key: &[u8], existing: Option<&[u8]>, operands: &rocksdb::MergeOperands) -> Option<Vec<u8>> {
    let as_u64 = |bytes: &[u8]| <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes);
    let max = existing
        .into_iter()
        .chain(operands)
        .filter_map(as_u64)
        .max()
        .unwrap_or(0);
    Some(max.to_be_bytes().to_vec())
}

/// A [`StoreBatch`]'s writes without its borrow of the store (`Send`, `'static`).
pub struct DetachedBatch(WriteBatch);

/// The writes of one statement, applied all together by [`Store::commit`] or not at all.
pub struct StoreBatch<'a> {
    store: &'a Store,
    batch: WriteBatch,
}

impl StoreBatch<'_> {
    /// The writes, for [`Store::commit_detached`].
    pub fn detach(self) -> DetachedBatch {
        DetachedBatch(self.batch)
    }

    pub fn put_system(&mut self, key: &str, value: &[u8]) {
        self.batch.put_cf(self.store.cf(CF_SYSTEM), key.as_bytes(), value);
    }

    /// Raises the system record `key` (an 8-byte big-endian counter) to at least
    /// `value`. A merge, not a read-modify-write: batches committed concurrently in
    /// any order leave the largest value.
    pub fn raise_system_counter(&mut self, key: &str, value: u64) {
        self.batch
            .merge_cf(self.store.cf(CF_SYSTEM), key.as_bytes(), value.to_be_bytes());
    }

    pub fn delete_system(&mut self, key: &str) {
        self.batch.delete_cf(self.store.cf(CF_SYSTEM), key.as_bytes());
    }

    pub fn put_hot(&mut self, table_id: u32, scope: &str, seq: u64, row: &[u8]) {
        self.batch
            .put_cf(self.store.cf(CF_HOT), hot_key(table_id, scope, seq), row);
    }

    pub fn delete_hot(&mut self, table_id: u32, scope: &str, seq: u64) {
        self.batch
            .delete_cf(self.store.cf(CF_HOT), hot_key(table_id, scope, seq));
    }

    pub fn put_pk(&mut self, table_id: u32, scope: &str, pk: &Value, entry: PkEntry) {
        self.batch
            .put_cf(self.store.cf(CF_PK), pk_key(table_id, scope, pk), entry.encode());
    }

    pub fn delete_pk(&mut self, table_id: u32, scope: &str, pk: &Value) {
        self.batch
            .delete_cf(self.store.cf(CF_PK), pk_key(table_id, scope, pk));
    }

    /// Records that the row version `seq` of a scope, which is (or is being
    /// written) in a Parquet segment, was superseded by a later write: readers of
    /// that segment skip it.
    pub fn put_stale(&mut self, table_id: u32, scope: &str, seq: u64) {
        self.batch
            .put_cf(self.store.cf(CF_STALE), hot_key(table_id, scope, seq), []);
    }

    /// Removes every stale marker of a scope (one range delete: what a compaction does
    /// once no segment holds the versions they name).
    pub fn delete_stale_scope(&mut self, table_id: u32, scope: &str) {
        let from = scope_prefix(table_id, scope);
        if let Some(to) = prefix_upper_bound(&from) {
            self.batch.delete_range_cf(self.store.cf(CF_STALE), from, to);
        }
    }

    /// Removes one scope's hot rows with `_seq <= max_seq` (one range delete: what
    /// a flush does once those rows are in a committed Parquet segment).
    pub fn delete_hot_through(&mut self, table_id: u32, scope: &str, max_seq: u64) {
        let from = scope_prefix(table_id, scope);
        if let Some(to) = seq_upper_bound(table_id, scope, max_seq) {
            self.batch.delete_range_cf(self.store.cf(CF_HOT), from, to);
        }
    }

    /// Writes a secondary-index entry (`key` from [`crate::index_key::index_entry_key`])
    /// naming the row version `seq`.
    pub fn put_index_entry(&mut self, key: &[u8], seq: u64) {
        self.batch.put_cf(self.store.cf(CF_IDX), key, seq.to_be_bytes());
    }

    pub fn delete_index_entry(&mut self, key: &[u8]) {
        self.batch.delete_cf(self.store.cf(CF_IDX), key);
    }

    /// Removes every entry of one index, all scopes.
    pub fn delete_index(&mut self, table_id: u32, index_id: u32) {
        let from = crate::index_key::index_prefix(table_id, index_id);
        let to = prefix_upper_bound(&from).expect("an index prefix is never all 0xff");
        self.batch.delete_range_cf(self.store.cf(CF_IDX), &from, &to);
    }

    /// Logs one change of a table (`keys::change_key`).
    pub fn put_change(&mut self, table_id: u32, bucket: u32, scope: &str, seq: u64, value: &[u8]) {
        self.batch.put_cf(
            self.store.cf(CF_CHANGES),
            change_key(table_id, bucket, scope, seq),
            value,
        );
    }

    /// Forgets a table's logged changes of the time buckets before `bucket`, all
    /// scopes: one range delete, whatever their number.
    pub fn delete_changes_before(&mut self, table_id: u32, bucket: u32) {
        let from = table_prefix(table_id);
        let mut to = table_prefix(table_id);
        to.extend_from_slice(&bucket.to_be_bytes());
        self.batch.delete_range_cf(self.store.cf(CF_CHANGES), &from, &to);
    }

    /// Removes every hot row, pk entry, stale marker, index entry and logged change
    /// of a table, all scopes.
    /// Removes every row, key, index entry and logged change of a table, and what
    /// the change log recorded of it.
    pub fn delete_table(&mut self, table_id: u32) {
        let from = table_prefix(table_id);
        let to = prefix_upper_bound(&from).expect("a table prefix is never all 0xff");
        for cf in [CF_HOT, CF_PK, CF_STALE, CF_IDX, CF_CHANGES] {
            self.batch.delete_range_cf(self.store.cf(cf), &from, &to);
        }
        self.delete_system(&changes_pruned_key(table_id));
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row_codec::{decode_row, encode_row};

    fn open(dir: &Path) -> Store {
        Store::open(dir, &StoreOptions::default()).unwrap()
    }

    #[test]
    fn what_a_pk_entry_names() {
        let live = PkEntry {
            seq: 10,
            deleted: false,
        };
        let tombstone = PkEntry {
            seq: 10,
            deleted: true,
        };
        assert!(live.is_live(0) && live.is_live(10));
        assert!(!live.is_live(11), "below a STREAM table's horizon: expired");
        assert!(!tombstone.is_live(0));
        assert!(live.names_live(10) && !live.names_live(9));
        assert!(!tombstone.names_live(10));
    }

    #[test]
    fn system_counters_keep_the_largest_value_in_any_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let read = |store: &Store| {
            u64::from_be_bytes(
                store
                    .latest()
                    .system_get("meta/n")
                    .unwrap()
                    .unwrap()
                    .try_into()
                    .unwrap(),
            )
        };
        {
            let store = open(dir.path());
            let mut batch = store.batch();
            batch.put_system("meta/n", &10u64.to_be_bytes());
            store.commit(batch).unwrap();
            for value in [5u64, 20, 7] {
                let mut batch = store.batch();
                batch.raise_system_counter("meta/n", value);
                store.commit(batch).unwrap();
            }
            assert_eq!(read(&store), 20);
        }
        let store = open(dir.path());
        assert_eq!(read(&store), 20, "merged value survives reopen");
    }

    #[test]
    fn a_scope_s_markers_go_in_one_range_delete_and_a_put_after_it_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut batch = store.batch();
        for seq in [3, 5, 9] {
            batch.put_stale(7, "u1", seq);
            batch.put_stale(7, "u2", seq);
        }
        batch.put_stale(8, "u1", 4);
        store.commit(batch).unwrap();
        let mut batch = store.batch();
        batch.delete_stale_scope(7, "u1");
        batch.put_stale(7, "u1", 5);
        store.commit(batch).unwrap();
        let view = store.latest();
        assert_eq!(view.stale_seqs(7, "u1").unwrap(), vec![5]);
        assert_eq!(view.stale_seqs(7, "u2").unwrap(), vec![3, 5, 9]);
        assert_eq!(view.stale_seqs(8, "u1").unwrap(), vec![4]);
    }

    #[test]
    fn a_dropped_table_leaves_no_change_log_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut batch = store.batch();
        batch.put_change(7, 3, "u1", 42, &[0]);
        batch.raise_system_counter(&changes_pruned_key(7), 41);
        batch.put_change(8, 3, "u1", 43, &[0]);
        batch.raise_system_counter(&changes_pruned_key(8), 40);
        store.commit(batch).unwrap();
        assert_eq!(store.latest().first_change_bucket(7).unwrap(), Some(3));
        let mut batch = store.batch();
        batch.delete_table(7);
        store.commit(batch).unwrap();
        assert_eq!(store.latest().first_change_bucket(7).unwrap(), None);
        assert_eq!(store.latest().system_get(&changes_pruned_key(7)).unwrap(), None);
        // Another table keeps its own.
        assert_eq!(store.latest().first_change_bucket(8).unwrap(), Some(3));
        assert!(
            store
                .latest()
                .system_get(&changes_pruned_key(8))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn batches_are_atomic_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            let mut batch = store.batch();
            let mut row = Vec::new();
            encode_row(false, [(1u32, &Value::BigInt(5))].into_iter(), &mut row);
            batch.put_hot(3, "u1", 10, &row);
            batch.put_pk(
                3,
                "u1",
                &Value::BigInt(5),
                PkEntry {
                    seq: 10,
                    deleted: false,
                },
            );
            batch.put_system("meta/x", b"1");
            store.commit(batch).unwrap();
        }
        let store = open(dir.path());
        let row = decode_row(&store.view().hot_get(3, "u1", 10).unwrap().unwrap()).unwrap();
        assert_eq!(row.get(1), Some(&Value::BigInt(5)));
        assert_eq!(
            store.latest().pk_get(3, "u1", &Value::BigInt(5)).unwrap(),
            Some(PkEntry {
                seq: 10,
                deleted: false
            })
        );
        assert_eq!(store.latest().pk_get(3, "u2", &Value::BigInt(5)).unwrap(), None);
        assert_eq!(
            store.latest().system_get("meta/x").unwrap().as_deref(),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn scans_stay_inside_their_scope_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut batch = store.batch();
        for (table, scope, seq) in [(1, "a", 1), (1, "a", 2), (1, "ab", 3), (1, "b", 4), (2, "a", 5)] {
            batch.put_hot(table, scope, seq, b"x");
        }
        store.commit(batch).unwrap();
        // Every row of a table, scope by scope.
        let seqs = |table: u32| {
            let mut seen = Vec::new();
            for scope in store.latest().hot_scopes(table).unwrap() {
                store
                    .view()
                    .hot_visit(table, &scope, |seq, _| {
                        seen.push(seq);
                        Ok(true)
                    })
                    .unwrap();
            }
            seen
        };
        // Key order: scopes are length-prefixed, so "b" sorts before "ab".
        assert_eq!(store.latest().hot_scopes(1).unwrap(), vec!["a", "b", "ab"]);
        assert_eq!(seqs(1), vec![1, 2, 4, 3]);
        assert_eq!(seqs(2), vec![5]);
        let mut batch = store.batch();
        batch.delete_table(1);
        store.commit(batch).unwrap();
        assert!(seqs(1).is_empty());
        assert_eq!(seqs(2), vec![5]);
    }

    #[test]
    fn flush_ranges_scopes_and_stale_markers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut batch = store.batch();
        for (scope, seq) in [("a", 1), ("a", 5), ("a", 9), ("bb", 2), ("c", 3)] {
            batch.put_hot(1, scope, seq, b"x");
        }
        batch.put_hot(2, "z", 1, b"x");
        store.commit(batch).unwrap();
        assert_eq!(store.latest().hot_scopes(1).unwrap(), vec!["a", "c", "bb"]);
        assert_eq!(store.latest().hot_count(1).unwrap(), 5);
        let mut seen = Vec::new();
        store
            .view()
            .hot_visit_between(1, "a", 0, 5, |seq, _| {
                seen.push(seq);
                Ok(true)
            })
            .unwrap();
        assert_eq!(seen, vec![1, 5]);
        assert_eq!(store.view().hot_seq_bounds(1, "a", 2).unwrap(), Some((5, 9)));
        assert_eq!(store.view().hot_seq_bounds(1, "a", 10).unwrap(), None);
        let mut batch = store.batch();
        batch.delete_hot_through(1, "a", 5);
        batch.put_stale(1, "a", 5);
        batch.put_stale(1, "a", 1);
        batch.put_stale(1, "c", 3);
        store.commit(batch).unwrap();
        let mut left = Vec::new();
        for scope in store.latest().hot_scopes(1).unwrap() {
            store
                .view()
                .hot_visit(1, &scope, |seq, _| {
                    left.push((scope.clone(), seq));
                    Ok(true)
                })
                .unwrap();
        }
        assert_eq!(left, vec![("a".into(), 9), ("c".into(), 3), ("bb".into(), 2)]);
        assert_eq!(store.view().stale_seqs(1, "a").unwrap(), vec![1, 5]);
        assert!(store.view().stale_seqs(1, "bb").unwrap().is_empty());
        let mut batch = store.batch();
        batch.delete_table(1);
        store.commit(batch).unwrap();
        assert!(store.view().stale_seqs(1, "a").unwrap().is_empty());
        assert!(store.latest().hot_scopes(1).unwrap().is_empty());
        assert_eq!(store.latest().hot_scopes(2).unwrap(), vec!["z"]);
    }
}
