//! Storages as the catalog keeps them: `CREATE STORAGE`, `DROP STORAGE`,
//! `SHOW STORAGES` / `system.storages`, and opening each one at start-up.
//!
//! A storage record is `system` key `storage/<name>`, JSON (docs/storage-format.md,
//! "Storages"). It is the only place a secret is kept: what is shown of a storage
//! says `has_credentials` instead, and error messages name the storage, never its
//! keys. `local` (the data directory's `storage/`) has no record and cannot be
//! created or dropped.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use kalamdb_cold::{RemoteLimits, S3Config, Storage};
use kalamdb_commons::{ErrorCode, KalamError, KalamResult, is_valid_identifier};
use kalamdb_sql::storages::StorageSpec;
use kalamdb_store::Store;
use serde::{Deserialize, Serialize};

use crate::base::{now_micros, store_error};
use crate::catalog::LOCAL_STORAGE;
use crate::cold::{cold_error, storage_unavailable};
use crate::tiers::Tiers;

const STORAGE_PREFIX: &str = "storage/";

/// One storage's record. No `Debug`: it holds secrets.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct StorageDef {
    pub name: String,
    /// `filesystem` or `s3`.
    pub storage_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    pub created_at: i64,
}

impl StorageDef {
    /// A record of `storage_type` with nothing else set.
    fn new(name: &str, storage_type: &str, created_at: i64) -> StorageDef {
        StorageDef {
            name: name.to_string(),
            storage_type: storage_type.to_string(),
            path: None,
            bucket: None,
            prefix: None,
            region: None,
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            created_at,
        }
    }

    fn from_spec(name: &str, spec: StorageSpec) -> StorageDef {
        let mut def = StorageDef::new(name, "", now_micros());
        match spec {
            StorageSpec::Filesystem { path } => {
                def.storage_type = "filesystem".into();
                def.path = Some(path);
            }
            StorageSpec::S3 {
                bucket,
                prefix,
                region,
                endpoint,
                access_key_id,
                secret_access_key,
            } => {
                def.storage_type = "s3".into();
                def.bucket = Some(bucket);
                def.prefix = prefix;
                def.region = region;
                def.endpoint = endpoint;
                def.access_key_id = access_key_id;
                def.secret_access_key = secret_access_key;
            }
        }
        def
    }

    /// The storage this record describes (nothing is sent to a remote backend).
    /// `create`: a filesystem storage's directory is made if missing (at `CREATE
    /// STORAGE`; at start-up it must exist).
    pub fn open(&self, create: bool) -> KalamResult<Storage> {
        match self.storage_type.as_str() {
            "filesystem" => {
                let path = self.path.as_deref().unwrap_or_default();
                Storage::local(&self.name, std::path::Path::new(path), create)
                    .map_err(|e| storage_unavailable(&self.name, &e))
            }
            "s3" => {
                let config = S3Config {
                    bucket: self.bucket.clone().unwrap_or_default(),
                    prefix: self.prefix.clone(),
                    region: self.region.clone(),
                    endpoint: self.endpoint.clone(),
                    access_key_id: self.access_key_id.clone(),
                    secret_access_key: self.secret_access_key.clone(),
                };
                Storage::s3(&self.name, &config, RemoteLimits::default())
                    .map_err(|e| storage_unavailable(&self.name, &e))
            }
            other => Err(KalamError::internal(format!(
                "storage '{}' has an unknown type '{other}'",
                self.name
            ))),
        }
    }

    /// Where the storage's objects are, for people: a directory or `s3://bucket/prefix`.
    fn location(&self) -> String {
        match (&self.path, &self.bucket) {
            (Some(path), _) => path.clone(),
            (None, Some(bucket)) => match self.prefix.as_deref().map(|p| p.trim_matches('/')) {
                Some(prefix) if !prefix.is_empty() => format!("s3://{bucket}/{prefix}"),
                _ => format!("s3://{bucket}"),
            },
            (None, None) => String::new(),
        }
    }
}

/// Every storage record.
pub(crate) fn load(store: &Store) -> KalamResult<Vec<StorageDef>> {
    let mut defs = Vec::new();
    for (key, value) in store.latest().system_scan(STORAGE_PREFIX).map_err(store_error)? {
        let def: StorageDef = serde_json::from_slice(&value)
            .map_err(|e| KalamError::internal(format!("corrupt storage record {key}: {e}")))?;
        defs.push(def);
    }
    Ok(defs)
}

/// Makes a storage's store known to the query engine's Parquet reader.
pub(crate) fn register(db_runtime: &crate::budget::QueryRuntime, storage: &Storage) -> KalamResult<()> {
    let url = ObjectStoreUrl::parse(storage.url()).map_err(|e| KalamError::internal(e.to_string()))?;
    db_runtime
        .base()
        .register_object_store(url.as_ref(), storage.object_store());
    Ok(())
}

