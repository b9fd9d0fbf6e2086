//! Hot storage: the RocksDB keyspace of KalamDB.
//!
//! One RocksDB instance with these column families:
//! - `system`: the catalog (namespaces, tables, users) and server metadata, JSON values;
//! - `hot`: table rows, keyed `table_id | scope | _seq`, values in the row codec;
//! - `pkey`: the primary-key index, `table_id | scope | pk` (in key order) → `_seq`
//!   and flags;
//! - `stale`: `table_id | scope | _seq` of Parquet row versions a later write replaced;
//! - `idx`: secondary-index entries; `changes`: the live-query change log.
//!
//! The byte layouts are specified in `docs/storage-format.md`; [`keys`] and
//! [`row_codec`] are their only implementation.
//!
//! Architecture invariant: this crate knows nothing about SQL, DataFusion or HTTP.
//! It stores bytes in the documented layout and gives atomic batches.

pub mod index_key;
pub mod keys;
pub mod row_codec;
mod store;
mod upgrade;

pub use row_codec::{DecodedRow, RowCodecError};
pub use store::{
    DetachedBatch, PkEntry, Store, StoreBatch, StoreError, StoreOptions, StoreView, pk_range_key,
};
pub use upgrade::FORMAT_VERSION_KEY;

/// The on-disk format version written in `system` under `meta/format_version`
/// (2: order-preserving primary-key index keys).
pub const FORMAT_VERSION: u32 = 2;
