//! The stable error codes of the API and the error type that carries them.

use std::fmt;

/// A stable, SCREAMING_SNAKE error code. The HTTP status follows from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidSql,
    InvalidParameter,
    InvalidRequest,
    TypeMismatch,
    NotNullViolation,
    Unsupported,
    EmptySql,
    Unauthorized,
    PermissionDenied,
    NamespaceNotFound,
    TableNotFound,
    IndexNotFound,
    ColumnNotFound,
    JobNotFound,
    UserNotFound,
    AlreadyExists,
    DuplicateKey,
    NamespaceNotEmpty,
    FlushInProgress,
    PayloadTooLarge,
    TooManyRequests,
    ResourcesExhausted,
    StatementTimeout,
    /// Live queries: a subscription limit (per connection, per user) or the
    /// connection limit was reached.
    SubscriptionLimit,
    /// Live queries: the subscriber fell too far behind; resume with `from_seq`.
    SubscriptionLagged,
    /// Live queries: `KILL LIVE QUERY` ended the subscription.
    Killed,
    /// Live queries: the history `from_seq` asks for is no longer kept.
    ResumeUnavailable,
    /// Live queries: the table's columns changed (ALTER TABLE); subscribe again.
    SchemaChanged,
    /// Live queries: evaluating the subscription's filter on one commit's changes
    /// took longer than `live_filter_budget_ms`; subscribe with a cheaper filter.
    FilterTooSlow,
    LiveQueryNotFound,
    StorageNotFound,
    /// `DROP STORAGE` of a storage a table uses.
    StorageInUse,
    /// A drop of a table or view that a view reads.
    DependentObjects,
    /// A storage's backend cannot be reached, or refuses or fails requests.
    StorageUnavailable,
    /// A transaction lost to another that committed a change to a row it wrote
    /// (first committer wins); it wrote nothing: run it again.
    SerializationFailure,
    /// A statement in a transaction that already failed (only `ROLLBACK` is taken).
    InFailedTransaction,
    /// A transaction left idle longer than `transaction_timeout_ms` was rolled back.
    TransactionTimeout,
    InternalError,
}

impl ErrorCode {
    /// The code as it appears in the JSON error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidSql => "INVALID_SQL",
            ErrorCode::InvalidParameter => "INVALID_PARAMETER",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::NotNullViolation => "NOT_NULL_VIOLATION",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::EmptySql => "EMPTY_SQL",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NamespaceNotFound => "NAMESPACE_NOT_FOUND",
            ErrorCode::TableNotFound => "TABLE_NOT_FOUND",
            ErrorCode::IndexNotFound => "INDEX_NOT_FOUND",
            ErrorCode::ColumnNotFound => "COLUMN_NOT_FOUND",
            ErrorCode::JobNotFound => "JOB_NOT_FOUND",
            ErrorCode::UserNotFound => "USER_NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::DuplicateKey => "DUPLICATE_KEY",
            ErrorCode::NamespaceNotEmpty => "NAMESPACE_NOT_EMPTY",
            ErrorCode::FlushInProgress => "FLUSH_IN_PROGRESS",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::TooManyRequests => "TOO_MANY_REQUESTS",
            ErrorCode::ResourcesExhausted => "RESOURCES_EXHAUSTED",
            ErrorCode::StatementTimeout => "STATEMENT_TIMEOUT",
            ErrorCode::SubscriptionLimit => "SUBSCRIPTION_LIMIT",
            ErrorCode::SubscriptionLagged => "SUBSCRIPTION_LAGGED",
            ErrorCode::Killed => "KILLED",
            ErrorCode::ResumeUnavailable => "RESUME_UNAVAILABLE",
            ErrorCode::SchemaChanged => "SCHEMA_CHANGED",
            ErrorCode::FilterTooSlow => "FILTER_TOO_SLOW",
            ErrorCode::LiveQueryNotFound => "LIVE_QUERY_NOT_FOUND",
            ErrorCode::StorageNotFound => "STORAGE_NOT_FOUND",
            ErrorCode::StorageInUse => "STORAGE_IN_USE",
            ErrorCode::DependentObjects => "DEPENDENT_OBJECTS",
            ErrorCode::StorageUnavailable => "STORAGE_UNAVAILABLE",
            ErrorCode::SerializationFailure => "SERIALIZATION_FAILURE",
            ErrorCode::InFailedTransaction => "IN_FAILED_TRANSACTION",
            ErrorCode::TransactionTimeout => "TRANSACTION_TIMEOUT",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status that answers this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidSql
            | ErrorCode::InvalidParameter
            | ErrorCode::InvalidRequest
            | ErrorCode::TypeMismatch
            | ErrorCode::NotNullViolation
            | ErrorCode::Unsupported
            | ErrorCode::ColumnNotFound
            | ErrorCode::ResourcesExhausted
            | ErrorCode::StatementTimeout
            | ErrorCode::TransactionTimeout
            | ErrorCode::ResumeUnavailable
            | ErrorCode::EmptySql => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NamespaceNotFound
            | ErrorCode::TableNotFound
            | ErrorCode::IndexNotFound
            | ErrorCode::JobNotFound
            | ErrorCode::LiveQueryNotFound
            | ErrorCode::StorageNotFound
            | ErrorCode::UserNotFound => 404,
            ErrorCode::AlreadyExists
            | ErrorCode::DuplicateKey
            | ErrorCode::NamespaceNotEmpty
            | ErrorCode::StorageInUse
            | ErrorCode::DependentObjects
            | ErrorCode::SerializationFailure
            | ErrorCode::InFailedTransaction
            | ErrorCode::FlushInProgress => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooManyRequests | ErrorCode::SubscriptionLimit => 429,
            ErrorCode::SubscriptionLagged
            | ErrorCode::Killed
            | ErrorCode::SchemaChanged
            | ErrorCode::FilterTooSlow => 409,
            ErrorCode::InternalError => 500,
            ErrorCode::StorageUnavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that reaches a client: a stable code and a message written for the user.
///
/// Internal failures (storage, planner bugs) use [`ErrorCode::InternalError`]; the API
/// logs their message and answers with a generic one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct KalamError {
    pub code: ErrorCode,
    pub message: String,
}

impl KalamError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        KalamError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_sql(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidSql, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }

    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TypeMismatch, message)
    }
}

pub type KalamResult<T> = Result<T, KalamError>;
