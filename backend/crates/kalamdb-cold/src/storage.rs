//! Storages: the named roots cold files live under, every one an
//! [`ObjectStore`] — `local` and `filesystem` storages a [`LocalFileSystem`] rooted at
//! their directory, `s3` storages an S3 client under their prefix. Everything the cold
//! tier writes, lists, reads and deletes goes through [`Storage`], one code path for
//! every backend (docs/storage-format.md, "Storages").
//!
//! The engine's code that calls this is synchronous (flush and compaction jobs run on
//! blocking threads, point reads inside a statement): [`Storage::block`] runs a
//! backend's future to completion on the calling thread, with the I/O runtime (its own
//! threads, which drive sockets and timers) as the context.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};

use crate::ColdError;

/// Where an S3-compatible storage keeps its objects, and how to reach it. (No
/// `Debug`: it holds a secret.)
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// Objects go under `<prefix>/` (none: the bucket's root).
    pub prefix: Option<String>,
    pub region: Option<String>,
    /// `http(s)://host:port` of an S3-compatible service (none: AWS).
    pub endpoint: Option<String>,
    /// Both or neither; neither: the standard `AWS_*` environment variables.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// How long a request to a remote backend may take, and how it is retried.
#[derive(Debug, Clone, Copy)]
pub struct RemoteLimits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Transient failures (5xx, timeouts, refused connections) are retried this many
    /// times with exponential backoff, all within `retry_timeout`.
    pub max_retries: usize,
    pub retry_timeout: Duration,
}

impl Default for RemoteLimits {
    fn default() -> Self {
        RemoteLimits {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
        }
    }
}

/// One storage: a name and the object store behind it. (`Debug` shows the name only:
/// the store's configuration holds credentials.)
pub struct Storage {
    name: String,
    store: Arc<dyn ObjectStore>,
    /// The directory of a local or filesystem storage: what it completes is fsynced
    /// there (a local object store does not), and its staging files are cleaned.
    local_root: Option<PathBuf>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The runtime whose threads drive the backends' sockets and timers.
fn io_runtime() -> &'static tokio::runtime::Runtime {
    static IO: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kalamdb-io")
            .enable_all()
            .build()
            .expect("the I/O runtime starts")
    })
}

