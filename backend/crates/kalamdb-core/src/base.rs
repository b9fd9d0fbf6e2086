//! What every layer shares: the clock, the mapping of storage failures, and what
//! every entry point tells a client of an error (HTTP, the WebSocket, streamed
//! results).

use std::time::{SystemTime, UNIX_EPOCH};

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
