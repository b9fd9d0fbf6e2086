//! What every entry point tells a client of an error (HTTP, the WebSocket, streamed
//! results).

use kalamdb_commons::{ErrorCode, KalamError};

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
