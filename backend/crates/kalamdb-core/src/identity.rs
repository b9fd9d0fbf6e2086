//! Identity columns' sequences (`SERIAL`, `GENERATED … AS IDENTITY`): one per column,
//! 1, 2, 3, …, never a value twice — also across crashes and restarts.
//!
//! Values are reserved in blocks: `system` key `identity/<table_id>/<column_id>` (i64
//! BE) holds the highest value reserved, written with an fsync before any value of the
//! block is handed out. After a restart the sequence continues above it, so values a
//! crash took back (reserved, maybe given to rows never committed) are skipped, as
//! PostgreSQL's are: gaps, never a repeat.

use std::collections::HashMap;

use kalamdb_commons::{ErrorCode, KalamError, KalamResult, KalamType};
use kalamdb_store::{Store, StoreBatch};
use parking_lot::Mutex;

use crate::base::store_error;

const IDENTITY_PREFIX: &str = "identity/";
/// Values reserved per durable write.
const BLOCK: i64 = 1000;

/// Per (table, column): the next value and the highest one reserved.
#[derive(Default)]
pub(crate) struct Identities {
    tables: Mutex<HashMap<(u32, u32), (i64, i64)>>,
}

fn key(table_id: u32, column_id: u32) -> String {
    format!("{IDENTITY_PREFIX}{table_id}/{column_id}")
}

impl Identities {
    /// The next value of a column's sequence (the column is of type `ty`).
    pub fn next(&self, store: &Store, table_id: u32, column_id: u32, ty: KalamType) -> KalamResult<i64> {
        let mut tables = self.tables.lock();
        let (next, reserved) = match tables.get(&(table_id, column_id)) {
            Some(&state) => state,
            None => {
                let key = key(table_id, column_id);
                let reserved = match store.latest().system_get(&key).map_err(store_error)? {
                    Some(bytes) => i64::from_be_bytes(
                        bytes
                            .try_into()
                            .map_err(|_| KalamError::internal(format!("corrupt {key}")))?,
                    ),
                    None => 0,
                };
                (reserved + 1, reserved)
            }
        };
        let max = match ty {
            KalamType::SmallInt => i16::MAX as i64,
            KalamType::Int => i32::MAX as i64,
            _ => i64::MAX,
        };
        if next > max {
            return Err(KalamError::new(
                ErrorCode::InvalidParameter,
                format!("an identity column's sequence reached its type's maximum ({max})"),
            ));
        }
        let mut reserved = reserved;
        if next > reserved {
            reserved = next.saturating_add(BLOCK - 1).min(max);
            let mut batch = store.batch();
            batch.put_system(&key(table_id, column_id), &reserved.to_be_bytes());
            store.commit_synced(batch).map_err(store_error)?;
        }
        tables.insert((table_id, column_id), (next + 1, reserved));
        Ok(next)
    }

    /// Forgets a dropped table's sequences (their keys are deleted in the drop's batch).
    pub fn stage_drop(&self, batch: &mut StoreBatch<'_>, table: &crate::catalog::TableDef) {
        for column in &table.columns {
            batch.delete_system(&key(table.table_id, column.id));
        }
        self.tables.lock().retain(|(id, _), _| *id != table.table_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_never_handed_out_twice_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("rocksdb"), &Default::default()).unwrap();
        let ids = Identities::default();
        let next = |ids: &Identities, table, column, ty| ids.next(&store, table, column, ty);
        let first: Vec<i64> = (0..3)
            .map(|_| next(&ids, 7, 1, KalamType::BigInt).unwrap())
            .collect();
        assert_eq!(first, [1, 2, 3]);
        assert_eq!(
            next(&ids, 8, 1, KalamType::BigInt).unwrap(),
            1,
            "one sequence per table"
        );
        assert_eq!(next(&ids, 7, 2, KalamType::BigInt).unwrap(), 1, "and per column");
        // A restart (a new allocator over the same store) continues above the block.
        let again = Identities::default();
        assert_eq!(next(&again, 7, 1, KalamType::BigInt).unwrap(), BLOCK + 1);
        // A SMALLINT sequence stops at its maximum.
        let mut batch = store.batch();
        batch.put_system("identity/9/1", &(i16::MAX as i64).to_be_bytes());
        store.commit(batch).unwrap();
        assert!(next(&again, 9, 1, KalamType::SmallInt).is_err());
    }
}