impl Storage {
    /// A storage in a directory of this machine; `create`: made when missing (else a
    /// missing directory is an error: an unmounted disk must not be replaced by an
    /// empty directory under its mount point).
    pub fn local(name: &str, root: &Path, create: bool) -> Result<Storage, ColdError> {
        if create {
            std::fs::create_dir_all(root).map_err(|e| ColdError::io("create directory", root, e))?;
        } else if !root.is_dir() {
            return Err(ColdError::io(
                "open storage directory",
                root,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory (not mounted?)"),
            ));
        }
        let root = std::path::absolute(root).map_err(|e| ColdError::io("resolve", root, e))?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| ColdError::store(name, "open", e))?
            .with_automatic_cleanup(true);
        Ok(Storage {
            name: name.to_string(),
            store: Arc::new(store),
            local_root: Some(root),
        })
    }

    /// A storage in an S3-compatible bucket. Nothing is sent until it is used
    /// ([`Storage::probe`] proves it works).
    pub fn s3(name: &str, config: &S3Config, limits: RemoteLimits) -> Result<Storage, ColdError> {
        let mut client = ClientOptions::new()
            .with_connect_timeout(limits.connect_timeout)
            .with_timeout(limits.request_timeout);
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        builder = builder.with_region(config.region.as_deref().unwrap_or("us-east-1"));
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
            client = client.with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder.with_access_key_id(key).with_secret_access_key(secret);
        }
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: limits.max_retries,
            retry_timeout: limits.retry_timeout,
        };
        let s3 = builder
            .with_client_options(client)
            .with_retry(retry)
            .build()
            .map_err(|e| ColdError::store(name, "configure", e))?;
        let store: Arc<dyn ObjectStore> = match config.prefix.as_deref().map(|p| p.trim_matches('/')) {
            Some(prefix) if !prefix.is_empty() => Arc::new(PrefixStore::new(s3, prefix)),
            _ => Arc::new(s3),
        };
        Ok(Storage {
            name: name.to_string(),
            store,
            local_root: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store, for the query engine's object-store registry.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The URL the store is registered under in the query engine (`kalamdb://<name>`).
    pub fn url(&self) -> String {
        format!("kalamdb://{}", self.name)
    }

    /// Runs a backend future to completion on this thread. On a worker of a
    /// multi-thread tokio runtime, a remote storage's wait is announced to it
    /// (`block_in_place`), so the worker's other tasks move to another thread instead
    /// of waiting for the network; a local storage's reads are as short as the file
    /// reads they replaced.
    pub fn block<F: Future>(&self, future: F) -> F::Output {
        let run = || {
            let _io = io_runtime().enter();
            futures::executor::block_on(future)
        };
        let on_worker = self.local_root.is_none()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(run)
        } else {
            run()
        }
    }

    /// Writes, lists, reads back and deletes a small object under `_kalamdb_probe/`:
    /// a storage that answers all four can hold segments.
    pub fn probe(&self) -> Result<(), ColdError> {
        let path = ObjPath::from(format!("_kalamdb_probe/{}", uuid_like()));
        let body = Bytes::from_static(b"kalamdb storage probe");
        self.block(async {
            self.store
                .put(&path, PutPayload::from(body.clone()))
                .await
                .map_err(|e| ColdError::store(&self.name, "write", e))?;
            let listed: Vec<ObjectMeta> = self
                .store
                .list(Some(&ObjPath::from("_kalamdb_probe")))
                .try_collect()
                .await
                .map_err(|e| ColdError::store(&self.name, "list", e))?;
            if !listed.iter().any(|m| m.location == path) {
                return Err(ColdError::Manifest {
                    path: format!("{}:{path}", self.name),
                    reason: "an object just written is not listed".into(),
                });
            }
            let read = self
                .store
                .get(&path)
                .await
                .map_err(|e| ColdError::store(&self.name, "read", e))?
                .bytes()
                .await
                .map_err(|e| ColdError::store(&self.name, "read", e))?;
            if read != body {
                return Err(ColdError::Manifest {
                    path: format!("{}:{path}", self.name),
                    reason: "an object read back differs from what was written".into(),
                });
            }
            self.store
                .delete(&path)
                .await
                .map_err(|e| ColdError::store(&self.name, "delete", e))
        })?;
        self.sync_removed(&path);
        Ok(())
    }

    /// The object at `path`, or `None` when there is none.
    pub fn get(&self, path: &ObjPath) -> Result<Option<Bytes>, ColdError> {
        self.block(async {
            match self.store.get(path).await {
                Ok(result) => result.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .map_err(|e| ColdError::store(&self.name, "read", e))
    }

    /// Creates the object at `path` with `bytes`, unless one is there: `Ok(false)`
    /// then, and nothing is written. Durable when it returns.
    pub fn put_new(&self, path: &ObjPath, bytes: Vec<u8>) -> Result<bool, ColdError> {
        if let Some(root) = &self.local_root {
            return put_new_local(&local_path(root, path), &bytes);
        }
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = self.block(self.store.put_opts(path, PutPayload::from(bytes), options));
        match put {
            Ok(_) => {
                self.sync_completed(path)?;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(ColdError::store(&self.name, "write", e)),
        }
    }

    /// Every object under `prefix` (recursively).
    pub fn list(&self, prefix: &ObjPath) -> Result<Vec<ObjectMeta>, ColdError> {
        self.block(self.store.list(Some(prefix)).try_collect())
            .map_err(|e| ColdError::store(&self.name, "list", e))
    }

    /// The objects directly under `prefix` and the names of the "directories" there.
    /// (A local storage's prefix that is not a directory — missing, or a file in the
    /// way — holds nothing.)
    pub fn list_level(&self, prefix: &ObjPath) -> Result<(Vec<ObjectMeta>, Vec<String>), ColdError> {
        if let Some(root) = &self.local_root
            && !local_path(root, prefix).is_dir()
        {
            return Ok((Vec::new(), Vec::new()));
        }
        let listed = self
            .block(self.store.list_with_delimiter(Some(prefix)))
            .map_err(|e| ColdError::store(&self.name, "list", e))?;
        let dirs = (listed.common_prefixes.iter())
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        Ok((listed.objects, dirs))
    }

    /// Deletes the object at `path`; a missing one is fine.
    pub fn delete(&self, path: &ObjPath) -> Result<(), ColdError> {
        match self.block(self.store.delete(path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.sync_removed(path);
                Ok(())
            }
            Err(e) => Err(ColdError::store(&self.name, "delete", e)),
        }
    }

    /// Deletes every object under `prefix` (and, on a local storage, what is left
    /// of the directory: staging files of interrupted writes); returns how many.
    pub fn delete_all(&self, prefix: &ObjPath) -> Result<usize, ColdError> {
        let objects = self.list(prefix)?;
        let count = objects.len();
        let locations = futures::stream::iter(objects.into_iter().map(|m| Ok(m.location))).boxed();
        let results: Vec<object_store::Result<ObjPath>> =
            self.block(self.store.delete_stream(locations).collect());
        for result in results {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ColdError::store(&self.name, "delete", e)),
            }
        }
        if let Some(root) = &self.local_root {
            crate::fsutil::remove_dir_all_if_exists(&local_path(root, prefix))?;
        }
        Ok(count)
    }

    /// On a local storage, removes the directory of `prefix` if it is empty (object
    /// stores have no directories: nothing to do elsewhere).
    pub fn remove_empty_dir(&self, prefix: &ObjPath) {
        if let Some(root) = &self.local_root {
            let _ = std::fs::remove_dir(local_path(root, prefix));
        }
    }

    /// Removes what interrupted writes left under `prefix`: the staging files of a
    /// local storage (`*#<n>`, and `*.tmp` of earlier versions). An S3 multipart
    /// upload that was never completed is not an object: nothing to list.
    pub fn remove_staging(&self, prefix: &ObjPath) -> Result<usize, ColdError> {
        match &self.local_root {
            Some(root) => crate::fsutil::remove_temp_files(&local_path(root, prefix)),
            None => Ok(0),
        }
    }

    /// Starts a multipart upload of the object at `path`.
    pub(crate) fn upload(&self, path: &ObjPath) -> Result<Box<dyn object_store::MultipartUpload>, ColdError> {
        self.block(self.store.put_multipart(path))
            .map_err(|e| ColdError::store(&self.name, "write", e))
    }

    /// Makes a completed object durable: a local store renames or links it into place
    /// without fsync, so the file and its directory are synced here.
    pub(crate) fn sync_completed(&self, path: &ObjPath) -> Result<(), ColdError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let file = local_path(root, path);
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|e| ColdError::io("fsync", &file, e))?;
        crate::fsutil::sync_dir(file.parent().expect("an object has a directory"))
    }

    /// After a delete on a local storage: its directory is synced (best effort; a
    /// delete is redone by recovery when it is lost).
    fn sync_removed(&self, path: &ObjPath) {
        if let Some(root) = &self.local_root
            && let Some(dir) = local_path(root, path).parent()
            && dir.exists()
        {
            let _ = crate::fsutil::sync_dir(dir);
        }
    }
}

