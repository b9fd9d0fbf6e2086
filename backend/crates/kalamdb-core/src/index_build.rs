//! `CREATE [UNIQUE] INDEX` without stopping the table's writers.
//!
//! The build runs under the DDL lock (no other schema change meanwhile) and the
//! table's flush gate (no flush moves a version between the tiers while the build
//! reads them; a running flush finishes first, a new one waits), but not under the
//! commit lock:
//!
//! 1. **Bulk.** At one moment `s0` (taken under the commit lock, so every version
//!    at or below it is committed and visible), the entries of every hot version and
//!    — for a UNIQUE index — of every live Parquet row are written, in chunks. The
//!    index is not in the catalog yet: no reader uses them, no writer maintains them.
//!    Two live rows sharing the index's values at `s0` fail the build.
//! 2. **Catch-up**, still without the lock: the hot versions written after `s0`.
//! 3. **Final step**, under the commit lock (writers wait for this only): the
//!    versions written since, then the definition with the new index in one batch.
//!
//! A version caught up and later replaced leaves its entry behind: an entry is a
//! pointer, and readers and the uniqueness check keep only those whose version is
//! live. A build that fails, or a server that stops mid-build, leaves entries of an
//! index id the catalog does not have: the next build of that id removes them first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kalamdb_commons::{KalamError, KalamResult};
use kalamdb_store::keys::prefix_upper_bound;
use kalamdb_store::row_codec::decode_row;
use kalamdb_store::{DecodedRow, StoreView};

use crate::base::store_error;
use crate::catalog::{Catalog, IndexDef, TableDef};
use crate::scoped::ScopedTable;
use crate::statements::Engine;

/// Entries written per batch while building.
const ENTRIES_PER_BATCH: usize = 10_000;

/// What one value of a UNIQUE index costs the build's duplicate check beyond its
/// bytes (charged to the statement's budget).
const SEEN_ENTRY_BYTES: usize = 48;

/// Builds `index` over `def` and commits `updated` (the definition with the index).
/// Returns the number of entries written.
pub(crate) async fn build(
    db: &Arc<Engine>,
    def: &Arc<TableDef>,
    updated: TableDef,
    index: IndexDef,
) -> KalamResult<u64> {
    let _gate = db.cold.flush_gate(def.table_id).write_owned().await;
    let only_new = Arc::new(TableDef {
        indexes: vec![index],
        ..updated.clone()
    });
    let built = run(db, def, &only_new, updated).await;
    if built.is_err() {
        // Leave no entry of an index that does not exist.
        let mut batch = db.store.batch();
        batch.delete_index(def.table_id, only_new.indexes[0].id);
        db.store.commit(batch).map_err(store_error)?;
    }
    built
}

async fn run(
    db: &Arc<Engine>,
    def: &Arc<TableDef>,
    only_new: &Arc<TableDef>,
    updated: TableDef,
) -> KalamResult<u64> {
    let blocking = |work: Box<dyn FnOnce() -> KalamResult<u64> + Send>| async move {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| KalamError::internal(format!("the index build failed: {e}")))?
    };
    // 1. Bulk, at s0.
    let (s0, view) = moment(db, def.table_id).await;
    let charge = crate::budget::charge_current(&db.query_runtime, "the values this index build checks")?;
    let mut entries = {
        let (db, table) = (db.clone(), only_new.clone());
        blocking(Box::new(move || bulk(&db, &table, &view, s0, &charge))).await?
    };
    db.holds.wait_async(|| format!("index_build:{}", def.name)).await;
    // 2. Catch-up, without the lock.
    let (s1, view) = moment(db, def.table_id).await;
    entries += {
        let (db, table) = (db.clone(), only_new.clone());
        blocking(Box::new(move || catch_up(&db, &table, &view, s0, s1))).await?
    };
    // 3. The rest and the definition, under the commit lock.
    let _writers = db.commit_locks.lock_table(def.table_id).await;
    let (s2, view) = (db.seq.last(), Arc::new(db.store.view()));
    entries += {
        let (db, table) = (db.clone(), only_new.clone());
        blocking(Box::new(move || catch_up(&db, &table, &view, s1, s2))).await?
    };
    let mut batch = db.store.batch();
    Catalog::stage_table(&mut batch, &updated);
    db.store.commit(batch).map_err(store_error)?;
    db.catalog.apply_table(updated);
    Ok(entries)
}

/// A moment of the table: the largest `_seq` committed and a view that sees every
/// version at or below it (both taken under the commit lock, held briefly).
async fn moment(db: &Engine, table_id: u32) -> (u64, Arc<StoreView>) {
    let _writers = db.commit_locks.lock_table(table_id).await;
    (db.seq.last(), Arc::new(db.store.view()))
}

/// Writes entries in chunks.
struct Entries<'a> {
    db: &'a Engine,
    batch: Vec<(Vec<u8>, u64)>,
    written: u64,
}

impl Entries<'_> {
    fn put(&mut self, key: Vec<u8>, seq: u64) -> KalamResult<()> {
        self.batch.push((key, seq));
        if self.batch.len() >= ENTRIES_PER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> KalamResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = self.db.store.batch();
        for (key, seq) in self.batch.drain(..) {
            batch.put_index_entry(&key, seq);
            self.written += 1;
        }
        self.db.store.commit(batch).map_err(store_error)
    }
}

