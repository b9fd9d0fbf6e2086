//! Bringing a data directory written by an older server to [`FORMAT_VERSION`] at
//! open (docs/storage-format.md, "Upgrades").
//!
//! Version 1 → 2: the primary-key index moves from the `pk` column family (keys in
//! the row codec's cell encoding, little-endian numbers: not in key order) to
//! `pkey` (keys in the order-preserving encoding of secondary indexes, so a range
//! of keys is a range of RocksDB keys). The values do not change. The move is
//! restartable: `pkey` is emptied first, the format version becomes 2 in one
//! synced write after every entry is copied, and only then is `pk` dropped. A crash
//! before that write leaves version 1 and `pk` intact (the next open starts over);
//! a crash after it leaves an unused `pk`, dropped at the next open.

use rocksdb::{DB, WriteBatch, WriteOptions};

use crate::FORMAT_VERSION;
use crate::index_key::encode_ordered;
use crate::keys::{parse_scope_prefix, scope_prefix};
use crate::row_codec::decode_value;
use crate::store::{CF_PK, CF_PK_V1, CF_SYSTEM, StoreError};
use kalamdb_commons::Value;

/// The `system` key of the format version (ASCII decimal).
pub const FORMAT_VERSION_KEY: &str = "meta/format_version";

/// Entries copied per write batch.
const UPGRADE_BATCH: usize = 10_000;

/// Checks the directory's format version and upgrades it; a new directory gets the
/// current version. `has_v1_pk`: the `pk` column family of version 1 is open.
pub(crate) fn to_current(db: &mut DB, has_v1_pk: bool) -> Result<(), StoreError> {
    let system = db.cf_handle(CF_SYSTEM).expect("column family opened");
    let stored = match db.get_cf(system, FORMAT_VERSION_KEY)? {
        Some(bytes) => Some(
            std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| StoreError::CorruptRecord {
                    key: FORMAT_VERSION_KEY.into(),
                    reason: "not a decimal number".into(),
                })?,
        ),
        // A version-1 server wrote its version right after creating `pk`.
        None if has_v1_pk => Some(1),
        None => None,
    };
    match stored {
        Some(found) if found > FORMAT_VERSION => return Err(StoreError::NewerFormat { found }),
        Some(1) => {
            if !has_v1_pk {
                return Err(StoreError::Upgrade(
                    "format version 1 without its 'pk' column family".into(),
                ));
            }
            move_pk_index(db)?;
            write_version(db)?;
        }
        Some(_) => {}
        None => write_version(db)?,
    }
    if has_v1_pk {
        db.drop_cf(CF_PK_V1)?;
    }
    Ok(())
}

fn write_version(db: &DB) -> Result<(), StoreError> {
    let system = db.cf_handle(CF_SYSTEM).expect("column family opened");
    let mut batch = WriteBatch::default();
    batch.put_cf(system, FORMAT_VERSION_KEY, FORMAT_VERSION.to_string());
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(batch, &options)?;
    Ok(())
}

