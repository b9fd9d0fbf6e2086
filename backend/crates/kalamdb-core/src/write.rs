//! The commit of a DML statement, and the only place row versions are written.
//!
//! A statement does its query work — the source of `INSERT ... SELECT`, the WHERE of
//! UPDATE/DELETE, `ON CONFLICT DO UPDATE`'s SET — holding no lock, and ends with a
//! list of [`PendingWrite`]s: each key's new row (already encoded) and what the
//! statement assumed about the key when it computed it ([`Expect`]). [`commit`] then
//! takes the table's commit lock, reads the keys' latest `pk` entries (one
//! multi-get), checks every assumption, allocates the `_seq`s and writes one
//! `WriteBatch`. The lock is held for the check and the write only (microseconds, or
//! one WAL fsync with `sync_writes`), and only writers of the same table wait for it.
//!
//! What the commit lock guarantees:
//! - **Exact uniqueness**: the check reads the latest committed entries, and no
//!   other writer of the table commits between the check and the write.
//! - **`_seq` in commit order per table**: `_seq`s are allocated and written under
//!   the lock, so once a version with `_seq = s` is visible, every version of the
//!   table with a smaller `_seq` is visible too. A flush takes its watermark under
//!   the same lock, and a live query that resumes from a `_seq` never meets an older
//!   one arriving later.
//! - **No lost updates**: an UPDATE or DELETE expects each row's version to be the
//!   one it read ([`Expect::Version`]). When another statement replaced it in the
//!   meantime, [`commit`] writes nothing and answers [`Outcome::Retry`]: the caller
//!   runs the statement again on fresh data (as PostgreSQL re-evaluates a row that
//!   changed under READ COMMITTED).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kalamdb_commons::{ErrorCode, KalamError, KalamResult, Value};
use kalamdb_store::keys::prefix_upper_bound;
use kalamdb_store::row_codec::decode_row;
use kalamdb_store::{DecodedRow, PkEntry, StoreBatch, StoreView};

use crate::base::store_error;
use crate::catalog::{ID_COLUMN, TableDef};
use crate::locks::{ClaimGuard, CommitGuard, key_cell};
use crate::observers::{AfterWrite, Change, ChangeSet};
pub(crate) use crate::pending::{
    Expect, Group, OnLive, Outcome, PendingWrite, changed_definition, serialization_failure,
};
use crate::seq::LAST_SEQ_KEY;
use crate::tiers::Tiers;

/// Checks and commits `writes` to `scope` of `table` atomically (see the module
/// documentation). `table` is the definition the statement was planned with;
/// `own`: the statement's claim, if it holds one.
pub(crate) async fn commit(
    db: &Arc<Tiers>,
    table: &Arc<TableDef>,
    scope: &str,
    writes: &[PendingWrite],
    own: Option<&ClaimGuard>,
) -> KalamResult<Outcome> {
    // The versions the writes replace, for the change log and live queries: read
    // before the lock (a flushed one from its segment, one pass per segment), so
    // that the lock is held only for the check and the write. A version is never
    // changed once written, and the check below proves each replaced version is the
    // one the statement read: what was read here is exactly what is replaced.
    let mut replaced: Option<HashMap<u64, Vec<u8>>> = None;
    // What they hold, charged to the statement's budget as they are read (and each
    // is copied into the change log's entry).
    let charge = crate::budget::charge_current(&db.query_runtime, "the rows this statement replaces")?;
    loop {
        if replaced.is_none() && tracks_changes(db, table, scope) {
            replaced = read_replaced(db, table, scope, writes, &charge).await?;
        }
        let guard = db.commit_locks.lock(table.table_id, scope).await;
        // Another statement's claim of a key written here: wait for it, holding
        // nothing.
        if let Some(claim) = db.claims.of(table.table_id, scope)
            && own.is_none_or(|own| !own.owns(&claim))
            && claim.covers(writes.iter().map(|w| &w.key))
        {
            return Ok(Outcome::Claimed(claim));
        }
        // A subscription registered since the versions were (not) read: read them.
        if replaced.is_none() && tracks_changes(db, table, scope) && replaces_versions(writes) {
            drop(guard);
            continue;
        }
        return commit_locked(db, table, scope, writes, guard, replaced.as_ref()).await;
    }
}

