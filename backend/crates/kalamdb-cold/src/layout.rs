//! Where cold files live.
//!
//! ```text
//! <storage>/<namespace>/<table>/<user_id>/batch-<n>.parquet
//! <storage>/<namespace>/<table>/<user_id>/manifest.json
//! ```

use std::path::{Path, PathBuf};

pub const MANIFEST_FILE: &str = "manifest.json";
/// Suffix of files being written; never read, removed at start-up.
pub const TEMP_SUFFIX: &str = ".tmp";

pub fn table_dir(storage: &Path, namespace: &str, table: &str) -> PathBuf {
    storage.join(namespace).join(table)
}

pub fn scope_dir(storage: &Path, namespace: &str, table: &str, user_id: &str) -> PathBuf {
    table_dir(storage, namespace, table).join(user_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_file_name(3), "batch-3.parquet");
        assert_eq!(parse_segment_file_name("batch-3.parquet"), Some(3));
        assert_eq!(parse_segment_file_name("batch-3.parquet.tmp"), None);
        assert_eq!(
            scope_dir(Path::new("/s"), "app", "t", "alice"),
            PathBuf::from("/s/app/t/alice")
        );
    }
}
