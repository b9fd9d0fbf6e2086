//! STREAM tables: rows scoped per user like a USER table's, insert-only, that
//! vanish `TTL_SECONDS` after their insert (`docs/storage-format.md`, "STREAM
//! tables").
//!
//! They live in the `hot` column family like every hot row, keyed `table · scope ·
//! _seq`, and `_seq` carries its insert's millisecond in its high bits: within a
//! scope, the expired rows are exactly the keys below one `_seq` (the
//! [`horizon`]). So
//! - a read starts its scan at the horizon (one seek) and a point read ignores a
//!   version below it: an expired row is invisible the moment it expires;
//! - the sweep frees a scope's expired rows with one range delete, and deletes the
//!   primary-key entries of just those rows: its cost is one seek per scope plus
//!   the expired rows, never the rows still alive.
//!
//! Never flushed (`STORAGE FLUSH` is `UNSUPPORTED`), no secondary indexes, and
//! `UPDATE` is `UNSUPPORTED`; `DELETE` writes a tombstone as in any table (the
//! tombstone expires in its turn).

use std::sync::Arc;

use kalamdb_commons::{KalamResult, TableType};
use kalamdb_store::row_codec::decode_row;

use crate::base::store_error;
use crate::catalog::{ID_COLUMN_ID, TableDef};
use crate::seq::{SEQ_COUNTER_BITS, SEQ_EPOCH_MS};
use crate::tiers::Tiers;

/// The smallest `_seq` of a live row of `table` now: rows of a STREAM table
/// inserted more than its TTL ago are below it; 0 for every other table.
pub(crate) fn horizon(table: &TableDef) -> u64 {
    match (table.table_type, table.ttl_seconds) {
        (TableType::Stream, Some(ttl)) => {
            let now_ms = crate::base::now_micros().max(0) as u64 / 1000;
            let cutoff = now_ms.saturating_sub(ttl.saturating_mul(1000));
            cutoff.saturating_sub(SEQ_EPOCH_MS) << SEQ_COUNTER_BITS
        }
        _ => 0,
    }
}

/// Frees the expired rows of every STREAM table: per scope, under its commit lock
/// (a commit must not write a key's new entry between the sweep's check of the
/// old one and its delete), one seek, the expired rows' pk entries deleted when
/// they still name those rows, then one range delete.
pub(crate) fn sweep_expired(db: &Arc<Tiers>) -> KalamResult<u64> {
    let mut freed = 0u64;
    for table in db.catalog.tables() {
        if table.table_type != TableType::Stream {
            continue;
        }
        let horizon = horizon(&table);
        if horizon == 0 {
            continue;
        }
        let key_column = table.primary_key.unwrap_or(ID_COLUMN_ID);
        let mut expired = 0u64;
        for scope in db
            .store
            .latest()
            .hot_scopes(table.table_id)
            .map_err(store_error)?
        {
            let _guard = db.commit_locks.lock_blocking(table.table_id, &scope);
            let view = db.store.view();
            let mut batch = db.store.batch();
            let mut last = None;
            let mut keys = Vec::new();
            view.hot_visit(table.table_id, &scope, |seq, bytes| {
                if seq >= horizon {
                    return Ok(false);
                }
                last = Some(seq);
                if let Some(key) = decode_row(bytes)?.get(key_column) {
                    keys.push((seq, key.clone()));
                }
                Ok(true)
            })
            .map_err(store_error)?;
            let Some(last) = last else {
                continue;
            };
            let entries = view
                .pk_multi_get(table.table_id, &scope, keys.iter().map(|(_, k)| k))
                .map_err(store_error)?;
            for ((seq, key), entry) in keys.iter().zip(entries) {
                if entry.is_some_and(|e| e.seq == *seq) {
                    batch.delete_pk(table.table_id, &scope, key);
                }
            }
            expired += keys.len() as u64;
            batch.delete_hot_through(table.table_id, &scope, last);
            db.store.commit(batch).map_err(store_error)?;
        }
        db.hot_rows.add(table.table_id, -(expired as i64));
        freed += expired;
    }
    Ok(freed)
}