/// [`Storage::put_new`] on a local disk: a local object store links its staging file
/// into place before anything is fsynced, so a power loss could leave an empty
/// manifest version. Here the staging file (`<name>#<digits>`, removed at start-up
/// if left) is fsynced first, then linked (which fails if the name exists), then the
/// directory is fsynced.
fn put_new_local(file: &Path, bytes: &[u8]) -> Result<bool, ColdError> {
    use std::io::Write;
    let dir = file.parent().expect("an object has a directory");
    std::fs::create_dir_all(dir).map_err(|e| ColdError::io("create directory", dir, e))?;
    let mut staging = file.as_os_str().to_owned();
    staging.push(format!("#{}", unique_digits()));
    let staging = PathBuf::from(staging);
    let result = (|| {
        let mut f = std::fs::File::create(&staging).map_err(|e| ColdError::io("create", &staging, e))?;
        f.write_all(bytes)
            .map_err(|e| ColdError::io("write", &staging, e))?;
        f.sync_all().map_err(|e| ColdError::io("fsync", &staging, e))?;
        match std::fs::hard_link(&staging, file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ColdError::io("link", file, e)),
        }
    })();
    let _ = std::fs::remove_file(&staging);
    if result? {
        crate::fsutil::sync_dir(dir)?;
        return Ok(true);
    }
    Ok(false)
}

/// Where a local storage keeps the object at `path`.
fn local_path(root: &Path, path: &ObjPath) -> PathBuf {
    let mut file = root.to_path_buf();
    for part in path.parts() {
        file.push(part.as_ref());
    }
    file
}

/// A name no other probe uses at the same time.
fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), unique_digits())
}

/// Digits no other call of this process returns (time, then a counter).
fn unique_digits() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}{:06}", NEXT.fetch_add(1, Ordering::Relaxed) % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_storage_writes_lists_reads_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local("local", dir.path(), true).unwrap();
        assert!(Storage::local("gone", &dir.path().join("missing"), false).is_err());
        storage.probe().unwrap();
        let path = ObjPath::from("ns/t/u1/manifest-1.json");
        assert!(storage.put_new(&path, b"one".to_vec()).unwrap());
        assert!(
            !storage.put_new(&path, b"two".to_vec()).unwrap(),
            "never overwritten"
        );
        assert_eq!(storage.get(&path).unwrap().unwrap().as_ref(), b"one");
        assert!(dir.path().join("ns/t/u1/manifest-1.json").exists());
        let (objects, dirs) = storage.list_level(&ObjPath::from("ns/t")).unwrap();
        assert!(objects.is_empty());
        assert_eq!(dirs, ["u1"]);
        assert_eq!(storage.delete_all(&ObjPath::from("ns/t")).unwrap(), 1);
        assert!(storage.get(&path).unwrap().is_none());
        assert!(!dir.path().join("ns/t").exists());
        storage.delete(&path).unwrap();
    }
}