/// Commits the writes of several scopes atomically — a transaction's commit
/// (`txn.rs`): their commit locks in (table, scope) order, every group checked as
/// [`commit`] checks one statement's, then one batch and one `_seq` range. A key
/// changed since the transaction read it fails the whole commit with
/// `SERIALIZATION_FAILURE` (a plain INSERT's key taken meanwhile: `DUPLICATE_KEY`);
/// nothing is written then. Returns the number of versions written.
pub(crate) async fn commit_all(db: &Arc<Tiers>, groups: &mut [Group]) -> KalamResult<u64> {
    let charge = crate::budget::charge_current(&db.query_runtime, "the rows this transaction replaces")?;
    loop {
        for group in groups.iter_mut() {
            if group.replaced.is_none() && tracks_changes(db, &group.table, &group.scope) {
                group.replaced =
                    read_replaced(db, &group.table, &group.scope, &group.writes, &charge).await?;
            }
        }
        let scopes: Vec<(u32, &str)> = (groups.iter())
            .map(|g| (g.table.table_id, g.scope.as_str()))
            .collect();
        let guards = db.commit_locks.lock_all(&scopes).await;
        // Another statement's claim of a key written here: wait for it, holding
        // nothing.
        let claimed = groups.iter().find_map(|g| {
            (db.claims.of(g.table.table_id, &g.scope)).filter(|c| c.covers(g.writes.iter().map(|w| &w.key)))
        });
        if let Some(claim) = claimed {
            drop(guards);
            crate::budget::within_budget(async {
                claim.released().await;
                Ok(())
            })
            .await?;
            continue;
        }
        // A subscription registered since the versions were (not) read: read them.
        if groups.iter().any(|g| {
            g.replaced.is_none() && tracks_changes(db, &g.table, &g.scope) && replaces_versions(&g.writes)
        }) {
            drop(guards);
            continue;
        }
        let mut checked = Vec::with_capacity(groups.len());
        for group in groups.iter() {
            if (db.catalog.table(&group.table.namespace, &group.table.name)).is_some_and(|current| {
                current.table_id == group.table.table_id && !Arc::ptr_eq(&current, &group.table)
            }) {
                return Err(changed_definition(&group.table));
            }
            match check(db, &group.table, &group.scope, &group.writes)? {
                Ok(done) => checked.push(done),
                Err(Outcome::Duplicate { index })
                    if group.expected[index] == Expect::Absent(OnLive::Fail) =>
                {
                    return Err(duplicate_key(&group.table, &group.writes[index].key));
                }
                Err(_) => return Err(serialization_failure(&group.table)),
            }
        }
        let total: u64 = checked.iter().map(|c| c.count).sum();
        if total == 0 {
            return Ok(0);
        }
        let mut seq = db.seq.next_block(total)?;
        let mut batch = db.store.batch();
        let mut after_write = Vec::new();
        let mut staged = Vec::with_capacity(groups.len());
        for (group, checked) in groups.iter().zip(&checked) {
            staged.push(stage(
                db,
                &group.table,
                &group.scope,
                &group.writes,
                checked,
                group.replaced.as_ref(),
                seq,
                &mut batch,
                &mut after_write,
            )?);
            seq += checked.count;
        }
        batch.raise_system_counter(LAST_SEQ_KEY, db.seq.last());
        write_batch(db, batch, after_write, guards).await?;
        for (group, staged) in groups.iter().zip(&staged) {
            staged.written(db, &group.table);
        }
        return Ok(total);
    }
}

