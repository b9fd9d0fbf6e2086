//! The statements layer's state over the query layer: authentication, the DDL lock,
//! and the two ports through which statements reach the layer above them — the job
//! manager ([`JobControl`]) and the live hub ([`LiveControl`]), both registered at
//! open. Dereferences to [`QueryEngine`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kalamdb_commons::{KalamError, KalamResult, Literal, is_valid_identifier};

use crate::access::Caller;
use crate::auth::{Authenticator, TokenService};
use crate::catalog::TableDef;
use crate::job_record::{JobKind, JobRecord, JobTrigger};
use crate::query::QueryEngine;
use crate::results::StatementResult;

pub(crate) struct Engine {
    pub query: Arc<QueryEngine>,
    pub auth: Authenticator,
    pub tokens: TokenService,
    /// Serializes DDL statements (schema and users) with each other. DDL that
    /// changes or drops a table also takes that table's commit lock.
    pub ddl_lock: tokio::sync::Mutex<()>,
    pub jobs: Arc<dyn JobControl>,
    pub live: Arc<dyn LiveControl>,
}

impl std::ops::Deref for Engine {
    type Target = QueryEngine;

    fn deref(&self) -> &QueryEngine {
        &self.query
    }
}

/// Everything one statement runs with (the statements run in `executor.rs`,
/// `dml.rs` and `ingest.rs`).
pub(crate) struct StatementContext<'a> {
    pub db: &'a Arc<Engine>,
    pub caller: &'a Caller,
    pub namespace: &'a str,
    pub params: &'a [Literal],
}

/// What `STORAGE FLUSH`, `KILL JOB` and DDL ask of the job manager.
pub(crate) trait JobControl: Send + Sync {
    /// Registers a flush or compaction job of `table` (`FLUSH_IN_PROGRESS` when a job
    /// of the table is queued or running) and returns its record at once.
    fn submit(&self, table: &TableDef, kind: JobKind, trigger: JobTrigger) -> KalamResult<JobRecord>;
    /// Stops the jobs of a table about to be dropped, waiting until they stopped.
    fn cancel_table_jobs(&self, table_id: u32) -> BoxFuture<'_, ()>;
    /// Cancels a job, waiting up to `wait` for it to stop; the record and whether the
    /// job was still queued or running.
    fn kill<'a>(&'a self, job_id: &'a str, wait: Duration) -> BoxFuture<'a, KalamResult<(JobRecord, bool)>>;
}

/// What `KILL LIVE QUERY` and DDL tell the live hub.
pub(crate) trait LiveControl: Send + Sync {
    fn kill(&self, caller: &Caller, id: &str) -> KalamResult<()>;
    /// Ends the subscriptions of a dropped table.
    fn table_dropped(&self, table: &TableDef);
    /// Ends the subscriptions of a table whose columns changed.
    fn table_altered(&self, table: &TableDef);
    /// Closes the connections of a user whose credentials or role changed, or who
    /// was dropped.
    fn user_changed(&self, user_id: &str, reason: &str);
}

/// `INVALID_SQL` unless `name` is a valid name of a `kind` (namespace, table, view, ...).
pub(crate) fn check_name(kind: &str, name: &str) -> KalamResult<()> {
    if !is_valid_identifier(name) {
        return Err(KalamError::invalid_sql(format!(
            "invalid {kind} name '{name}': names match [A-Za-z_][A-Za-z0-9_]* (at most 64 characters)"
        )));
    }
    Ok(())
}

/// An `IF [NOT] EXISTS` that was met: the error's message becomes the statement's
/// notice instead of the error.
pub(crate) fn tolerated(tolerate: bool, error: KalamError) -> KalamResult<StatementResult> {
    match tolerate {
        true => Ok(StatementResult::message(sentence_case(&error.message))),
        false => Err(error),
    }
}

pub(crate) fn sentence_case(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(first) = text.get(..1) {
        out.replace_range(..1, &first.to_ascii_uppercase());
    }
    out
}
