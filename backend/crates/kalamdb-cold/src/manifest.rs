//! `manifest.json`: the list of a directory's Parquet segments.
//!
//! ```json
//! {"format_version": 1, "table_id": 7, "next_batch": 3,
//!  "segments": [{"file": "batch-1.parquet", "batch": 1, "job_id": "...",
//!                "row_count": 1000, "deleted_count": 2, "size_bytes": 48211,
//!                "min_seq": 7.., "max_seq": 7.., "watermark": 7.., "created_at": 17..,
//!                "columns": [{"id": 1, "name": "id", "data_type": "BIGINT",
//!                             "min": "1", "max": "1000", "null_count": 0}, ...]}]}
//! ```
//! `columns` are the table's columns when the segment was written, by stable column
//! id: a reader maps them to the current schema (added columns read as their
//! backfill, dropped ones are ignored). `min`/`max` are text in the column's literal
//! form (`"42"`, `"2026-11-27"`, `"2026-11-27T10:00:00Z"`), absent when unknown
//! (BYTES and JSON columns, all-NULL columns, NaN).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ColdError;
use crate::fsutil::write_atomically;
use crate::layout::MANIFEST_FILE;

pub const MANIFEST_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The table the directory belongs to; a manifest of another (dropped) table
    /// with the same name is not read.
    pub table_id: u32,
    /// The number of the next segment file.
    pub next_batch: u64,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub file: String,
    pub batch: u64,
    pub job_id: String,
    /// Row versions in the file, tombstones included.
    pub row_count: u64,
    /// Tombstones (`_deleted = true`) among them.
    pub deleted_count: u64,
    pub size_bytes: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    /// The flush's watermark: every hot row of this scope with `_seq <= watermark`
    /// was moved by that flush (into this file) or superseded before it.
    pub watermark: u64,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    pub columns: Vec<ColumnStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnStats {
    pub id: u32,
    pub name: String,
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    pub null_count: u64,
}

impl Manifest {
    pub fn empty(table_id: u32) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            table_id,
            next_batch: 1,
            segments: Vec::new(),
        }
    }

    /// Reads `dir/manifest.json`. A missing file, or one written for another table
    /// id, is an empty manifest.
    pub fn load(dir: &Path, table_id: u32) -> Result<Manifest, ColdError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // No directory (or a path that is not one): nothing was flushed there.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Manifest::empty(table_id));
            }
            Err(e) => return Err(ColdError::io("read", &path, e)),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| ColdError::Manifest {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if manifest.format_version > MANIFEST_FORMAT_VERSION {
            return Err(ColdError::Manifest {
                path: path.display().to_string(),
                reason: format!(
                    "format version {} is newer than this server reads ({MANIFEST_FORMAT_VERSION})",
                    manifest.format_version
                ),
            });
        }
        if manifest.table_id != table_id {
            return Ok(Manifest::empty(table_id));
        }
        Ok(manifest)
    }

    /// Writes `dir/manifest.json` atomically and durably.
    pub fn save(&self, dir: &Path) -> Result<(), ColdError> {
        let bytes = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        write_atomically(&dir.join(MANIFEST_FILE), &bytes)
    }

    /// The highest flush watermark among the segments (0 without segments).
    pub fn watermark(&self) -> u64 {
        self.segments.iter().map(|s| s.watermark).max().unwrap_or(0)
    }

    /// The segment that may hold row version `seq`.
    pub fn segment_with_seq(&self, seq: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| s.min_seq <= seq && seq <= s.max_seq)
    }

    pub fn row_count(&self) -> u64 {
        self.segments.iter().map(|s| s.row_count).sum()
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(batch: u64, min_seq: u64, max_seq: u64) -> Segment {
        Segment {
            file: crate::layout::segment_file_name(batch),
            batch,
            job_id: "j".into(),
            row_count: 2,
            deleted_count: 0,
            size_bytes: 10,
            min_seq,
            max_seq,
            watermark: max_seq + 5,
            created_at: 1,
            columns: vec![ColumnStats {
                id: 1,
                name: "id".into(),
                data_type: "BIGINT".into(),
                min: Some("1".into()),
                max: None,
                null_count: 0,
            }],
        }
    }

    #[test]
    fn save_load_and_lookups() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path(), 7).unwrap(), Manifest::empty(7));
        let mut m = Manifest::empty(7);
        m.segments.push(segment(1, 10, 20));
        m.segments.push(segment(2, 30, 40));
        m.next_batch = 3;
        m.save(dir.path()).unwrap();
        let loaded = Manifest::load(dir.path(), 7).unwrap();
        assert_eq!(loaded, m);
        assert_eq!(loaded.segment_with_seq(35).unwrap().batch, 2);
        assert!(loaded.segment_with_seq(25).is_none());
        assert_eq!(loaded.watermark(), 45);
        assert_eq!(loaded.row_count(), 4);
        // A directory left by a dropped table of the same name reads as empty.
        assert_eq!(Manifest::load(dir.path(), 8).unwrap(), Manifest::empty(8));
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{not json").unwrap();
        assert!(Manifest::load(dir.path(), 7).is_err());
    }
}
