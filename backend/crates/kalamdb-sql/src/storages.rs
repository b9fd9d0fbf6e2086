//! Storage statements: where tables keep their Parquet segments.
//!
//! ```text
//! CREATE STORAGE [IF NOT EXISTS] name TYPE filesystem PATH '/dir'
//! CREATE STORAGE [IF NOT EXISTS] name TYPE s3 BUCKET 'b' [PREFIX 'p'] [REGION 'r']
//!     [ENDPOINT 'http://host:port'] [ACCESS_KEY_ID 'k' SECRET_ACCESS_KEY 's']
//! DROP STORAGE [IF EXISTS] name
//! SHOW STORAGES
//! ```
//! The options after `TYPE` may come in any order, each once.

use kalamdb_commons::{KalamError, KalamResult};

use crate::statement::{Cursor, KalamStatement};

/// What `CREATE STORAGE` describes. (`Debug` leaves the secret key out.)
#[derive(Clone, PartialEq, Eq)]
pub enum StorageSpec {
    Filesystem {
        path: String,
    },
    S3 {
        bucket: String,
        prefix: Option<String>,
        region: Option<String>,
        endpoint: Option<String>,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    },
}

impl std::fmt::Debug for StorageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageSpec::Filesystem { path } => f.debug_struct("Filesystem").field("path", path).finish(),
            StorageSpec::S3 {
                bucket,
                prefix,
                endpoint,
                secret_access_key,
                ..
            } => f
                .debug_struct("S3")
                .field("bucket", bucket)
                .field("prefix", prefix)
                .field("endpoint", endpoint)
                .field("has_secret", &secret_access_key.is_some())
                .finish_non_exhaustive(),
        }
    }
}

/// Parses the rest of `CREATE STORAGE` (after `CREATE`).
pub(crate) fn parse_create_storage(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("STORAGE")?;
    let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
    let name = c.identifier()?;
    c.expect_word("TYPE")?;
    let kind = c.identifier()?;
    let mut options: Vec<(String, String)> = Vec::new();
    while let Some(word) = c.peek_word(0) {
        c.parser.next_token();
        if options.iter().any(|(k, _)| *k == word) {
            return Err(KalamError::invalid_sql(format!(
                "storage option {word} is given twice"
            )));
        }
        options.push((word, c.string()?));
    }
    let mut take = |key: &str| {
        let at = options.iter().position(|(k, _)| k == key)?;
        Some(options.remove(at).1)
    };
    let spec = match kind.as_str() {
        "filesystem" => {
            let path = take("PATH")
                .ok_or_else(|| KalamError::invalid_sql("a filesystem storage needs PATH '/directory'"))?;
            StorageSpec::Filesystem { path }
        }
        "s3" => {
            let bucket =
                take("BUCKET").ok_or_else(|| KalamError::invalid_sql("an s3 storage needs BUCKET 'name'"))?;
            let (access_key_id, secret_access_key) = (take("ACCESS_KEY_ID"), take("SECRET_ACCESS_KEY"));
            if access_key_id.is_some() != secret_access_key.is_some() {
                return Err(KalamError::invalid_sql(
                    "ACCESS_KEY_ID and SECRET_ACCESS_KEY are given together (or neither: the AWS_* environment variables)",
                ));
            }
            StorageSpec::S3 {
                bucket,
                prefix: take("PREFIX"),
                region: take("REGION"),
                endpoint: take("ENDPOINT"),
                access_key_id,
                secret_access_key,
            }
        }
        other => {
            return Err(KalamError::invalid_sql(format!(
                "unknown storage type '{other}'; known: filesystem, s3"
            )));
        }
    };
    if let Some((key, _)) = options.first() {
        return Err(KalamError::invalid_sql(format!(
            "storage option {key} does not apply to TYPE {kind}"
        )));
    }
    Ok(KalamStatement::CreateStorage {
        name,
        spec,
        if_not_exists,
    })
}

/// Parses the rest of `DROP STORAGE` (after `DROP`).
pub(crate) fn parse_drop_storage(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("STORAGE")?;
    let if_exists = c.eat_words(&["IF", "EXISTS"]);
    Ok(KalamStatement::DropStorage {
        name: c.identifier()?,
        if_exists,
    })
}

#[cfg(test)]
mod tests {
    use super::StorageSpec;
    use crate::statement::{KalamStatement, parse_statement};
    use kalamdb_commons::ErrorCode;

    #[test]
    fn create_drop_show() {
        assert_eq!(
            parse_statement("CREATE STORAGE Archive TYPE filesystem PATH '/mnt/cold'").unwrap(),
            KalamStatement::CreateStorage {
                name: "archive".into(),
                spec: StorageSpec::Filesystem {
                    path: "/mnt/cold".into()
                },
                if_not_exists: false,
            }
        );
        assert_eq!(
            parse_statement(
                "create storage if not exists s3a type s3 endpoint 'http://127.0.0.1:9000' bucket 'b' \
                 access_key_id 'k' secret_access_key 's' prefix 'p/q'"
            )
            .unwrap(),
            KalamStatement::CreateStorage {
                name: "s3a".into(),
                spec: StorageSpec::S3 {
                    bucket: "b".into(),
                    prefix: Some("p/q".into()),
                    region: None,
                    endpoint: Some("http://127.0.0.1:9000".into()),
                    access_key_id: Some("k".into()),
                    secret_access_key: Some("s".into()),
                },
                if_not_exists: true,
            }
        );
        assert_eq!(
            parse_statement("DROP STORAGE IF EXISTS archive").unwrap(),
            KalamStatement::DropStorage {
                name: "archive".into(),
                if_exists: true
            }
        );
        assert_eq!(
            parse_statement("show storages").unwrap(),
            KalamStatement::ShowStorages
        );
        for bad in [
            "CREATE STORAGE a TYPE filesystem",
            "CREATE STORAGE a TYPE s3 PREFIX 'p'",
            "CREATE STORAGE a TYPE s3 BUCKET 'b' ACCESS_KEY_ID 'k'",
            "CREATE STORAGE a TYPE gcs BUCKET 'b'",
            "CREATE STORAGE a TYPE filesystem PATH '/x' BUCKET 'b'",
            "CREATE STORAGE a TYPE filesystem PATH '/x' PATH '/y'",
            "CREATE STORAGE a TYPE filesystem PATH 42",
        ] {
            assert_eq!(
                parse_statement(bad).unwrap_err().code,
                ErrorCode::InvalidSql,
                "{bad}"
            );
        }
    }
}
