//! What a statement writes before it commits: each key's new version and what the
//! statement assumed about the key ([`PendingWrite`]), the outcomes of a commit,
//! and one scope's part of a transaction's commit ([`Group`]). Written by DML,
//! `/ingest` and transactions (`txn.rs`), committed by `write.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use kalamdb_commons::{ErrorCode, KalamError, Value};

use crate::catalog::TableDef;
use crate::locks::Claim;

/// What a statement assumed about a key when it computed the key's new row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The key holds no live row (INSERT); what to do when it does at commit.
    Absent(OnLive),
    /// The key's latest version is the live row version `_seq` (UPDATE, DELETE,
    /// the update of an upsert).
    Version(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLive {
    /// Refuse the statement ([`Outcome::Duplicate`]).
    Fail,
    /// Leave the key alone (`ON CONFLICT DO NOTHING`).
    Skip,
    /// Run the statement again (`ON CONFLICT DO UPDATE`: the key must be updated).
    Retry,
}

/// A new version of one key: a row, or a tombstone when `deleted`.
pub(crate) struct PendingWrite {
    pub key: Value,
    pub expect: Expect,
    pub deleted: bool,
    /// The row in the row codec (for a tombstone, only the key cell).
    pub row: Vec<u8>,
    /// The row's values in `table.columns` order, for `RETURNING` (a DELETE's: the
    /// deleted row, or nothing when the statement returns nothing).
    pub values: Vec<Value>,
}

pub(crate) enum Outcome {
    /// Committed; `written[i]` says whether write `i` was applied (false: skipped by
    /// [`OnLive::Skip`]).
    Done { written: Vec<bool> },
    /// A row the statement read changed before it could commit (or the table's
    /// schema did): nothing was written; run the statement again.
    Retry,
    /// Write `index` expected its key to hold no live row ([`OnLive::Fail`]) and it
    /// does: nothing was written; the statement fails with `DUPLICATE_KEY`.
    Duplicate { index: usize },
    /// Another statement claims a key this one writes: nothing was written; wait
    /// for the claim's release, then run the statement again.
    Claimed(Arc<Claim>),
}

/// One scope's part of a transaction's commit.
pub(crate) struct Group {
    pub table: Arc<TableDef>,
    pub scope: String,
    pub writes: Vec<PendingWrite>,
    /// What each write first expected of its key (`Absent(OnLive::Fail)`: a plain
    /// INSERT, whose conflict is a duplicate key rather than a lost race).
    pub expected: Vec<Expect>,
    /// The versions the writes replace, read before the locks (change log, live).
    pub replaced: Option<HashMap<u64, Vec<u8>>>,
}

/// A statement or commit after the table's definition changed under the transaction.
pub(crate) fn changed_definition(table: &TableDef) -> KalamError {
    KalamError::new(
        ErrorCode::SerializationFailure,
        format!(
            "the definition of '{}' changed during the transaction; it was rolled back: run it again",
            table.qualified_name()
        ),
    )
}

/// The error of a transaction that lost its race for a key.
pub(crate) fn serialization_failure(table: &TableDef) -> KalamError {
    KalamError::new(
        ErrorCode::SerializationFailure,
        format!(
            "could not serialize access: a row of '{}' the transaction wrote was changed by another commit since the transaction began; nothing was written: run it again",
            table.qualified_name()
        ),
    )
}
