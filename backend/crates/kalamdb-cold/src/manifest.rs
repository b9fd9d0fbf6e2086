//! `manifest-<v>.json`: the list of a scope's Parquet segments, version `v`.
//!
//! A manifest is never overwritten: each commit of a scope (a flush, a compaction)
//! creates the next version if it is absent (`PutMode::Create`), and the current
//! manifest is the highest version there. Versions below it are deleted after the
//! commit and at start-up. A format-1 `manifest.json` reads as version 0.
//!
//! ```json
//! {"format_version": 2, "version": 4, "table_id": 7, "next_batch": 3,
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

use serde::{Deserialize, Serialize};

use crate::ColdError;
use crate::layout::{ScopeDir, manifest_file_name, parse_manifest_file_name};

/// 2: versioned manifests (`version`); 1: one `manifest.json` per scope.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    /// The manifest's version: its object is `manifest-<version>.json` (0: the
    /// format-1 `manifest.json`, or none yet).
    #[serde(default)]
    pub version: u64,
    /// The table the directory belongs to; a manifest of another (dropped) table
    /// with the same name is not read.
    pub table_id: u32,
    /// The number of the next segment file.
    pub next_batch: u64,
    /// Who committed this version (a job id and scope): how a writer whose save's
    /// answer was lost tells its own commit from another writer's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit_id: String,
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
            version: 0,
            commit_id: String::new(),
            table_id,
            next_batch: 1,
            segments: Vec::new(),
        }
    }

    /// Reads the current manifest of a scope: the highest version there. None, or
    /// one written for another table id, is an empty manifest.
    pub fn load(dir: &ScopeDir, table_id: u32) -> Result<Manifest, ColdError> {
        // A commit may delete the version a listing found before it is read: list again.
        for _ in 0..3 {
            let (objects, _) = dir.storage.list_level(&dir.prefix)?;
            if let Some(manifest) = Manifest::load_listed(dir, table_id, &objects)? {
                return Ok(manifest);
            }
        }
        Err(ColdError::Manifest {
            path: dir.describe("manifest-*"),
            reason: "the current version kept changing while it was read".into(),
        })
    }

    /// [`Manifest::load`] from a listing of the scope already made (`objects`);
    /// `None` when the version it lists as current is gone.
    pub fn load_listed(
        dir: &ScopeDir,
        table_id: u32,
        objects: &[object_store::ObjectMeta],
    ) -> Result<Option<Manifest>, ColdError> {
        let current = (objects.iter())
            .filter_map(|m| m.location.filename().and_then(parse_manifest_file_name))
            .max();
        let Some(version) = current else {
            return Ok(Some(Manifest::empty(table_id)));
        };
        let name = version_file(version);
        let Some(bytes) = dir.storage.get(&dir.file(&name))? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| ColdError::Manifest {
            path: dir.describe(&name),
            reason: e.to_string(),
        })?;
        if manifest.format_version > MANIFEST_FORMAT_VERSION {
            return Err(ColdError::Manifest {
                path: dir.describe(&name),
                reason: format!(
                    "format version {} is newer than this server reads ({MANIFEST_FORMAT_VERSION})",
                    manifest.format_version
                ),
            });
        }
        if manifest.table_id != table_id {
            // Left by a dropped table of the same name: the scope is empty, and its
            // next version goes above that one (the highest version is current).
            return Ok(Some(Manifest {
                version,
                ..Manifest::empty(table_id)
            }));
        }
        Ok(Some(Manifest { version, ..manifest }))
    }

    /// The manifest that follows this one: the same content, the next version.
    pub fn next(&self) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Commits this manifest: creates its version's object, durably. Refused, with
    /// nothing written, when another writer committed that version.
    ///
    /// A put whose answer was lost (a timeout after the backend applied it, then a
    /// retry refused because the object exists) is told apart by reading the version
    /// back and comparing `commit_id`. When that read fails too, six times over about 15 s, the
    /// error is [`ColdError::CommitUnknown`]: the version may or may not be there, and
    /// the caller must keep every object it lists (start-up recovery settles it).
    pub fn save(&self, dir: &ScopeDir) -> Result<(), ColdError> {
        let name = version_file(self.version);
        let path = dir.file(&name);
        let bytes = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        let failure = match dir.storage.put_new(&path, bytes) {
            Ok(true) => return Ok(()),
            Ok(false) => None,
            Err(e) => Some(e),
        };
        let conflict = || ColdError::Manifest {
            path: dir.describe(&name),
            reason: "this version was already committed by another writer".into(),
        };
        let mut wait = std::time::Duration::from_millis(500);
        let mut last = None;
        for attempt in 0..6 {
            if attempt > 0 {
                std::thread::sleep(wait);
                wait *= 2;
            }
            match dir.storage.get(&path) {
                Ok(Some(found)) => {
                    let theirs: Option<Manifest> = serde_json::from_slice(&found).ok();
                    return match theirs {
                        Some(m) if !self.commit_id.is_empty() && m.commit_id == self.commit_id => Ok(()),
                        _ => Err(conflict()),
                    };
                }
                // Not there: the put did not happen.
                Ok(None) => return Err(failure.unwrap_or_else(conflict)),
                Err(e) => last = Some(e),
            }
        }
        Err(ColdError::CommitUnknown {
            path: dir.describe(&name),
            source: Box::new(last.or(failure).unwrap_or_else(conflict)),
        })
    }

    /// Takes back this manifest's version (the undo of a commit whose second half
    /// failed): the version before it is current again.
    pub fn withdraw(&self, dir: &ScopeDir) -> Result<(), ColdError> {
        dir.storage.delete(&dir.file(&version_file(self.version)))
    }

    /// Deletes the version before this one, after this one's commit (readers hold the
    /// manifest they read, not its object). Each commit deletes its predecessor, so
    /// no listing is needed; older versions a crash left are deleted at start-up.
    pub fn remove_older(&self, dir: &ScopeDir) -> Result<(), ColdError> {
        match self.version {
            0 => Ok(()),
            v => dir.storage.delete(&dir.file(&version_file(v - 1))),
        }
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

/// The object name of a version (0: the format-1 file).
fn version_file(version: u64) -> String {
    match version {
        0 => crate::layout::LEGACY_MANIFEST_FILE.to_string(),
        v => manifest_file_name(v),
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

    /// The manifest versions a scope holds.
    fn versions(dir: &ScopeDir) -> Vec<u64> {
        let (objects, _) = dir.storage.list_level(&dir.prefix).unwrap();
        (objects.iter())
            .filter_map(|m| m.location.filename().and_then(parse_manifest_file_name))
            .collect()
    }

    #[test]
    fn versions_are_committed_once_and_the_highest_is_current() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = std::sync::Arc::new(crate::Storage::local("local", tmp.path(), true).unwrap());
        let dir = ScopeDir::new(storage, "ns", "t", "u1");
        assert_eq!(Manifest::load(&dir, 7).unwrap(), Manifest::empty(7));
        let mut m = Manifest::empty(7).next();
        m.segments.push(segment(1, 10, 20));
        m.segments.push(segment(2, 30, 40));
        m.next_batch = 3;
        m.save(&dir).unwrap();
        let loaded = Manifest::load(&dir, 7).unwrap();
        assert_eq!(loaded, m);
        assert_eq!(loaded.version, 1);
        assert_eq!(loaded.segment_with_seq(35).unwrap().batch, 2);
        assert!(loaded.segment_with_seq(25).is_none());
        assert_eq!(loaded.watermark(), 45);
        assert_eq!(loaded.row_count(), 4);
        // A second writer of the same version is refused; the next one commits. A
        // writer that saves its own version again (its first answer lost) is told so.
        assert!(m.save(&dir).is_err());
        let mut ours = loaded.next();
        ours.commit_id = "job-1:u1".into();
        ours.save(&dir).unwrap();
        ours.save(&dir).unwrap();
        ours.withdraw(&dir).unwrap();
        let mut second = loaded.next();
        second.segments.pop();
        second.save(&dir).unwrap();
        assert_eq!(Manifest::load(&dir, 7).unwrap(), second);
        assert_eq!(versions(&dir).len(), 2);
        second.remove_older(&dir).unwrap();
        assert_eq!(versions(&dir), [2]);
        // Withdrawn, the version before is current (none here: empty).
        second.withdraw(&dir).unwrap();
        assert_eq!(Manifest::load(&dir, 7).unwrap(), Manifest::empty(7));
        // A directory left by a dropped table of the same name reads as empty, and the
        // new table's first commit goes above the leftover version.
        second.save(&dir).unwrap();
        let fresh = Manifest::load(&dir, 8).unwrap();
        assert_eq!((fresh.version, fresh.segments.len()), (2, 0));
        let first = fresh.next();
        first.save(&dir).unwrap();
        assert_eq!(Manifest::load(&dir, 8).unwrap(), first);
    }

    #[test]
    fn a_format_1_manifest_reads_as_version_0() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = std::sync::Arc::new(crate::Storage::local("local", tmp.path(), true).unwrap());
        let dir = ScopeDir::new(storage, "ns", "t", "u1");
        let scope = tmp.path().join("ns/t/u1");
        std::fs::create_dir_all(&scope).unwrap();
        let v1 = r#"{"format_version": 1, "table_id": 7, "next_batch": 2, "segments": []}"#;
        std::fs::write(scope.join("manifest.json"), v1).unwrap();
        let loaded = Manifest::load(&dir, 7).unwrap();
        assert_eq!((loaded.version, loaded.next_batch), (0, 2));
        let next = loaded.next();
        next.save(&dir).unwrap();
        next.remove_older(&dir).unwrap();
        assert!(!scope.join("manifest.json").exists());
        assert_eq!(Manifest::load(&dir, 7).unwrap().version, 1);
        std::fs::write(scope.join(crate::layout::manifest_file_name(2)), b"{not json").unwrap();
        assert!(Manifest::load(&dir, 7).is_err());
    }
}
