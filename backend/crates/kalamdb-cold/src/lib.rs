//! Cold storage: Parquet segments and their manifests, in storages.
//!
//! A USER table's flushed rows live in its storage under
//! `<namespace>/<table>/<user_id>/`, one `batch-<n>.parquet` per flush (or compaction
//! output) and versioned manifests `manifest-<v>.json` that list the segments there.
//! The current manifest is the truth: an object it does not list does not exist for
//! readers (and is removed at start-up). A segment becomes an object only when its
//! upload completes and a manifest version is created once, never overwritten, so no
//! reader and no crash ever sees half a file. The layout and the crash protocol are
//! specified in `docs/storage-format.md`.
//!
//! Architecture invariant: this crate knows storages (object stores), Arrow and
//! Parquet. It knows nothing about tables, SQL, RocksDB or HTTP; the caller says what
//! columns mean.

mod fsutil;
pub mod layout;
pub mod manifest;
mod reader;
mod storage;
mod writer;

pub use layout::ScopeDir;
pub use manifest::{ColumnStats, Manifest, Segment};
pub use reader::{SegmentMetadataCache, read_all, read_batches, read_seq, read_seqs};
pub use storage::{RemoteLimits, S3Config, Storage};
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
    /// A manifest version was put, and neither the put's answer nor a read of the
    /// version came back: it may or may not be committed.
    #[error("manifest {path}: the commit's outcome is unknown ({source})")]
    CommitUnknown { path: String, source: Box<ColdError> },
    /// The storage's backend failed (unreachable, refused, timed out).
    #[error("storage '{storage}' cannot {action}: {source}")]
    Store {
        storage: String,
        action: &'static str,
        source: object_store::Error,
    },
}

impl ColdError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ColdError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn store(storage: &str, action: &'static str, source: object_store::Error) -> Self {
        ColdError::Store {
            storage: storage.to_string(),
            action,
            source,
        }
    }

    /// Whether this is a commit whose outcome is unknown (see
    /// [`Manifest::save`](crate::Manifest::save)).
    pub fn commit_unknown(&self) -> bool {
        matches!(self, ColdError::CommitUnknown { .. })
    }

    /// The storage whose backend failed, if that is what this is (a Parquet read
    /// that failed on the backend's answer counts too).
    pub fn unavailable_storage(&self) -> Option<&str> {
        match self {
            ColdError::Store { storage, .. } => Some(storage),
            ColdError::CommitUnknown { source, .. } => source.unavailable_storage(),
            ColdError::Parquet {
                path,
                source: datafusion::parquet::errors::ParquetError::External(e),
            } if e.is::<object_store::Error>() => path.split(':').next(),
            _ => None,
        }
    }
}
