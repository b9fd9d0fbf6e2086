//! File operations of local storages: directory fsync, clean-up of interrupted writes.

use std::fs::{self, File};
use std::path::Path;

use crate::ColdError;
use crate::layout::TEMP_SUFFIX;

/// fsync of a directory, so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ColdError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ColdError::io("fsync directory", dir, e))
}

/// Removes every file of an interrupted write under `dir` (recursively): `*.tmp`
/// (earlier versions) and a local object store's staging files `*#<digits>`;
/// returns how many. A missing `dir` has none.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<usize, ColdError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ColdError::io("list", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| ColdError::io("list", dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| ColdError::io("stat", &path, e))?;
        if file_type.is_dir() {
            removed += remove_temp_files(&path)?;
        } else if is_staging(&entry.file_name().to_string_lossy()) {
            fs::remove_file(&path).map_err(|e| ColdError::io("remove", &path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn is_staging(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
        || name
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes a directory tree; a missing one is fine.
pub(crate) fn remove_dir_all_if_exists(dir: &Path) -> Result<(), ColdError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ColdError::io("remove", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m.json");
        fs::write(&target, b"kept").unwrap();
        fs::create_dir_all(dir.path().join("u")).unwrap();
        fs::write(dir.path().join("u/batch-1.parquet.tmp"), b"x").unwrap();
        fs::write(dir.path().join("x.tmp"), b"x").unwrap();
        fs::write(dir.path().join("u/batch-2.parquet#3"), b"x").unwrap();
        fs::write(dir.path().join("u/a#b"), b"x").unwrap();
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 3);
        assert!(dir.path().join("u/a#b").exists());
        assert!(target.exists());
        assert_eq!(remove_temp_files(&dir.path().join("missing")).unwrap(), 0);
    }
}
