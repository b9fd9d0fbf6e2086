//! Where cold objects live, in every storage.
//!
//! ```text
//! <namespace>/<table>/<user_id>/batch-<n>.parquet
//! <namespace>/<table>/<user_id>/manifest-<v: 20 digits>.json
//! ```

use std::sync::Arc;

use object_store::path::Path as ObjPath;

use crate::storage::Storage;

/// The manifest of format 1 (one file, replaced in place); read as version 0.
pub const LEGACY_MANIFEST_FILE: &str = "manifest.json";
/// Suffix of files earlier versions wrote before renaming them; removed at start-up.
pub const TEMP_SUFFIX: &str = ".tmp";

pub fn table_path(namespace: &str, table: &str) -> ObjPath {
    ObjPath::from_iter([namespace, table])
}

/// The objects of one scope (a USER table's user) in its storage.
#[derive(Debug, Clone)]
pub struct ScopeDir {
    pub storage: Arc<Storage>,
    pub prefix: ObjPath,
}

impl ScopeDir {
    pub fn new(storage: Arc<Storage>, namespace: &str, table: &str, user_id: &str) -> ScopeDir {
        ScopeDir {
            storage,
            prefix: ObjPath::from_iter([namespace, table, user_id]),
        }
    }

    /// The object `name` of this scope.
    pub fn file(&self, name: &str) -> ObjPath {
        self.prefix.clone().join(name)
    }

    /// `<storage>:<prefix>`, for messages.
    pub fn describe(&self, name: &str) -> String {
        format!("{}:{}", self.storage.name(), self.file(name))
    }
}

pub fn segment_file_name(batch: u64) -> String {
    format!("batch-{batch}.parquet")
}

/// The batch number of a segment file name (`batch-7.parquet` → 7).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("batch-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

/// The object name of manifest version `version`; zero-padded, so that a listing's
/// order is the versions' order.
pub fn manifest_file_name(version: u64) -> String {
    format!("manifest-{version:020}.json")
}

/// The version of a manifest object name (`manifest-…07.json` → 7; the format-1
/// `manifest.json` → 0).
pub fn parse_manifest_file_name(name: &str) -> Option<u64> {
    if name == LEGACY_MANIFEST_FILE {
        return Some(0);
    }
    let digits = name.strip_prefix("manifest-")?.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_file_name(3), "batch-3.parquet");
        assert_eq!(parse_segment_file_name("batch-3.parquet"), Some(3));
        assert_eq!(parse_segment_file_name("batch-3.parquet.tmp"), None);
        assert_eq!(manifest_file_name(7), "manifest-00000000000000000007.json");
        assert_eq!(parse_manifest_file_name(&manifest_file_name(7)), Some(7));
        assert_eq!(parse_manifest_file_name("manifest.json"), Some(0));
        assert_eq!(parse_manifest_file_name("manifest-7.json"), None);
        assert_eq!(table_path("app", "t").to_string(), "app/t");
    }
}
