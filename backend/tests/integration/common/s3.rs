//! A real S3-compatible server for the tests: `moto_server` (PyPI `moto[server]`,
//! installed by `scripts/test.sh`), started as a child process on a free port and
//! stopped when the handle is dropped. Requests to it are plain HTTP: moto takes any
//! credentials, and unsigned requests for the test's own listing and setup.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Moto {
    pub port: u16,
    child: Child,
    client: reqwest::Client,
    /// A signed client of the bucket (moto refuses unsigned object reads).
    store: object_store::aws::AmazonS3,
}

/// The bucket every test storage uses.
pub const BUCKET: &str = "kalamdb-test";

fn moto_binary() -> String {
    std::env::var("KALAMDB_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into())
}

impl Moto {
    /// Starts moto and creates [`BUCKET`].
    pub async fn start() -> Moto {
        let port = free_port();
        let moto = Moto::start_on(port).await;
        moto.create_bucket(BUCKET).await;
        moto
    }

    /// Starts moto on `port` (empty: moto keeps everything in memory).
    pub async fn start_on(port: u16) -> Moto {
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start moto_server ({e}): run scripts/test.sh, or pip install 'moto[server]'")
            });
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap();
        let moto = Moto {
            port,
            child,
            client: reqwest::Client::new(),
            store,
        };
        for _ in 0..300 {
            if moto.client.get(moto.endpoint()).send().await.is_ok() {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not answer on port {port}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let response = (self
            .client
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await)
            .unwrap();
        assert!(
            response.status().is_success(),
            "create bucket: {}",
            response.status()
        );
    }

    /// `CREATE STORAGE <name> …` for [`BUCKET`] under `prefix` (keys given, as a
    /// user would write them).
    pub fn create_storage_sql(&self, name: &str, prefix: &str) -> String {
        format!(
            "CREATE STORAGE {name} TYPE s3 BUCKET '{BUCKET}' PREFIX '{prefix}' ENDPOINT '{}' \
             REGION 'us-east-1' ACCESS_KEY_ID 'test-key' SECRET_ACCESS_KEY '{SECRET}'",
            self.endpoint()
        )
    }

    /// Every key of [`BUCKET`] under `prefix`, sorted.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let prefix = object_store::path::Path::from(prefix);
        let listed: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await.unwrap();
        let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        keys.sort();
        keys
    }

    pub async fn get(&self, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let got = self.store.get(&object_store::path::Path::from(key)).await;
        got.unwrap_or_else(|e| panic!("get {key}: {e}"))
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// Stops the server at once (as a network failure would look to a client).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The secret key test storages are created with: it must appear in no answer.
pub const SECRET: &str = "s3cr3t-never-shown";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Checks that every segment under `prefix` is listed by the current (only)
/// manifest of its scope; returns how many segments there are.
pub async fn assert_only_listed_objects(moto: &Moto, prefix: &str) -> usize {
    let keys = moto.keys(prefix).await;
    let mut segments = 0;
    for key in &keys {
        let (scope, name) = key.rsplit_once('/').unwrap();
        if !name.starts_with("batch-") {
            continue;
        }
        segments += 1;
        let manifests: Vec<&String> = (keys.iter())
            .filter(|k| k.starts_with(&format!("{scope}/manifest-")))
            .collect();
        assert_eq!(
            manifests.len(),
            1,
            "one manifest version in {scope}: {manifests:?}"
        );
        let manifest: serde_json::Value = serde_json::from_slice(&moto.get(manifests[0]).await).unwrap();
        assert!(
            (manifest["segments"].as_array().unwrap().iter()).any(|s| s["file"] == name),
            "{key} is not in its manifest"
        );
    }
    segments
}