/// Step 1: the entries of every version live at `view` (hot up to `through`, and the
/// live Parquet rows for a UNIQUE index), after removing any left by an earlier
/// build of the same index id.
fn bulk(
    db: &Arc<Engine>,
    table: &TableDef,
    view: &StoreView,
    through: u64,
    charge: &crate::budget::Charge,
) -> KalamResult<u64> {
    let index = &table.indexes[0];
    let mut clean = db.store.batch();
    clean.delete_index(table.table_id, index.id);
    db.store.commit(clean).map_err(store_error)?;
    let mut entries = Entries {
        db,
        batch: Vec::new(),
        written: 0,
    };
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut add = |scope: &str, seq: u64, row: &DecodedRow| -> KalamResult<()> {
        if index.unique
            && let Some((prefix, shown)) = crate::index::unique_prefix(table, index, scope, row)
        {
            charge.grow(prefix.len() + SEEN_ENTRY_BYTES)?;
            if !seen.insert(prefix) {
                return Err(crate::index::unique_violation(table, index, &shown));
            }
        }
        entries.put(crate::index::entry_key(table, index, scope, row), seq)
    };
    let shared = Arc::new(table.clone());
    for scoped in ScopedTable::hot_scopes(&db.tiers, &shared)? {
        let mut failure = None;
        scoped.visit_versions(view, through, |seq, bytes| {
            let row = decode_row(bytes)?;
            if !row.deleted
                && let Err(e) = add(scoped.scope(), seq, &row)
            {
                failure = Some(e);
                return Ok(false);
            }
            Ok(true)
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    if index.unique {
        for scope in db.cold.scopes_on_disk(table)? {
            db.cold
                .for_each_live_row(view, table, &scope, |seq, row| add(&scope, seq, row))?;
        }
    }
    entries.flush()?;
    Ok(entries.written)
}

/// Steps 2 and 3: the entries of the hot versions with `_seq` in `(after, through]`,
/// each new value of a UNIQUE index checked against the live rows at `view`.
fn catch_up(
    db: &Arc<Engine>,
    table: &TableDef,
    view: &StoreView,
    after: u64,
    through: u64,
) -> KalamResult<u64> {
    if through <= after {
        return Ok(0);
    }
    let index = &table.indexes[0];
    let mut entries = Entries {
        db,
        batch: Vec::new(),
        written: 0,
    };
    let shared = Arc::new(table.clone());
    for scoped in ScopedTable::hot_scopes(&db.tiers, &shared)? {
        let scope = scoped.scope().to_string();
        // The values of this catch-up's own new rows, by prefix.
        let mut own: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut failure = None;
        view.hot_visit_between(table.table_id, &scope, after + 1, through, |seq, bytes| {
            let row = decode_row(bytes)?;
            if row.deleted {
                return Ok(true);
            }
            let outcome = (|| -> KalamResult<()> {
                if index.unique {
                    check_new_value(view, table, &scope, seq, &row, &mut own)?;
                }
                entries.put(crate::index::entry_key(table, index, &scope, &row), seq)
            })();
            match outcome {
                Ok(()) => Ok(true),
                Err(e) => {
                    failure = Some(e);
                    Ok(false)
                }
            }
        })
        .map_err(store_error)?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    entries.flush()?;
    Ok(entries.written)
}

/// A UNIQUE index's check of a version written during the build: when it is still
/// live at `view`, no other live row may share its values.
fn check_new_value(
    view: &StoreView,
    table: &TableDef,
    scope: &str,
    seq: u64,
    row: &DecodedRow,
    own: &mut HashMap<Vec<u8>, Vec<u8>>,
) -> KalamResult<()> {
    let index = &table.indexes[0];
    let key = crate::index::row_key(table, row);
    let live = view
        .pk_get(table.table_id, scope, &key)
        .map_err(store_error)?
        .is_some_and(|e| e.names_live(seq));
    if !live {
        return Ok(());
    }
    let Some((prefix, shown)) = crate::index::unique_prefix(table, index, scope, row) else {
        return Ok(());
    };
    let cell = crate::locks::key_cell(&key);
    if own
        .insert(prefix.clone(), cell.clone())
        .is_some_and(|other| other != cell)
    {
        return Err(crate::index::unique_violation(table, index, &shown));
    }
    let upper = prefix_upper_bound(&prefix).unwrap_or_else(|| prefix.clone());
    let mut conflict = None;
    view.index_visit(&prefix, &upper, |entry, entry_seq| {
        let other = &entry[prefix.len()..];
        if other == cell.as_slice() {
            return true;
        }
        match view.pk_get_cell(table.table_id, scope, other) {
            Ok(Some(e)) if e.names_live(entry_seq) => {
                conflict = Some(crate::index::unique_violation(table, index, &shown));
                false
            }
            Ok(_) => true,
            Err(e) => {
                conflict = Some(store_error(e));
                false
            }
        }
    })
    .map_err(store_error)?;
    match conflict {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
