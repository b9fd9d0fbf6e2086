//! What every layer shares: the clock, the mapping of storage and DataFusion
//! failures, and what
//! every entry point tells a client of an error (HTTP, the WebSocket, streamed
//! results).

use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::error::DataFusionError;
use kalamdb_commons::{ErrorCode, KalamError};
use kalamdb_store::StoreError;

/// Microseconds since the Unix epoch (0 before it).
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub(crate) fn store_error(e: StoreError) -> KalamError {
    KalamError::internal(format!("storage failure: {e}"))
}

/// The message a client gets for `error`: its own, except an internal error's, which
/// is logged with a request id and replaced by a message naming that id (an internal
/// error's text can name files, keys or another user's data).
pub fn public_message(error: &KalamError) -> String {
    if error.code != ErrorCode::InternalError {
        return error.message.clone();
    }
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    tracing::error!(%request_id, error = %error.message, "internal error");
    format!("internal error (request {request_id}); the server log has the details")
}

pub(crate) fn df_message(e: &DataFusionError) -> String {
    let root = e.find_root();
    let text = root.to_string();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "Execution error: ",
        "This feature is not implemented: ",
        "Arrow error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

/// Maps a DataFusion error to an API error: the user's mistakes are 400s with the
/// planner's message; failures of the server are `INTERNAL_ERROR`.
pub fn df_error(e: DataFusionError) -> KalamError {
    let message = df_message(&e);
    match e.find_root() {
        DataFusionError::External(inner) => match inner.downcast_ref::<KalamError>() {
            Some(k) => k.clone(),
            None => KalamError::internal(message),
        },
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { .. } => {
                KalamError::new(ErrorCode::ColumnNotFound, message)
            }
            _ => KalamError::invalid_sql(message),
        },
        DataFusionError::Plan(_) | DataFusionError::SQL(_, _) | DataFusionError::Execution(_) => {
            KalamError::invalid_sql(message)
        }
        DataFusionError::NotImplemented(_) => KalamError::unsupported(message),
        // DataFusion reports a call no signature of the function accepts as an
        // internal error when it is found while planning ORDER BY: the caller's SQL.
        DataFusionError::Internal(text) if text.contains("failed to match any signature") => {
            KalamError::invalid_sql(message)
        }
        DataFusionError::ResourcesExhausted(_) => KalamError::new(
            ErrorCode::ResourcesExhausted,
            format!("the query needs more memory than query_memory_mb allows: {message}"),
        ),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            datafusion::arrow::error::ArrowError::CastError(_)
            | datafusion::arrow::error::ArrowError::ParseError(_)
            | datafusion::arrow::error::ArrowError::InvalidArgumentError(_)
            | datafusion::arrow::error::ArrowError::ComputeError(_) => KalamError::type_mismatch(message),
            datafusion::arrow::error::ArrowError::DivideByZero => KalamError::invalid_sql("division by zero"),
            _ => KalamError::internal(message),
        },
        _ => KalamError::internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internal_errors_are_hidden() {
        let refused = KalamError::new(ErrorCode::Unauthorized, "invalid username or password");
        assert_eq!(public_message(&refused), "invalid username or password");
        let internal = KalamError::internal("rocksdb: IO error: /data/rocksdb/000123.sst");
        let message = public_message(&internal);
        assert!(!message.contains("rocksdb"), "{message}");
        assert!(message.starts_with("internal error (request "), "{message}");
    }
}
