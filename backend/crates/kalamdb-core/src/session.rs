//! A client's transaction state between statements: what one `/sql` request holds
//! from its first statement to its last, and what a PostgreSQL-protocol session
//! holds across messages. PostgreSQL's rules:
//!
//! - Outside a transaction every statement commits on its own (autocommit).
//! - `BEGIN` opens one; its statements read its snapshot and their writes wait in
//!   it (`txn.rs`); `COMMIT` commits them atomically, `ROLLBACK` drops them.
//! - A statement that fails inside a transaction fails it: everything but
//!   `ROLLBACK` (or `COMMIT`, which then rolls back) is refused with
//!   `IN_FAILED_TRANSACTION` until it ends.
//! - Statements that cannot be undone (DDL, users, storages, jobs) are refused
//!   inside a transaction (`UNSUPPORTED`) unless one is the transaction's only
//!   statement; it then takes effect at once, as outside.
//! - `BEGIN` inside a transaction and `COMMIT`/`ROLLBACK` outside one change
//!   nothing (PostgreSQL warns; the message says so).
//! - A transaction idle longer than `transaction_timeout_ms` between two statements
//!   is rolled back when its next statement arrives: that statement (a `COMMIT`
//!   too) answers `TRANSACTION_TIMEOUT`, and the transaction counts as failed
//!   until its end. (Its snapshot is held until then: a session that never sends
//!   another statement holds it until it closes.)
//!
//! Dropping the session rolls back its open transaction (a `/sql` request that
//! ends inside one).

use std::sync::Arc;
use std::time::Instant;

use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use kalamdb_sql::{KalamStatement, TransactionCommand, parse_statement};

use crate::results::StatementResult;
use crate::statements::StatementContext;
use crate::txn::Transaction;

/// The transaction state of one client (a request, or a protocol session).
#[derive(Default)]
pub(crate) struct Session {
    state: State,
}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    Open(Open),
    /// A statement of the transaction failed: only its end is taken.
    Failed,
}

struct Open {
    txn: Arc<Transaction>,
    read_only: bool,
    /// Statements run in it so far.
    statements: usize,
    /// A statement that cannot be undone ran as its only one: nothing may follow.
    non_transactional: bool,
    /// When its last statement ended.
    idle_since: Instant,
}

impl Session {
    /// Whether `sql` needs the session: a transaction is open (or failed), or the
    /// statement may be transaction control. Otherwise it runs as autocommit
    /// statements always did ([`StatementContext::execute`]), on the cheapest path.
    pub fn takes(&self, sql: &str) -> bool {
        if !matches!(self.state, State::Idle) {
            return true;
        }
        let text = sql.trim_start();
        if text.starts_with("--") || text.starts_with("/*") || text.starts_with('(') {
            return true;
        }
        let word: String = text.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
        [
            "BEGIN",
            "START",
            "COMMIT",
            "END",
            "ROLLBACK",
            "ABORT",
            "SAVEPOINT",
            "RELEASE",
        ]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
    }

    /// Runs one statement of this client (call it under the statement's budget).
    pub async fn execute(&mut self, ctx: &StatementContext<'_>, sql: &str) -> KalamResult<StatementResult> {
        let statement = match parse_statement(sql) {
            Ok(statement) => statement,
            Err(e) => return Err(self.fail(e)),
        };
        if let KalamStatement::Transaction(command) = statement {
            return Box::pin(self.control(ctx, command)).await;
        }
        let open = match &mut self.state {
            State::Idle => return Box::pin(ctx.execute_statement(statement)).await,
            State::Failed => {
                return Err(KalamError::new(
                    ErrorCode::InFailedTransaction,
                    "the current transaction failed: statements are ignored until ROLLBACK",
                ));
            }
            State::Open(open) => open,
        };
        ctx.db
            .holds
            .wait_async(|| format!("txn_statement:{}:{}", ctx.caller.username, open.statements))
            .await;
        if let Some(error) = idle_timeout(ctx, open) {
            self.state = State::Failed;
            return Err(error);
        }
        let result = if open.non_transactional {
            Err(KalamError::unsupported(
                "a statement that cannot be undone (DDL, users, storages, jobs) ran in this transaction: end it (COMMIT or ROLLBACK) before the next statement",
            ))
        } else if !transactional(&statement) {
            if open.read_only {
                Err(KalamError::new(
                    ErrorCode::PermissionDenied,
                    "cannot run DDL or other changes in a READ ONLY transaction",
                ))
            } else if open.statements == 0 {
                // Alone in its transaction: it takes effect as outside one.
                open.non_transactional = true;
                Box::pin(ctx.execute_statement(statement)).await
            } else {
                Err(KalamError::unsupported(
                    "DDL and other statements that cannot be undone (users, storages, jobs, KILL) are not supported inside a transaction; run them outside BEGIN ... COMMIT",
                ))
            }
        } else if open.read_only && writes(&statement) {
            Err(KalamError::new(
                ErrorCode::PermissionDenied,
                "cannot write in a READ ONLY transaction",
            ))
        } else {
            open.txn.moment();
            let work = Box::pin(ctx.execute_statement(statement));
            crate::txn::within(Some(open.txn.clone()), work).await
        };
        open.statements += 1;
        open.idle_since = Instant::now();
        result.map_err(|e| self.fail(e))
    }