/// `CREATE STORAGE`: the storage proves it can write, list, read and delete before
/// its record is saved. Call with the DDL lock held.
pub(crate) async fn create(
    db: &Tiers,
    name: &str,
    spec: StorageSpec,
    if_not_exists: bool,
) -> KalamResult<String> {
    if !is_valid_identifier(name) {
        return Err(KalamError::invalid_sql(format!(
            "invalid storage name '{name}': names match [A-Za-z_][A-Za-z0-9_]* (at most 64 characters)"
        )));
    }
    if name == LOCAL_STORAGE || db.cold.storage(name).is_ok() {
        if if_not_exists {
            return Ok(format!("Storage '{name}' already exists"));
        }
        return Err(KalamError::new(
            ErrorCode::AlreadyExists,
            format!("storage '{name}' already exists"),
        ));
    }
    if let StorageSpec::Filesystem { path } = &spec {
        let path = std::path::Path::new(path);
        if !path.is_absolute() {
            return Err(KalamError::invalid_sql(format!(
                "a filesystem storage's PATH is an absolute directory, not '{}'",
                path.display()
            )));
        }
        // Not inside the data directory, nor around it: DROP TABLE deletes under it.
        let data_dir =
            std::path::absolute(&db.options.data_dir).unwrap_or_else(|_| db.options.data_dir.clone());
        if path.starts_with(&data_dir) || data_dir.starts_with(path) {
            return Err(KalamError::invalid_sql(format!(
                "a filesystem storage's PATH may not overlap the data directory ({})",
                data_dir.display()
            )));
        }
    }
    let def = StorageDef::from_spec(name, spec);
    let storage = Arc::new(def.open(true)?);
    let probed = storage.clone();
    tokio::task::spawn_blocking(move || probed.probe())
        .await
        .map_err(|e| KalamError::internal(format!("storage probe stopped: {e}")))?
        .map_err(|e| storage_unavailable(name, &e))?;
    let mut batch = db.store.batch();
    let record = serde_json::to_vec(&def).expect("a storage record serializes");
    batch.put_system(&format!("{STORAGE_PREFIX}{name}"), &record);
    db.store.commit(batch).map_err(store_error)?;
    register(&db.query_runtime, &storage)?;
    db.cold.add_storage(storage);
    tracing::info!(storage = name, storage_type = %def.storage_type, location = %def.location(), "storage created");
    Ok(format!("Storage '{name}' created"))
}

/// `DROP STORAGE`: refused while a table names it. Its objects stay where they are.
/// Call with the DDL lock held.
pub(crate) fn drop(db: &Tiers, name: &str, if_exists: bool) -> KalamResult<String> {
    if name == LOCAL_STORAGE {
        return Err(KalamError::invalid_sql("the storage 'local' cannot be dropped"));
    }
    if db.cold.storage(name).is_err() {
        if if_exists {
            return Ok(format!("Storage '{name}' does not exist"));
        }
        return Err(KalamError::new(
            ErrorCode::StorageNotFound,
            format!("storage '{name}' does not exist"),
        ));
    }
    let users: Vec<String> = (db.catalog.tables().iter())
        .filter(|t| t.storage_name() == name)
        .map(|t| t.qualified_name())
        .collect();
    if !users.is_empty() {
        return Err(KalamError::new(
            ErrorCode::StorageInUse,
            format!("storage '{name}' is used by {}", users.join(", ")),
        ));
    }
    let mut batch = db.store.batch();
    batch.delete_system(&format!("{STORAGE_PREFIX}{name}"));
    db.store.commit(batch).map_err(store_error)?;
    db.cold.remove_storage(name);
    Ok(format!("Storage '{name}' dropped"))
}

/// The storage a new table names (`STORAGE = 'name'`), checked; `None` for `local`.
pub(crate) fn for_new_table(db: &Tiers, name: Option<&str>) -> KalamResult<Option<String>> {
    let Some(name) = name.map(str::to_ascii_lowercase) else {
        return Ok(None);
    };
    db.cold.storage(&name)?;
    Ok((name != LOCAL_STORAGE).then_some(name))
}

/// `system.storages`: every storage, `local` first, secrets left out.
pub(crate) fn system_table(db: &Tiers) -> DfResult<RecordBatch> {
    let mut defs = load(&db.store).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    let local = StorageDef {
        path: Some(db.options.data_dir.join("storage").display().to_string()),
        ..StorageDef::new(LOCAL_STORAGE, "local", 0)
    };
    defs.insert(0, local);
    let tables = db.catalog.tables();
    let schema = Arc::new(Schema::new(vec![
        Field::new("storage_name", DataType::Utf8, false),
        Field::new("storage_type", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("endpoint", DataType::Utf8, true),
        Field::new("has_credentials", DataType::Boolean, false),
        Field::new("table_count", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            defs.iter().map(|d| d.name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            defs.iter().map(|d| d.storage_type.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            defs.iter().map(StorageDef::location),
        )),
        Arc::new(StringArray::from_iter(defs.iter().map(|d| d.region.as_deref()))),
        Arc::new(StringArray::from_iter(defs.iter().map(|d| d.endpoint.as_deref()))),
        Arc::new(BooleanArray::from(
            defs.iter().map(|d| d.access_key_id.is_some()).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            (defs.iter())
                .map(|d| tables.iter().filter(|t| t.storage_name() == d.name).count() as i64)
                .collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The storages to open at start-up: `local`, then every record.
pub(crate) fn open_all(store: &Store, local_dir: &std::path::Path) -> KalamResult<Vec<Arc<Storage>>> {
    let local = Storage::local(LOCAL_STORAGE, local_dir, true).map_err(cold_error)?;
    let mut all = vec![Arc::new(local)];
    for def in load(store)? {
        all.push(Arc::new(def.open(false)?));
    }
    Ok(all)
}