/// Copies every `pk` entry into `pkey` under its version-2 key.
fn move_pk_index(db: &DB) -> Result<(), StoreError> {
    let old = db.cf_handle(CF_PK_V1).expect("column family opened");
    let new = db.cf_handle(CF_PK).expect("column family opened");
    // What an interrupted earlier attempt copied.
    let mut batch = WriteBatch::default();
    let mut iter = db.raw_iterator_cf(new);
    iter.seek_to_first();
    while let Some(key) = iter.key() {
        batch.delete_cf(new, key);
        iter.next();
    }
    iter.status()?;
    drop(iter);
    db.write(std::mem::take(&mut batch))?;

    // Two float keys that v1 told apart and v2 does not (-0.0 and 0.0).
    let mut zeros = std::collections::HashSet::new();
    let mut pending = 0;
    let mut iter = db.raw_iterator_cf(old);
    iter.seek_to_first();
    while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
        let corrupt = || StoreError::CorruptKey { cf: CF_PK_V1 };
        let (table_id, scope, cell) = parse_scope_prefix(key).ok_or_else(corrupt)?;
        let pk = decode_value(cell)?;
        let zero = matches!(pk, Value::Float(f) if f == 0.0) || matches!(pk, Value::Double(f) if f == 0.0);
        if zero && !zeros.insert((table_id, scope.to_string())) {
            return Err(StoreError::Upgrade(format!(
                "table id {table_id} (scope '{scope}') has both -0 and 0 as primary keys, \
                 which are one key from format version 2 on: delete one of the rows with \
                 the previous server first"
            )));
        }
        let mut new_key = scope_prefix(table_id, scope);
        encode_ordered(&pk, &mut new_key);
        batch.put_cf(new, new_key, value);
        pending += 1;
        if pending == UPGRADE_BATCH {
            db.write(std::mem::take(&mut batch))?;
            pending = 0;
        }
        iter.next();
    }
    iter.status()?;
    drop(iter);
    db.write(batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rocksdb::Options;

    use super::*;
    use crate::row_codec::encode_value;
    use crate::store::{PkEntry, Store, StoreOptions};

    /// Column families of a version-1 directory.
    const V1_FAMILIES: [&str; 6] = ["system", "hot", "pk", "stale", "idx", "changes"];

    /// Writes a version-1 directory: its version and pk entries keyed by the row
    /// codec's cell. `extra` adds column families (an interrupted upgrade's `pkey`).
    fn write_v1(path: &Path, version: &str, entries: &[(u32, &str, Value, u64)], extra: &[(&str, &[u8])]) {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let mut families: Vec<&str> = V1_FAMILIES.to_vec();
        families.extend(extra.iter().map(|(cf, _)| *cf));
        let db = DB::open_cf(&options, path, &families).unwrap();
        db.put_cf(db.cf_handle("system").unwrap(), FORMAT_VERSION_KEY, version)
            .unwrap();
        for (table_id, scope, pk, seq) in entries {
            let mut key = scope_prefix(*table_id, scope);
            encode_value(pk, &mut key);
            let entry = PkEntry {
                seq: *seq,
                deleted: *seq % 2 == 0,
            };
            db.put_cf(db.cf_handle("pk").unwrap(), key, entry.encode())
                .unwrap();
        }
        for (cf, key) in extra {
            db.put_cf(
                db.cf_handle(cf).unwrap(),
                key,
                PkEntry {
                    seq: 1,
                    deleted: false,
                }
                .encode(),
            )
            .unwrap();
        }
    }

    fn families(path: &Path) -> Vec<String> {
        DB::list_cf(&Options::default(), path).unwrap()
    }

    fn version(store: &Store) -> String {
        String::from_utf8(store.latest().system_get(FORMAT_VERSION_KEY).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn a_version_1_directory_gets_ordered_pk_keys_and_loses_the_old_family() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [300i64, -5, 3, 70_000, -70_000];
        let mut entries: Vec<(u32, &str, Value, u64)> = keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (7, "alice", Value::BigInt(k), 11 + i as u64))
            .collect();
        entries.push((7, "bob", Value::BigInt(3), 40));
        entries.push((8, "", Value::Text("a\0b".into()), 41));
        entries.push((8, "", Value::Text("a".into()), 43));
        // An earlier upgrade that died midway left an entry of its own in `pkey`.
        write_v1(dir.path(), "1", &entries, &[("pkey", b"left over")]);

        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(version(&store), FORMAT_VERSION.to_string());
        let view = store.view();
        for (table_id, scope, pk, seq) in &entries {
            let entry = view.pk_get(*table_id, scope, pk).unwrap();
            assert_eq!(
                entry,
                Some(PkEntry {
                    seq: *seq,
                    deleted: seq % 2 == 0
                }),
                "{pk:?}"
            );
        }
        // Alice's keys now come back in key order from a range read.
        let from = crate::pk_range_key(7, "alice", None);
        let to = crate::keys::prefix_upper_bound(&from).unwrap();
        let mut seqs = Vec::new();
        view.pk_visit(&from, &to, |_, e| {
            seqs.push(e.seq);
            true
        })
        .unwrap();
        assert_eq!(seqs, vec![15, 12, 13, 11, 14]);
        let mut all = 0;
        view.pk_visit(&[], &[0xff; 8], |_, _| {
            all += 1;
            true
        })
        .unwrap();
        assert_eq!(all, entries.len(), "the left-over entry is gone");
        drop(view);
        drop(store);
        assert!(!families(dir.path()).contains(&"pk".to_string()));
        // Opening again changes nothing.
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(
            store.view().pk_get(7, "alice", &Value::BigInt(-5)).unwrap(),
            Some(PkEntry {
                seq: 12,
                deleted: true
            })
        );
    }

    #[test]
    fn a_newer_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_v1(dir.path(), "3", &[(7, "a", Value::BigInt(1), 1)], &[]);
        let error = Store::open(dir.path(), &StoreOptions::default()).err().unwrap();
        assert!(matches!(error, StoreError::NewerFormat { found: 3 }), "{error}");
        assert!(families(dir.path()).contains(&"pk".to_string()));
    }

    #[test]
    fn keys_that_version_2_merges_stop_the_upgrade_with_the_table_named() {
        let dir = tempfile::tempdir().unwrap();
        let entries = [(9, "", Value::Double(-0.0), 1), (9, "", Value::Double(0.0), 3)];
        write_v1(dir.path(), "1", &entries, &[]);
        let error = Store::open(dir.path(), &StoreOptions::default()).err().unwrap();
        assert!(error.to_string().contains("table id 9"), "{error}");
        // Nothing was lost: still version 1, with its pk family.
        assert!(families(dir.path()).contains(&"pk".to_string()));
    }

    #[test]
    fn a_new_directory_starts_at_the_current_version_without_the_old_family() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(version(&store), FORMAT_VERSION.to_string());
        drop(store);
        assert!(!families(dir.path()).contains(&"pk".to_string()));
    }
}