/// Whether the commit observers want the changes (the change log, a subscription).
fn tracks_changes(db: &Tiers, table: &TableDef, scope: &str) -> bool {
    db.commit_observers.wants_changes(table.table_id, scope)
}

fn replaces_versions(writes: &[PendingWrite]) -> bool {
    writes.iter().any(|w| matches!(w.expect, Expect::Version(_)))
}

/// The stored bytes of the versions the writes expect to replace, in either tier
/// (`None`: they replace none), read on the blocking pool from one moment of both
/// tiers (a flush moving a version between a hot and a cold read would hide it).
async fn read_replaced(
    db: &Arc<Tiers>,
    table: &Arc<TableDef>,
    scope: &str,
    writes: &[PendingWrite],
    charge: &crate::budget::Charge,
) -> KalamResult<Option<HashMap<u64, Vec<u8>>>> {
    let seqs: Vec<u64> = (writes.iter())
        .filter_map(|w| match w.expect {
            Expect::Version(seq) => Some(seq),
            Expect::Absent(_) => None,
        })
        .collect();
    if seqs.is_empty() {
        return Ok(None);
    }
    let (db, table, scope, charge) = (db.clone(), table.clone(), scope.to_string(), charge.clone());
    tokio::task::spawn_blocking(move || {
        db.holds.wait_named(|| format!("replaced_rows:{}", table.name));
        crate::scoped::read_versions(&db, &table, &scope, seqs, |bytes| charge.grow(2 * bytes)).map(Some)
    })
    .await
    .map_err(|e| KalamError::internal(format!("reading replaced rows failed: {e}")))?
}

/// The commit proper, under the table's commit lock (`guard`): the check of every
/// assumption and one batch. `replaced`: the versions the writes replace, read
/// before the lock.
async fn commit_locked(
    db: &Arc<Tiers>,
    table: &Arc<TableDef>,
    scope: &str,
    writes: &[PendingWrite],
    guard: CommitGuard,
    replaced: Option<&HashMap<u64, Vec<u8>>>,
) -> KalamResult<Outcome> {
    let checked = match check(db, table, scope, writes)? {
        Ok(checked) => checked,
        Err(outcome) => return Ok(outcome),
    };
    if checked.count == 0 {
        return Ok(Outcome::Done {
            written: checked.written,
        });
    }
    let first_seq = db.seq.next_block(checked.count)?;
    let mut batch = db.store.batch();
    let mut after_write = Vec::new();
    let staged = stage(
        db,
        table,
        scope,
        writes,
        &checked,
        replaced,
        first_seq,
        &mut batch,
        &mut after_write,
    )?;
    batch.raise_system_counter(LAST_SEQ_KEY, db.seq.last());
    write_batch(db, batch, after_write, vec![guard]).await?;
    staged.written(db, table);
    Ok(Outcome::Done {
        written: checked.written,
    })
}

/// One scope's writes, checked under its commit lock ([`check`]).
pub(crate) struct Checked {
    /// Whether each write is applied (false: skipped by [`OnLive::Skip`]).
    pub written: Vec<bool>,
    /// Each key's latest `pk` entry when checked.
    latest: Vec<Option<PkEntry>>,
    /// Writes applied.
    pub count: u64,
    /// A view of now, when the table has secondary indexes, and the new rows'
    /// cells (decoded once, for the UNIQUE check and the entries).
    indexing: Option<StoreView>,
    new_rows: Vec<Option<DecodedRow>>,
}

