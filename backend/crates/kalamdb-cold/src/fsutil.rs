//! Durable file operations: write to `*.tmp`, fsync, rename, fsync the directory.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::ColdError;
use crate::layout::TEMP_SUFFIX;

/// fsync of a directory, so a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ColdError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ColdError::io("fsync directory", dir, e))
}

/// Replaces `path` with `bytes` atomically: a reader or a crash sees the old file or
/// the new one, never a mix.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ColdError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| ColdError::io("create", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| ColdError::io("write", &tmp, e))?;
        file.sync_all().map_err(|e| ColdError::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| ColdError::io("rename", &tmp, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(path.parent().expect("a file path has a parent"))
}

pub(crate) fn temp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().expect("a file path has a name").to_os_string();
    name.push(TEMP_SUFFIX);
    path.with_file_name(name)
}

/// Removes every `*.tmp` file under `dir` (recursively); returns how many.
/// A missing `dir` has none.
pub fn remove_temp_files(dir: &Path) -> Result<usize, ColdError> {
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
        } else if path.to_string_lossy().ends_with(TEMP_SUFFIX) {
            fs::remove_file(&path).map_err(|e| ColdError::io("remove", &path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes a file; a missing one is fine.
pub fn remove_file_if_exists(path: &Path) -> Result<(), ColdError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ColdError::io("remove", path, e)),
    }
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir_all_if_exists(dir: &Path) -> Result<(), ColdError> {
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
    fn atomic_writes_and_temp_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("m.json");
        write_atomically(&target, b"one").unwrap();
        write_atomically(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        fs::create_dir_all(dir.path().join("u")).unwrap();
        fs::write(dir.path().join("u/batch-1.parquet.tmp"), b"x").unwrap();
        fs::write(dir.path().join("x.tmp"), b"x").unwrap();
        assert_eq!(remove_temp_files(dir.path()).unwrap(), 2);
        assert!(target.exists());
        assert_eq!(remove_temp_files(&dir.path().join("missing")).unwrap(), 0);
    }
}
