//! The budget of one statement, whatever its entry point (`/sql` in every format,
//! `/ingest`, a live query's initial data): one memory pool of `query_memory_mb`
//! and one deadline of `statement_timeout_ms`.
//!
//! - **Memory.** DataFusion's operators charge the pool through their task context
//!   (sorts, joins and aggregates spill beyond it). Work outside DataFusion charges
//!   it too, *before* it holds the memory: the rows a bulk load decodes and the
//!   pending writes of a load or an `INSERT ... SELECT` ([`Charge`]), what a
//!   correlated subquery materializes (the `kalamdb-apply` crate). Over the pool:
//!   `RESOURCES_EXHAUSTED`, nothing written.
//! - **Time.** Async work is raced against the deadline ([`within_budget`]): at the
//!   deadline its future is dropped, which stops DataFusion's tasks and scans; work
//!   on a blocking thread checks [`Budget::check_deadline`] between rows or
//!   batches. A streamed result's deadline fires on a timer, whether or not the
//!   client reads (`query.rs`, `RowStream::detached`).
//!
//! The budget of the running statement is a task-local ([`with_budget`]); blocking
//! work is handed the `Arc` itself.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};

/// What every statement's query runs with: a memory pool of its own (sorts, joins
/// and aggregates spill to disk beyond it) over one disk manager for spill files.
pub(crate) struct QueryRuntime {
    base: Arc<RuntimeEnv>,
    memory_bytes: usize,
}

impl QueryRuntime {
    /// Spill files go to `spill_dir` (emptied first: files of a previous run are
    /// garbage).
    pub fn open(spill_dir: &std::path::Path, memory_bytes: usize) -> KalamResult<Self> {
        if spill_dir.exists() {
            std::fs::remove_dir_all(spill_dir)
                .map_err(|e| KalamError::internal(format!("cannot empty {}: {e}", spill_dir.display())))?;
        }
        std::fs::create_dir_all(spill_dir)
            .map_err(|e| KalamError::internal(format!("cannot create {}: {e}", spill_dir.display())))?;
        let base = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill_dir.into()])),
            )
            .build_arc()
            .map_err(|e| KalamError::internal(format!("cannot start the query runtime: {e}")))?;
        Ok(QueryRuntime { base, memory_bytes })
    }

    /// A runtime with a fresh memory pool of `query_memory_mb` (work without a
    /// statement budget; a statement's is its [`crate::budget::Budget`]'s).
    pub fn for_statement(&self) -> KalamResult<Arc<RuntimeEnv>> {
        Self::runtime_with_pool(&self.base, self.memory_bytes)
    }

    pub(crate) fn runtime_with_pool(
        base: &Arc<RuntimeEnv>,
        memory_bytes: usize,
    ) -> KalamResult<Arc<RuntimeEnv>> {
        let top_consumers = std::num::NonZeroUsize::new(3).expect("non-zero");
        let pool = TrackConsumersPool::new(FairSpillPool::new(memory_bytes), top_consumers);
        RuntimeEnvBuilder::from_runtime_env(base)
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(|e| KalamError::internal(format!("cannot start the query runtime: {e}")))
    }

    pub(crate) fn base(&self) -> &Arc<RuntimeEnv> {
        &self.base
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

/// See the module documentation.
pub(crate) struct Budget {
    /// When the statement must be done, and the timeout it came from.
    deadline: Option<(tokio::time::Instant, Duration)>,
    /// The statement's runtime (its memory pool), made when first needed: a
    /// single-row INSERT never needs one.
    runtime: OnceLock<Arc<RuntimeEnv>>,
    base: Arc<RuntimeEnv>,
    memory_bytes: usize,
}

tokio::task_local! {
    static BUDGET: Arc<Budget>;
}

impl Budget {
    /// A budget starting now.
    pub fn new(runtime: &QueryRuntime, timeout: Option<Duration>) -> Arc<Budget> {
        Arc::new(Budget {
            deadline: timeout.map(|t| (tokio::time::Instant::now() + t, t)),
            runtime: OnceLock::new(),
            base: runtime.base().clone(),
            memory_bytes: runtime.memory_bytes(),
        })
    }

    /// The budget of the statement this task runs, if any.
    pub fn current() -> Option<Arc<Budget>> {
        BUDGET.try_with(Arc::clone).ok()
    }

    /// The statement's runtime: every DataFusion session and plan of the statement
    /// runs under its one memory pool.
    pub fn runtime(&self) -> KalamResult<Arc<RuntimeEnv>> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        let runtime = QueryRuntime::runtime_with_pool(&self.base, self.memory_bytes)?;
        Ok(self.runtime.get_or_init(|| runtime).clone())
    }

    /// A reservation of the statement's pool for `what` (the name errors give),
    /// registered with its first bytes: a charge that never grows makes no pool.
    pub fn charge(self: &Arc<Self>, what: &'static str) -> KalamResult<Charge> {
        Ok(Charge {
            budget: self.clone(),
            reservation: Arc::new(OnceLock::new()),
            what,
        })
    }

    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline.map(|(at, _)| at)
    }

    /// `STATEMENT_TIMEOUT` once the deadline has passed: for blocking work, between
    /// rows or batches.
    pub fn check_deadline(&self) -> KalamResult<()> {
        match self.deadline {
            Some((at, _)) if tokio::time::Instant::now() >= at => Err(self.exceeded()),
            _ => Ok(()),
        }
    }

    /// The error of a statement still running at its deadline.
    pub fn exceeded(&self) -> KalamError {
        let timeout = self.deadline.map_or(Duration::ZERO, |(_, t)| t);
        KalamError::new(
            ErrorCode::StatementTimeout,
            format!(
                "the statement ran longer than statement_timeout_ms ({} ms) and was cancelled",
                timeout.as_millis()
            ),
        )
    }
}