/// Checks what `writes` assumed about their keys against the latest committed
/// entries, and UNIQUE indexes. Call with the scope's commit lock held. `Err`
/// of the inner result: the outcome of a commit that writes nothing.
pub(crate) fn check(
    db: &Tiers,
    table: &Arc<TableDef>,
    scope: &str,
    writes: &[PendingWrite],
) -> KalamResult<Result<Checked, Outcome>> {
    match db.catalog.table(&table.namespace, &table.name) {
        Some(current) if Arc::ptr_eq(&current, table) => {}
        Some(current) if current.table_id == table.table_id => return Ok(Err(Outcome::Retry)),
        _ => {
            return Err(KalamError::new(
                ErrorCode::TableNotFound,
                format!("table '{}' was dropped", table.qualified_name()),
            ));
        }
    }
    let mut checked = Checked {
        written: Vec::with_capacity(writes.len()),
        latest: Vec::new(),
        count: 0,
        indexing: None,
        new_rows: Vec::new(),
    };
    if writes.is_empty() {
        return Ok(Ok(checked));
    }
    checked.latest = db
        .store
        .latest()
        .pk_multi_get(table.table_id, scope, writes.iter().map(|w| &w.key))
        .map_err(store_error)?;
    // An expired row of a STREAM table is no row: its key is free, and the version
    // it names is freed by the sweep (not replaced here).
    let horizon = crate::stream::horizon(table);
    if horizon > 0 {
        for entry in &mut checked.latest {
            if entry.is_some_and(|e| e.seq < horizon) {
                *entry = None;
            }
        }
    }
    for (index, (write, latest)) in writes.iter().zip(&checked.latest).enumerate() {
        let live = latest.filter(|e| e.is_live(horizon));
        let apply = match write.expect {
            Expect::Absent(on_live) => match (live, on_live) {
                (None, _) => true,
                (Some(_), OnLive::Fail) => return Ok(Err(Outcome::Duplicate { index })),
                (Some(_), OnLive::Skip) => false,
                (Some(_), OnLive::Retry) => return Ok(Err(Outcome::Retry)),
            },
            Expect::Version(seq) if live.map(|e| e.seq) == Some(seq) => true,
            Expect::Version(_) => return Ok(Err(Outcome::Retry)),
        };
        checked.written.push(apply);
    }
    checked.count = checked.written.iter().filter(|w| **w).count() as u64;
    if checked.count == 0 {
        return Ok(Ok(checked));
    }
    // Secondary indexes need the new rows' cells (decoded once, for the UNIQUE check
    // and the entries) and, through a view of now, the replaced hot versions'.
    checked.indexing = (!table.indexes.is_empty()).then(|| db.store.view());
    if checked.indexing.is_some() {
        checked.new_rows = writes
            .iter()
            .zip(&checked.written)
            .map(|(w, apply)| (*apply && !w.deleted).then(|| decode_row(&w.row)).transpose())
            .collect::<Result<_, _>>()
            .map_err(|e| store_error(e.into()))?;
    }
    if let Some(view) = &checked.indexing
        && table.indexes.iter().any(|i| i.unique)
    {
        check_unique(view, table, scope, writes, &checked.written, &checked.new_rows)?;
    }
    Ok(Ok(checked))
}

/// What [`stage`] staged of one scope: counted once the batch is written.
pub(crate) struct Staged {
    versions: i64,
    hot_replaced: i64,
}

impl Staged {
    /// After the batch is written: the hot-row gauge and the observers.
    pub fn written(&self, db: &Tiers, table: &TableDef) {
        db.hot_rows.add(table.table_id, self.versions - self.hot_replaced);
        db.commit_observers.written(table, self.versions as u64);
    }
}

