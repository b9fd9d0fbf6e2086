//! Secondary indexes of hot rows: the entries a row version has, and the key ranges a
//! filter reads (`docs/storage-format.md`, "Secondary indexes").
//!
//! Every hot row version of an indexed table has one entry per index, written in the
//! same `WriteBatch` as the version; the entry of a version a later write replaced is
//! deleted by that write, and the entries of versions a flush moved to Parquet by the
//! flush — except a UNIQUE index's, which stay so that the uniqueness check
//! (`write.rs`) sees the live rows of both tiers. An entry is only a pointer: a reader
//! keeps the rows whose version is still hot, so an entry left behind (a crash between
//! a flush's steps) or kept for a flushed row is never an answer of a scan.

use std::ops::Bound;

use kalamdb_commons::{ErrorCode, KalamError, Value};
use kalamdb_store::DecodedRow;
use kalamdb_store::index_key::{encode_ordered, index_entry_key, index_scope_prefix};
use kalamdb_store::keys::prefix_upper_bound;

use crate::catalog::{ColumnDef, ID_COLUMN_ID, IndexDef, TableDef};

/// The value of column `id` in `row` (a column added after the row was written reads
/// as its backfill).
fn cell(table: &TableDef, row: &DecodedRow, id: u32) -> Value {
    match row.get(id) {
        Some(value) => value.clone(),
        None => table
            .columns
            .iter()
            .find(|c| c.id == id)
            .map(ColumnDef::backfill_value)
            .unwrap_or(Value::Null),
    }
}

/// The row's key: its primary-key cell, or `_id`.
pub(crate) fn row_key(table: &TableDef, row: &DecodedRow) -> Value {
    cell(table, row, table.primary_key.unwrap_or(ID_COLUMN_ID))
}

/// The entry keys of one row version, one per index of `table`.
pub(crate) fn entry_keys(table: &TableDef, scope: &str, row: &DecodedRow) -> Vec<Vec<u8>> {
    table
        .indexes
        .iter()
        .map(|index| entry_key(table, index, scope, row))
        .collect()
}

/// The entry key of one row version in one index.
pub(crate) fn entry_key(table: &TableDef, index: &IndexDef, scope: &str, row: &DecodedRow) -> Vec<u8> {
    let values: Vec<Value> = index.columns.iter().map(|&id| cell(table, row, id)).collect();
    let refs: Vec<&Value> = values.iter().collect();
    index_entry_key(table.table_id, index.id, scope, &refs, &row_key(table, row))
}

/// The part of a UNIQUE index's entry key that two rows with the same values share
/// (everything but the row's key), and the values as text for an error message;
/// `None` when a value is NULL (NULLs never conflict, as in SQL).
pub(crate) fn unique_prefix(
    table: &TableDef,
    index: &IndexDef,
    scope: &str,
    row: &DecodedRow,
) -> Option<(Vec<u8>, String)> {
    let mut prefix = index_scope_prefix(table.table_id, index.id, scope);
    let mut shown = Vec::with_capacity(index.columns.len());
    for &id in &index.columns {
        let value = cell(table, row, id);
        if matches!(value, Value::Null) {
            return None;
        }
        encode_ordered(&value, &mut prefix);
        let name = table
            .columns
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.as_str())
            .unwrap_or("?");
        shown.push(format!("{name} = {}", value.display()));
    }
    Some((prefix, shown.join(", ")))
}

/// The error of a second live row with a UNIQUE index's values.
pub(crate) fn unique_violation(table: &TableDef, index: &IndexDef, values: &str) -> KalamError {
    KalamError::new(
        ErrorCode::DuplicateKey,
        format!(
            "duplicate value {values} for UNIQUE index '{}' of '{}'",
            index.name,
            table.qualified_name()
        ),
    )
}

/// What an indexed hot scan reads: key ranges `[from, to)` of one secondary index,
/// or of the primary-key index.
#[derive(Debug, Clone)]
pub(crate) struct IndexProbe {
    /// The index's name (empty for the primary key).
    pub index: String,
    /// The ranges are `pk` keys (the rows in primary-key order), not index entries.
    pub primary_key: bool,
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl IndexProbe {
    /// How EXPLAIN names what the probe reads.
    pub fn describe(&self) -> String {
        if self.primary_key {
            "pk range".to_string()
        } else {
            format!("index {}", self.index)
        }
    }
}

/// A condition on an index's first column that its key ranges answer.
#[derive(Debug, Clone)]
pub(crate) enum FirstColumn {
    /// `col = v` or `col IN (v, ...)` (NULLs match nothing).
    Values(Vec<Value>),
    /// `col > / >= / < / <= v`, combined; `BETWEEN`.
    Range(Bound<Value>, Bound<Value>),
}

/// The key ranges of `index` in `scope` that hold every row meeting `condition`.
pub(crate) fn probe(table: &TableDef, index: &IndexDef, scope: &str, condition: &FirstColumn) -> IndexProbe {
    IndexProbe {
        index: index.name.clone(),
        primary_key: false,
        ranges: ranges(&index_scope_prefix(table.table_id, index.id, scope), condition),
    }
}

/// The ranges of the primary-key index in `scope` that hold every key meeting
/// `condition` (a condition on the primary-key column).
pub(crate) fn pk_probe(table: &TableDef, scope: &str, condition: &FirstColumn) -> IndexProbe {
    IndexProbe {
        index: String::new(),
        primary_key: true,
        ranges: ranges(
            &kalamdb_store::pk_range_key(table.table_id, scope, None),
            condition,
        ),
    }
}

/// The ranges of keys `prefix · encode_ordered(v) · ...` whose `v` meets `condition`.
fn ranges(prefix: &[u8], condition: &FirstColumn) -> Vec<(Vec<u8>, Vec<u8>)> {
    let encoded = |value: &Value| {
        let mut key = prefix.to_vec();
        encode_ordered(value, &mut key);
        key
    };
    let after = |key: Vec<u8>| prefix_upper_bound(&key).unwrap_or(key);
    match condition {
        FirstColumn::Values(values) => values
            .iter()
            .filter(|v| !matches!(v, Value::Null))
            .map(|v| {
                let key = encoded(v);
                (key.clone(), after(key))
            })
            .collect(),
        FirstColumn::Range(lower, upper) => {
            // NULLs sort first (one 0x00 byte): a range never includes them.
            let mut not_null = prefix.to_vec();
            not_null.push(1);
            let from = match lower {
                Bound::Included(v) => encoded(v),
                Bound::Excluded(v) => after(encoded(v)),
                Bound::Unbounded => not_null,
            };
            let to = match upper {
                Bound::Included(v) => after(encoded(v)),
                Bound::Excluded(v) => encoded(v),
                Bound::Unbounded => after(prefix.to_vec()),
            };
            if from < to { vec![(from, to)] } else { Vec::new() }
        }
    }
}