    /// A statement failed: an open transaction is failed with it.
    fn fail(&mut self, error: KalamError) -> KalamError {
        if matches!(self.state, State::Open(_)) {
            self.state = State::Failed;
        }
        error
    }

    async fn control(
        &mut self,
        ctx: &StatementContext<'_>,
        command: TransactionCommand,
    ) -> KalamResult<StatementResult> {
        let message = match (command, std::mem::take(&mut self.state)) {
            (TransactionCommand::Begin { read_only }, State::Idle) => {
                self.state = State::Open(Open {
                    txn: Transaction::new(ctx.db.tiers.clone())?,
                    read_only,
                    statements: 0,
                    non_transactional: false,
                    idle_since: Instant::now(),
                });
                "BEGIN"
            }
            (TransactionCommand::Begin { .. }, state @ State::Open(_)) => {
                self.state = state;
                "BEGIN: a transaction is already in progress; it goes on"
            }
            (TransactionCommand::Begin { .. }, State::Failed) => {
                self.state = State::Failed;
                return Err(KalamError::new(
                    ErrorCode::InFailedTransaction,
                    "the current transaction failed: statements are ignored until ROLLBACK",
                ));
            }
            (TransactionCommand::Commit, State::Open(open)) => {
                // A transaction idle too long is rolled back, not committed.
                if let Some(error) = idle_timeout(ctx, &open) {
                    return Err(error);
                }
                ctx.db
                    .holds
                    .wait_async(|| format!("txn_commit:{}", ctx.caller.username))
                    .await;
                let mut groups = open.txn.take_commit();
                if !groups.is_empty() {
                    crate::write::commit_all(&ctx.db.tiers, &mut groups).await?;
                }
                "COMMIT"
            }
            (TransactionCommand::Commit, State::Failed) => {
                "ROLLBACK: the transaction had failed; nothing was written"
            }
            (TransactionCommand::Rollback, State::Open(_) | State::Failed) => "ROLLBACK",
            (TransactionCommand::Commit | TransactionCommand::Rollback, State::Idle) => {
                "there is no transaction in progress; nothing was done"
            }
        };
        Ok(StatementResult::message(message.to_string()))
    }
}

/// `TRANSACTION_TIMEOUT` when the open transaction was idle longer than
/// `transaction_timeout_ms` (it is then rolled back).
fn idle_timeout(ctx: &StatementContext<'_>, open: &Open) -> Option<KalamError> {
    let timeout = ctx.db.options.transaction_timeout?;
    (open.idle_since.elapsed() > timeout).then(|| {
        KalamError::new(
            ErrorCode::TransactionTimeout,
            format!(
                "the transaction was idle longer than {} ms (transaction_timeout_ms) and was rolled back; end it with ROLLBACK",
                timeout.as_millis()
            ),
        )
    })
}

/// Statements a transaction can hold: reads, and writes it can buffer and undo.
fn transactional(statement: &KalamStatement) -> bool {
    match statement {
        KalamStatement::Query(_)
        | KalamStatement::Dml(_)
        | KalamStatement::ShowNamespaces
        | KalamStatement::ShowTables { .. }
        | KalamStatement::ShowStorages
        | KalamStatement::DescribeTable(_)
        | KalamStatement::ShowStats(_) => true,
        KalamStatement::ExecuteAs { sql, .. } => {
            matches!(
                parse_statement(sql),
                Ok(KalamStatement::Query(_) | KalamStatement::Dml(_))
            )
        }
        _ => false,
    }
}

/// Whether a transactional statement writes rows.
fn writes(statement: &KalamStatement) -> bool {
    match statement {
        KalamStatement::Dml(_) => true,
        KalamStatement::ExecuteAs { sql, .. } => matches!(parse_statement(sql), Ok(KalamStatement::Dml(_))),
        _ => false,
    }
}