/// Stages the applied writes of `checked` into `batch` under `_seq`s `first_seq`,
/// `first_seq + 1`, ... (index entries, stale markers, the change log), and adds
/// to `after_write` what runs once the batch is written. Call with the scope's
/// commit lock held.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage(
    db: &Arc<Tiers>,
    table: &Arc<TableDef>,
    scope: &str,
    writes: &[PendingWrite],
    checked: &Checked,
    replaced: Option<&HashMap<u64, Vec<u8>>>,
    first_seq: u64,
    batch: &mut StoreBatch<'_>,
    after_write: &mut Vec<AfterWrite>,
) -> KalamResult<Staged> {
    // Read under the lock: a flush that started after the statement read its rows
    // has already moved the watermark, and replacing a version at or below it
    // must leave a stale marker.
    let flush_watermark = db.cold.watermark(table.table_id);
    // The commit observers: the change log (for `from_seq` resumes) and the
    // table's feed when a subscription of this scope listens. Both need each
    // change's replaced row (read before the lock).
    let tracking = tracks_changes(db, table, scope);
    let view = checked.indexing.as_ref();
    let mut changes = Vec::with_capacity(if tracking { checked.count as usize } else { 0 });
    let mut hot_replaced = 0i64;
    let mut markers = Vec::new();
    let applied = writes
        .iter()
        .zip(&checked.latest)
        .enumerate()
        .zip(&checked.written)
        .filter_map(|(pair, apply)| apply.then_some(pair));
    for (seq, (i, (write, latest))) in (first_seq..).zip(applied) {
        // Secondary indexes: the replaced hot version's entries go, the new version's
        // come (in that order: an entry whose key did not change is written again).
        if let Some(view) = view {
            if let Some(previous) = latest.filter(|p| !p.deleted)
                && let Some(bytes) = view
                    .hot_get(table.table_id, scope, previous.seq)
                    .map_err(store_error)?
            {
                let old = decode_row(&bytes).map_err(|e| store_error(e.into()))?;
                for key in crate::index::entry_keys(table, scope, &old) {
                    batch.delete_index_entry(&key);
                }
            }
            if let Some(new) = &checked.new_rows[i] {
                for key in crate::index::entry_keys(table, scope, new) {
                    batch.put_index_entry(&key, seq);
                }
            }
        }
        if tracking {
            let old = match latest.filter(|p| !p.deleted) {
                Some(previous) => {
                    let row = replaced.and_then(|rows| rows.get(&previous.seq)).ok_or_else(|| {
                        KalamError::internal(format!(
                            "the replaced row version {} was not read before the commit",
                            previous.seq
                        ))
                    })?;
                    Some((previous.seq, row.clone()))
                }
                None => None,
            };
            changes.push(Change {
                seq,
                old,
                new: (!write.deleted).then(|| write.row.clone()),
            });
        }
        if let Some(previous) = latest {
            batch.delete_hot(table.table_id, scope, previous.seq);
            if previous.seq <= flush_watermark {
                batch.put_stale(table.table_id, scope, previous.seq);
                markers.push(previous.seq);
            } else {
                hot_replaced += 1;
            }
        }
        batch.put_hot(table.table_id, scope, seq, &write.row);
        batch.put_pk(
            table.table_id,
            scope,
            &write.key,
            PkEntry {
                seq,
                deleted: write.deleted,
            },
        );
    }
    // Staged in the batch; what the observers run after the batch is written runs
    // before the lock is released: a feed sees the table's commits in `_seq` order,
    // and only committed ones.
    if tracking {
        let changes = Arc::new(ChangeSet {
            scope: scope.to_string(),
            changes,
        });
        after_write.extend(db.commit_observers.stage(batch, table.table_id, &changes));
    }
    if !markers.is_empty() && db.cold.logs_markers(table.table_id, scope) {
        // A compaction of the scope is running: its clean-up must keep these markers.
        let (db, table_id, scope) = (db.clone(), table.table_id, scope.to_string());
        // First, so nothing that runs after the write can keep it from being recorded.
        after_write.insert(
            0,
            Box::new(move || db.cold.note_markers(table_id, &scope, &markers)),
        );
    }
    Ok(Staged {
        versions: checked.count as i64,
        hot_replaced,
    })
}