/// The runtime of work that runs without a statement (a live query's filter):
/// a pool of its own.
pub(crate) fn runtime_of_current(runtime: &QueryRuntime) -> KalamResult<Arc<RuntimeEnv>> {
    match Budget::current() {
        Some(budget) => budget.runtime(),
        None => runtime.for_statement(),
    }
}

/// A charge of the running statement's budget (of a pool of its own for work
/// without one).
pub(crate) fn charge_current(runtime: &QueryRuntime, what: &'static str) -> KalamResult<Charge> {
    match Budget::current() {
        Some(budget) => budget.charge(what),
        None => Budget::new(runtime, None).charge(what),
    }
}

/// Memory a statement holds outside DataFusion's operators, charged to its pool
/// before it is held (and given back when the charge is dropped). Clones share one
/// reservation (work on a blocking thread charges the statement's).
#[derive(Clone)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    reservation: Arc<OnceLock<MemoryReservation>>,
    what: &'static str,
}

impl Charge {
    /// Adds `bytes`; `RESOURCES_EXHAUSTED` when the pool has no room for them.
    pub fn grow(&self, bytes: usize) -> KalamResult<()> {
        if bytes == 0 {
            return Ok(());
        }
        let reservation = match self.reservation.get() {
            Some(reservation) => reservation,
            None => {
                let pool = self.budget.runtime()?.memory_pool.clone();
                self.reservation
                    .get_or_init(|| MemoryConsumer::new(self.what).register(&pool))
            }
        };
        reservation.try_grow(bytes).map_err(|_| {
            KalamError::new(
                ErrorCode::ResourcesExhausted,
                format!(
                    "{} need more memory than query_memory_mb allows ({} MiB); nothing was written",
                    self.what,
                    self.budget.memory_bytes >> 20
                ),
            )
        })
    }

    pub fn shrink(&self, bytes: usize) {
        if let Some(reservation) = self.reservation.get() {
            reservation.shrink(bytes.min(reservation.size()));
        }
    }
}

/// Runs `statement` under `budget`.
pub(crate) async fn with_budget<F: std::future::Future>(budget: Arc<Budget>, statement: F) -> F::Output {
    // Boxed: a statement's future is large, and async worker stacks are not.
    BUDGET.scope(budget, Box::pin(statement)).await
}

/// Awaits `work` until the statement's deadline. Dropping `work` at the deadline
/// cancels it: DataFusion's tasks stop and scans stop reading. Nothing here
/// commits, so a cancelled statement writes nothing.
pub(crate) async fn within_budget<T>(
    work: impl std::future::Future<Output = KalamResult<T>>,
) -> KalamResult<T> {
    let work = Box::pin(work);
    match Budget::current().and_then(|b| b.deadline().map(|at| (b, at))) {
        Some((budget, at)) => match tokio::time::timeout_at(at, work).await {
            Ok(result) => result,
            Err(_) => Err(budget.exceeded()),
        },
        None => work.await,
    }
}
