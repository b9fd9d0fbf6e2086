//! Cold storage: Parquet segments and their manifests.
//!
//! A USER table's flushed rows live under
//! `<storage>/<namespace>/<table>/<user_id>/`, one `batch-<n>.parquet` per flush and a
//! `manifest.json` that lists the segments of that directory. The manifest is the
//! truth: a file it does not list does not exist for readers (and is removed at
//! start-up). Every file is written as `*.tmp`, fsynced, renamed and its directory
//! fsynced, so no reader and no crash ever sees half a file. The layout and the crash
//! protocol are specified in `docs/storage-format.md`.
//!
//! Architecture invariant: this crate knows files, Arrow and Parquet. It knows nothing
//! about tables, SQL, RocksDB or HTTP; the caller says what columns mean.

mod fsutil;
pub mod layout;
pub mod manifest;
mod reader;
mod writer;

pub use fsutil::{remove_dir_all_if_exists, remove_file_if_exists, remove_temp_files};
pub use manifest::{ColumnStats, Manifest, Segment};
pub use reader::{SegmentMetadataCache, read_all, read_batches, read_seq, read_seqs};
pub use writer::{SegmentWriter, WrittenSegment};

/// Name of the `_seq` column in every segment (BIGINT, the row version).
pub const SEQ_FIELD: &str = "_seq";
/// Name of the `_deleted` column in every segment (BOOLEAN, tombstone flag).
pub const DELETED_FIELD: &str = "_deleted";

#[derive(Debug, thiserror::Error)]
pub enum ColdError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("Parquet {path}: {source}")]
    Parquet {
        path: String,
        source: datafusion::parquet::errors::ParquetError,
    },
    #[error("manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
}

impl ColdError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ColdError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn parquet(path: &std::path::Path, source: datafusion::parquet::errors::ParquetError) -> Self {
        ColdError::Parquet {
            path: path.display().to_string(),
            source,
        }
    }
}