/// Writes a staged batch, runs `after_write` once it is written, then releases
/// the commit locks (`guards`).
pub(crate) async fn write_batch(
    db: &Arc<Tiers>,
    batch: StoreBatch<'_>,
    after_write: Vec<AfterWrite>,
    guards: Vec<CommitGuard>,
) -> KalamResult<()> {
    if db.store.syncs_writes() {
        // An fsync takes milliseconds: off the async workers. The locks go with the
        // write and are released when it is done, even if this statement's future is
        // dropped meanwhile (a client gone): no later commit of the table can land
        // before it.
        let (batch, shared) = (batch.detach(), db.clone());
        tokio::task::spawn_blocking(move || {
            let written = shared.store.commit_detached(batch);
            if written.is_ok() {
                after_write.into_iter().for_each(|run| run());
            }
            drop(guards);
            written
        })
        .await
        .map_err(|e| KalamError::internal(format!("commit task failed: {e}")))?
        .map_err(store_error)?;
    } else {
        // A memtable insert and a buffered WAL append, with no await between taking
        // the locks and writing.
        db.store.commit(batch).map_err(store_error)?;
        after_write.into_iter().for_each(|run| run());
        drop(guards);
    }
    Ok(())
}

/// UNIQUE indexes: no two live rows of the scope share an index's values (NULLs
/// aside) once `writes` are applied. A stored entry conflicts when its row is live
/// (the pk index names the entry's version: entries of UNIQUE indexes outlive a
/// flush, so this covers both tiers) and is not one the statement rewrites itself
/// (its new values are checked among the statement's own). Runs under the table's
/// commit lock, on a view taken under it.
fn check_unique(
    view: &StoreView,
    table: &TableDef,
    scope: &str,
    writes: &[PendingWrite],
    written: &[bool],
    new_rows: &[Option<DecodedRow>],
) -> KalamResult<()> {
    let cell = key_cell;
    let rewritten: HashSet<Vec<u8>> = writes
        .iter()
        .zip(written)
        .filter(|(_, apply)| **apply)
        .map(|(w, _)| cell(&w.key))
        .collect();
    let rows: Vec<(Vec<u8>, &DecodedRow)> = writes
        .iter()
        .zip(new_rows)
        .filter_map(|(w, row)| Some((cell(&w.key), row.as_ref()?)))
        .collect();
    for index in table.indexes.iter().filter(|i| i.unique) {
        let mut own: HashMap<Vec<u8>, &[u8]> = HashMap::new();
        for (key, row) in &rows {
            let Some((prefix, shown)) = crate::index::unique_prefix(table, index, scope, row) else {
                continue;
            };
            if own
                .insert(prefix.clone(), key)
                .is_some_and(|other| other != key.as_slice())
            {
                return Err(crate::index::unique_violation(table, index, &shown));
            }
            let upper = prefix_upper_bound(&prefix).unwrap_or_else(|| prefix.clone());
            let mut conflict: Option<KalamResult<()>> = None;
            view.index_visit(&prefix, &upper, |entry, seq| {
                let other = &entry[prefix.len()..];
                if other == key.as_slice() || rewritten.contains(other) {
                    return true;
                }
                match view.pk_get_cell(table.table_id, scope, other) {
                    Ok(Some(e)) if e.names_live(seq) => {
                        conflict = Some(Err(crate::index::unique_violation(table, index, &shown)));
                        false
                    }
                    Ok(_) => true,
                    Err(e) => {
                        conflict = Some(Err(store_error(e)));
                        false
                    }
                }
            })
            .map_err(store_error)?;
            if let Some(result) = conflict {
                result?;
            }
        }
    }
    Ok(())
}

pub(crate) fn duplicate_key(table: &TableDef, key: &Value) -> KalamError {
    let name = table.pk_column().map(|c| c.name.as_str()).unwrap_or(ID_COLUMN);
    KalamError::new(
        ErrorCode::DuplicateKey,
        format!(
            "duplicate key {name} = {} in '{}'",
            key.display(),
            table.qualified_name()
        ),
    )
}
