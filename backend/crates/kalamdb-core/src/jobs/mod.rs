//! The job manager: background flush jobs, their records (`system.jobs`), the
//! flush-policy scheduler, start-up recovery and graceful shutdown.
//!
//! Every server has exactly one `JobManager`, built by [`crate::KalamDb::open`]: there
//! is no configuration without one. A job is registered (status `queued`, persisted)
//! and the statement that asked for it returns at once; a tokio task then waits for
//! one of `max_concurrent_jobs` slots, takes the table's watermark under the
//! table's commit lock (`running`), runs the flush on a blocking thread
//! ([`flush`]) and records the outcome (`completed`, `failed` or `cancelled`). At most
//! one job per table is queued or running at a time.
//!
//! ```text
//! STORAGE FLUSH TABLE ─► submit_flush ─► queued ─► (slot) ─► running ─► completed
//!                                          │                   │  └──► failed
//!                          KILL JOB / shutdown ─► cancelled ◄──┘ (at a batch boundary)
//! ```

mod compact;
pub(crate) mod flush;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult, TableType};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::defaults::JobOptions;
use crate::job_record::JOB_PREFIX;
pub use crate::job_record::{FlushMetrics, JobKind, JobRecord, JobStatus, JobTrigger};

use crate::access::Caller;
use crate::base::{now_micros, store_error};
use crate::catalog::TableDef;
use crate::cold::ColdTier;
use crate::failpoint;
use crate::statements::JobControl;
use crate::tiers::Tiers;

/// A queued or running job.
pub(crate) struct ActiveJob {
    record: Mutex<JobRecord>,
    /// Set by `KILL JOB`, `DROP TABLE` and shutdown; the job stops at its next
    /// batch boundary.
    pub cancel: CancellationToken,
    /// Cancelled (as a broadcast signal) once the job's final state is recorded.
    finished: CancellationToken,
}

impl ActiveJob {
    pub fn id(&self) -> String {
        self.record.lock().job_id.clone()
    }

    pub fn snapshot(&self) -> JobRecord {
        self.record.lock().clone()
    }

    /// Records a compaction's progress (in memory and in `system`): after each user.
    pub(crate) fn compaction_progress(&self, db: &Tiers, done: &compact::Compacted, progress: f64) {
        self.record.lock().compaction = Some(done.input);
        self.progress(db, done.output, progress);
    }

    /// Records progress (in memory and in `system`): after each user's segment.
    pub(crate) fn progress(&self, db: &Tiers, metrics: FlushMetrics, progress: f64) {
        let record = {
            let mut record = self.record.lock();
            record.metrics = metrics;
            record.progress = progress.clamp(0.0, 1.0);
            record.clone()
        };
        if let Err(e) = persist(db, &record) {
            tracing::warn!(job_id = %record.job_id, "could not record job progress: {}", e.message);
        }
    }
}

#[derive(Default)]
pub(crate) struct PolicyState {
    /// Rows written per table since its last flush started.
    pending_rows: HashMap<u32, u64>,
    /// When each table's last flush started (or when the server started).
    last_flush: HashMap<u32, Instant>,
    /// Tables whose last policy flush failed: consecutive failures, and when the
    /// policy may try again.
    backoff: HashMap<(u32, JobKind), (u32, Instant)>,
    /// When the retention sweeper runs next.
    next_sweep: Option<Instant>,
}

/// The first retry of a failed policy flush waits this long; each further failure
/// doubles the wait, up to [`POLICY_BACKOFF_MAX`].
const POLICY_BACKOFF_BASE: Duration = Duration::from_secs(1);
const POLICY_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The wait after `failures` consecutive failures of a table's policy flush.
fn policy_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    POLICY_BACKOFF_BASE
        .saturating_mul(1 << doublings)
        .min(POLICY_BACKOFF_MAX)
}

/// How often finished jobs are checked against the retention.
fn sweep_interval(retention: Duration) -> Duration {
    retention.clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Totals of finished flush jobs since the server started (for `/metrics`).
#[derive(Default)]
struct FlushTotals {
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    files: std::sync::atomic::AtomicU64,
}

pub(crate) struct JobManager {
    options: JobOptions,
    tiers: Arc<Tiers>,
    me: Weak<JobManager>,
    totals: FlushTotals,
    slots: Arc<Semaphore>,
    active: Mutex<HashMap<String, Arc<ActiveJob>>>,
    closed: AtomicBool,
    tasks: TaskTracker,
    stop: CancellationToken,
    policy: Arc<Mutex<PolicyState>>,
    started: Instant,
    /// Jobs in `system.jobs` by status, kept as jobs change (`/metrics`).
    status_counts: Mutex<BTreeMap<&'static str, u64>>,
}

fn persist(db: &Tiers, record: &JobRecord) -> KalamResult<()> {
    let mut batch = db.store.batch();
    batch.put_system(
        &record.key(),
        &serde_json::to_vec(record).expect("job records serialize"),
    );
    db.store.commit(batch).map_err(store_error)
}

fn flush_in_progress(table: &TableDef, job_id: &str) -> KalamError {
    KalamError::new(
        ErrorCode::FlushInProgress,
        format!(
            "a flush or compaction of '{}' is already queued or running (job {job_id})",
            table.qualified_name()
        ),
    )
}

impl JobManager {
    /// The job manager over `tiers`; `policy` is the state its commit observer
    /// ([`PolicyCounter`]) counts into.
    pub fn new(options: JobOptions, tiers: Arc<Tiers>, policy: PolicyCounter) -> Arc<JobManager> {
        Arc::new_cyclic(|me| JobManager {
            tiers,
            me: me.clone(),
            totals: FlushTotals::default(),
            slots: Arc::new(Semaphore::new(options.max_concurrent_jobs.max(1))),
            options,
            active: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
            policy: policy.0,
            started: Instant::now(),
            status_counts: Mutex::new(BTreeMap::new()),
        })
    }

    /// The tiers the jobs work on.
    pub fn tiers(&self) -> &Arc<Tiers> {
        &self.tiers
    }

    /// The queued and running jobs.
    pub fn active_records(&self) -> Vec<JobRecord> {
        self.active.lock().values().map(|j| j.snapshot()).collect()
    }

    fn active_job(&self, job_id: &str) -> Option<Arc<ActiveJob>> {
        self.active.lock().get(job_id).cloned()
    }

    /// Rows, bytes and files written by flushes since the server started.
    pub fn flush_totals(&self) -> (u64, u64, u64) {
        (
            self.totals.rows.load(Ordering::Relaxed),
            self.totals.bytes.load(Ordering::Relaxed),
            self.totals.files.load(Ordering::Relaxed),
        )
    }

    /// Jobs in `system.jobs` by status.
    pub fn status_counts(&self) -> BTreeMap<&'static str, u64> {
        self.status_counts.lock().clone()
    }

    /// Moves one job between statuses in [`JobManager::status_counts`] (`None`: a
    /// job that appears or disappears).
    fn move_status(&self, from: Option<JobStatus>, to: Option<JobStatus>) {
        let mut counts = self.status_counts.lock();
        if let Some(from) = from
            && let Some(count) = counts.get_mut(from.as_str())
        {
            *count = count.saturating_sub(1);
        }
        if let Some(to) = to {
            *counts.entry(to.as_str()).or_default() += 1;
        }
    }

    /// Counts the hot rows of every table and the jobs by status (once, after
    /// recovery): what the flush policies ([`JobManager::maintain`]) start from.
    pub fn count_at_start(&self) -> KalamResult<()> {
        let db = &self.tiers;
        {
            let mut policy = self.policy.lock();
            for table in db.catalog.tables() {
                let hot = db.store.latest().hot_count(table.table_id).map_err(store_error)?;
                db.hot_rows.set(table.table_id, hot);
                if table.table_type == TableType::User && table.flush_policy.is_some() {
                    policy.pending_rows.insert(table.table_id, hot);
                }
            }
        }
        {
            let mut counts = self.status_counts.lock();
            counts.clear();
            for record in load_records(db)? {
                *counts.entry(record.status.as_str()).or_default() += 1;
            }
        }
        Ok(())
    }

    /// One tick of the maintenance ticker (`maintenance.rs`): flush policies that are
    /// due, and the retention sweep of finished jobs when it is due.
    pub(crate) fn maintain(&self) {
        self.check_policies();
        if self.sweep_due()
            && let Err(e) = self.sweep_finished()
        {
            tracing::warn!("job retention sweep failed: {}", e.message);
        }
    }

    fn check_policies(&self) {
        let now = Instant::now();
        for table in self.tiers.catalog.tables() {
            if table.table_type != TableType::User {
                continue;
            }
            let waits = |kind: JobKind| {
                (self.policy.lock().backoff.get(&(table.table_id, kind)))
                    .is_some_and(|(_, retry_at)| now < *retry_at)
            };
            // Compaction first: it is due only once a scope has more than N small
            // segments and leaves none, so flushes that are always due cannot starve it;
            // a flush due meanwhile waits for it (FLUSH_IN_PROGRESS), then runs.
            if let Some(n) = table.compact_segments
                && !waits(JobKind::Compact)
                && self.tiers.cold.has_scope_over(table.table_id, n as u64)
            {
                self.submit_by_policy(&table, JobKind::Compact);
            }
            let Some(policy) = table.flush_policy else {
                continue;
            };
            if waits(JobKind::Flush) {
                continue;
            }
            let due = {
                let state = self.policy.lock();
                let pending = state.pending_rows.get(&table.table_id).copied().unwrap_or(0);
                let since = state
                    .last_flush
                    .get(&table.table_id)
                    .copied()
                    .unwrap_or(self.started);
                let by_rows = policy.rows.is_some_and(|n| pending >= n);
                let by_time = policy
                    .interval_seconds
                    .is_some_and(|s| pending > 0 && now.duration_since(since) >= Duration::from_secs(s));
                by_rows || by_time
            };
            if !due {
                continue;
            }
            self.submit_by_policy(&table, JobKind::Flush);
        }
    }

    fn submit_by_policy(&self, table: &TableDef, kind: JobKind) {
        match self.submit(table, kind, JobTrigger::Policy) {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::FlushInProgress => {}
            Err(e) => {
                tracing::warn!(table = %table.qualified_name(), job_type = kind.as_str(), "policy job not started: {}", e.message)
            }
        }
    }

    /// True (and the next sweep scheduled) when the retention sweep is due: once a
    /// minute at most, not on every scheduler tick.
    fn sweep_due(&self) -> bool {
        let now = Instant::now();
        let mut state = self.policy.lock();
        if state.next_sweep.is_some_and(|at| now < at) {
            return false;
        }
        state.next_sweep = Some(now + sweep_interval(self.options.job_retention));
        true
    }

    /// Records the end of a policy-triggered job: a failure delays the table's next
    /// policy flush (exponential backoff) and returns the delay; a success clears it.
    fn note_policy_outcome(&self, table_id: u32, kind: JobKind, failed: bool) -> Option<Duration> {
        let mut state = self.policy.lock();
        let key = (table_id, kind);
        if !failed {
            state.backoff.remove(&key);
            return None;
        }
        let failures = state.backoff.get(&key).map_or(0, |(n, _)| *n) + 1;
        let wait = policy_backoff(failures);
        state.backoff.insert(key, (failures, Instant::now() + wait));
        Some(wait)
    }

    /// Removes finished jobs older than the retention. Job ids are UUIDv7, so the
    /// records are in creation order: the scan stops at the first job created after
    /// the cutoff (none after it can have finished before it), and decodes only the
    /// expired records and that one.
    fn sweep_finished(&self) -> KalamResult<()> {
        let db = &self.tiers;
        let cutoff = now_micros() - self.options.job_retention.as_micros() as i64;
        let mut batch = db.store.batch();
        let mut failure = None;
        let mut swept = Vec::new();
        db.store
            .latest()
            .system_scan_while(JOB_PREFIX, |key, value| {
                match serde_json::from_slice::<JobRecord>(value) {
                    Ok(record) if record.created_at >= cutoff => false,
                    Ok(record) => {
                        if record.status.is_finished() && record.finished_at.is_some_and(|t| t < cutoff) {
                            batch.delete_system(key);
                            swept.push(record.status);
                        }
                        true
                    }
                    Err(e) => {
                        failure = Some(KalamError::internal(format!("corrupt {key}: {e}")));
                        false
                    }
                }
            })
            .map_err(store_error)?;
        if let Some(e) = failure {
            return Err(e);
        }
        if !batch.is_empty() {
            db.store.commit(batch).map_err(store_error)?;
        }
        for status in swept {
            self.move_status(Some(status), None);
        }
        Ok(())
    }

    /// Graceful shutdown: no new jobs, queued jobs cancelled, running jobs given
    /// `shutdown_timeout` to finish, then asked to stop at a batch boundary.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.cancel();
        for job in self.active.lock().values() {
            if job.record.lock().status == JobStatus::Queued {
                job.cancel.cancel();
            }
        }
        self.tasks.close();
        if tokio::time::timeout(self.options.shutdown_timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "running jobs did not finish within {:?}; stopping them",
                self.options.shutdown_timeout
            );
            for job in self.active.lock().values() {
                job.cancel.cancel();
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        }
    }
}

/// Every persisted job record, oldest first (job ids are UUIDv7: time-ordered).
pub(crate) fn load_records(db: &Tiers) -> KalamResult<Vec<JobRecord>> {
    db.store
        .latest()
        .system_scan(JOB_PREFIX)
        .map_err(store_error)?
        .into_iter()
        .map(|(key, value)| {
            serde_json::from_slice(&value).map_err(|e| KalamError::internal(format!("corrupt {key}: {e}")))
        })
        .collect()
}

fn load_record(db: &Tiers, job_id: &str) -> KalamResult<Option<JobRecord>> {
    match db
        .store
        .latest()
        .system_get(&format!("{JOB_PREFIX}{job_id}"))
        .map_err(store_error)?
    {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            KalamError::internal(format!("corrupt job record {job_id}: {e}"))
        })?)),
        None => Ok(None),
    }
}

/// The rows of `system.jobs`: persisted records with live state for active jobs.
fn all_records(jobs: &JobManager) -> KalamResult<Vec<JobRecord>> {
    let active: HashMap<String, JobRecord> = jobs
        .active_records()
        .into_iter()
        .map(|r| (r.job_id.clone(), r))
        .collect();
    let mut records = load_records(&jobs.tiers)?;
    for record in &mut records {
        if let Some(live) = active.get(&record.job_id) {
            *record = live.clone();
        }
    }
    Ok(records)
}

/// One job's life after `submit_flush`.
async fn run_job(jobs: Arc<JobManager>, job: Arc<ActiveJob>) {
    let outcome = run_flush_job(&jobs, &job).await;
    let db = &jobs.tiers;
    let mut record = job.snapshot();
    let previous_status = record.status;
    record.finished_at = Some(now_micros());
    match outcome {
        Ok(flush::FlushEnd::Completed) => {
            record.status = JobStatus::Completed;
            record.progress = 1.0;
        }
        Ok(flush::FlushEnd::Cancelled) => {
            record.status = JobStatus::Cancelled;
            record.error_message.get_or_insert_with(|| "cancelled".into());
        }
        Err(e) => {
            record.status = JobStatus::Failed;
            record.error_message = Some(e.message);
        }
    }
    if record.trigger == JobTrigger::Policy
        && let Some(wait) = jobs.note_policy_outcome(
            record.table_id,
            JobKind::of(&record),
            record.status != JobStatus::Completed,
        )
    {
        let message = record.error_message.get_or_insert_with(String::new);
        message.push_str(&format!(
            "; the policy retries in {} s (backoff after repeated failures)",
            wait.as_secs()
        ));
    }
    // The table's hot rows, counted again now that the flush moved some: this
    // corrects any drift of the running count (see `hot_rows`).
    if let Ok(hot) = db.store.latest().hot_count(record.table_id) {
        db.hot_rows.set(record.table_id, hot);
        if record.status != JobStatus::Completed {
            // Rows that stayed hot still count towards the table's flush policy.
            jobs.policy.lock().pending_rows.insert(record.table_id, hot);
        }
    }
    if let Err(e) = persist(db, &record) {
        tracing::error!(job_id = %record.job_id, "could not record the end of the job: {}", e.message);
    }
    jobs.move_status(Some(previous_status), Some(record.status));
    let totals = &jobs.totals;
    let counted = match JobKind::of(&record) {
        JobKind::Flush => record.metrics,
        JobKind::Compact => FlushMetrics::default(),
    };
    totals.rows.fetch_add(counted.rows_flushed, Ordering::Relaxed);
    totals.bytes.fetch_add(counted.bytes_written, Ordering::Relaxed);
    totals.files.fetch_add(counted.files_written, Ordering::Relaxed);
    *job.record.lock() = record.clone();
    jobs.active.lock().remove(&record.job_id);
    job.finished.cancel();
    tracing::info!(
        job_id = %record.job_id,
        table = %format!("{}.{}", record.namespace, record.table_name),
        status = record.status.as_str(),
        rows = record.metrics.rows_flushed,
        files = record.metrics.files_written,
        bytes = record.metrics.bytes_written,
        duration_ms = record.duration_ms().unwrap_or(0),
        error = record.error_message.as_deref().unwrap_or(""),
        job_type = record.job_type.as_str(),
        "job finished"
    );
}

/// A compaction job once it holds the table's flush gate and a job slot.
async fn run_compaction(
    jobs: &JobManager,
    job: &Arc<ActiveJob>,
    namespace: &str,
    name: &str,
    table_id: u32,
) -> KalamResult<flush::FlushEnd> {
    let db = &jobs.tiers;
    let table = match db.catalog.table(namespace, name) {
        Some(t) if t.table_id == table_id => t,
        _ => {
            job.record.lock().error_message = Some("the table was dropped".into());
            return Ok(flush::FlushEnd::Cancelled);
        }
    };
    jobs.move_status(Some(JobStatus::Queued), Some(JobStatus::Running));
    let record = {
        let mut r = job.record.lock();
        r.status = JobStatus::Running;
        r.started_at = Some(now_micros());
        r.compaction = Some(Default::default());
        r.clone()
    };
    persist(db, &record)?;
    tracing::info!(job_id = %record.job_id, table = %table.qualified_name(), "compaction job running");
    // A policy compacts the scopes over its limit; a statement every scope with more
    // than one segment (or versions to drop).
    let min_segments = match (record.trigger, table.compact_segments) {
        (JobTrigger::Policy, Some(n)) => n as usize + 1,
        _ => 2,
    };
    let (db2, job2) = (db.clone(), job.clone());
    let (end, done) =
        tokio::task::spawn_blocking(move || compact::compact_table(&db2, &table, min_segments, &job2))
            .await
            .map_err(|e| KalamError::internal(format!("the compaction task failed: {e}")))??;
    let mut r = job.record.lock();
    r.metrics = done.output;
    r.compaction = Some(done.input);
    Ok(end)
}

async fn run_flush_job(jobs: &JobManager, job: &Arc<ActiveJob>) -> KalamResult<flush::FlushEnd> {
    let db = &jobs.tiers;
    let (namespace, name, table_id) = {
        let r = job.record.lock();
        (r.namespace.clone(), r.table_name.clone(), r.table_id)
    };
    // No index is being built over the table while it flushes; waiting for one
    // holds no job slot (flushes of other tables go on).
    let gate = tokio::select! {
        biased;
        _ = job.cancel.cancelled() => {
            job.record.lock().error_message = Some("cancelled before it started".into());
            return Ok(flush::FlushEnd::Cancelled);
        }
        gate = db.cold.flush_gate(table_id).read_owned() => gate,
    };
    let _slot = tokio::select! {
        biased;
        _ = job.cancel.cancelled() => {
            job.record.lock().error_message = Some("cancelled before it started".into());
            return Ok(flush::FlushEnd::Cancelled);
        }
        slot = jobs.slots.clone().acquire_owned() => slot.map_err(|_| KalamError::internal("job slots closed"))?,
    };
    if JobKind::of(&job.snapshot()) == JobKind::Compact {
        let end = run_compaction(jobs, job, &namespace, &name, table_id).await;
        drop(gate);
        return end;
    }
    let guard = tokio::select! {
        biased;
        _ = job.cancel.cancelled() => {
            job.record.lock().error_message = Some("cancelled before it started".into());
            return Ok(flush::FlushEnd::Cancelled);
        }
        guard = db.commit_locks.lock_table(table_id) => guard,
    };
    let table = match db.catalog.table(&namespace, &name) {
        Some(t) if t.table_id == table_id => t,
        _ => {
            job.record.lock().error_message = Some("the table was dropped".into());
            return Ok(flush::FlushEnd::Cancelled);
        }
    };
    // The watermark: every row version of the table committed so far has a `_seq`
    // at or below it, and every later one a `_seq` above it (the table's `_seq`s
    // are allocated and committed under its commit lock, which we hold).
    let watermark = db.seq.last();
    jobs.move_status(Some(JobStatus::Queued), Some(JobStatus::Running));
    let record = {
        let mut r = job.record.lock();
        r.status = JobStatus::Running;
        r.started_at = Some(now_micros());
        r.watermark = Some(watermark);
        r.clone()
    };
    let mut batch = db.store.batch();
    ColdTier::stage_watermark(&mut batch, table_id, watermark);
    batch.put_system(
        &record.key(),
        &serde_json::to_vec(&record).expect("job records serialize"),
    );
    // Synced whatever `sync_writes` says: the segments and manifests this flush
    // writes (fsynced files) must never outlive the record of its watermark in a
    // power loss. Recovery reconciles from the manifests all the same (D8).
    if !failpoint::armed("lose_flush_start") {
        db.store.commit_synced(batch).map_err(store_error)?;
    }
    db.cold.apply_watermark(table_id, watermark);
    {
        let mut policy = jobs.policy.lock();
        policy.pending_rows.insert(table_id, 0);
        policy.last_flush.insert(table_id, Instant::now());
    }
    drop(guard);
    tracing::info!(job_id = %record.job_id, table = %table.qualified_name(), watermark, "flush job running");
    failpoint::hit("flush_started");

    let db2 = db.clone();
    let job2 = job.clone();
    let result = tokio::task::spawn_blocking(move || flush::flush_table(&db2, &table, watermark, &job2))
        .await
        .map_err(|e| KalamError::internal(format!("the flush task failed: {e}")))?;
    drop(gate);
    let (end, metrics) = result?;
    job.record.lock().metrics = metrics;
    Ok(end)
}

/// Start-up: jobs a crash left `running` become `failed`, jobs left `queued` become
/// `cancelled`, finished jobs past the retention are removed, and every USER table
/// is reconciled with its manifests ([`reconcile_table`]). Recovery trusts the
/// manifests (fsynced files), not the job records: a power loss can take back the
/// record of a flush whose segments and manifest are on disk.
pub(crate) fn recover(jobs: &JobManager) -> KalamResult<()> {
    let db = &jobs.tiers;
    let now = now_micros();
    for mut record in load_records(db)? {
        let message = match record.status {
            JobStatus::Running => "interrupted: the server stopped while the job was running",
            JobStatus::Queued => "the server stopped before the job started",
            _ => continue,
        };
        record.status = match record.status {
            JobStatus::Running => JobStatus::Failed,
            _ => JobStatus::Cancelled,
        };
        record.error_message = Some(message.into());
        record.finished_at = Some(now);
        tracing::warn!(job_id = %record.job_id, status = record.status.as_str(), "{message}");
        persist(db, &record)?;
    }
    for table in db.catalog.tables() {
        if table.table_type == TableType::User {
            reconcile_table(db, &table)?;
        }
    }
    jobs.sweep_finished()
}

/// Makes a table's hot tier and flush state agree with its manifests, whatever
/// step a crash or power loss stopped a flush at:
/// - staging files of a local storage, segments the current manifest does not list
///   (a flush or compaction that stopped before its commit, or the inputs of one that
///   stopped after it) and manifest versions below the current one are removed;
/// - hot rows at or below a scope's manifest watermark are removed (a flush that
///   saved its manifest but not its hot delete: the rows are in Parquet);
/// - the table's flush watermark is raised to the highest manifest watermark, so a
///   later write replacing a flushed version leaves a stale marker (else a deleted
///   or updated row could come back from Parquet);
/// - the `_seq` allocator is raised above every flushed version, so no new version
///   can take a `_seq` a segment already holds.
fn reconcile_table(db: &Tiers, table: &TableDef) -> KalamResult<()> {
    use crate::cold::cold_error;
    let mut batch = db.store.batch();
    let mut watermark = 0u64;
    let mut max_seq = 0u64;
    for scope in db.cold.scopes_on_disk(table)? {
        let dir = db.cold.scope_dir(table, &scope)?;
        dir.storage.remove_staging(&dir.prefix).map_err(cold_error)?;
        // One listing of the scope finds its current manifest and what to delete (no
        // commit runs yet at start-up).
        let (objects, _) = dir.storage.list_level(&dir.prefix).map_err(cold_error)?;
        let manifest = kalamdb_cold::Manifest::load_listed(&dir, table.table_id, &objects)
            .map_err(cold_error)?
            .ok_or_else(|| KalamError::internal(format!("{}: the current manifest vanished", dir.prefix)))?;
        db.cold.note_manifest(table.table_id, &scope, &manifest);
        if !manifest.segments.is_empty() {
            batch.delete_hot_through(table.table_id, &scope, manifest.watermark());
            watermark = watermark.max(manifest.watermark());
            max_seq = max_seq.max(manifest.segments.iter().map(|s| s.max_seq).max().unwrap_or(0));
        }
        // Segments no manifest lists (a flush or compaction stopped before its
        // commit, or files it replaced) and manifest versions below the current one.
        let listed: std::collections::HashSet<&str> =
            manifest.segments.iter().map(|s| s.file.as_str()).collect();
        for object in objects {
            let Some(name) = object.location.filename() else {
                continue;
            };
            let orphan =
                kalamdb_cold::layout::parse_segment_file_name(name).is_some() && !listed.contains(name);
            let old =
                (kalamdb_cold::layout::parse_manifest_file_name(name)).is_some_and(|v| v < manifest.version);
            if orphan || old {
                dir.storage.delete(&object.location).map_err(cold_error)?;
                if orphan {
                    tracing::warn!(table = %table.qualified_name(), scope, file = %name, "removed a segment no manifest lists");
                }
            }
        }
    }
    let raise_watermark = watermark > db.cold.watermark(table.table_id);
    if raise_watermark {
        tracing::warn!(
            table = %table.qualified_name(),
            watermark,
            "flush watermark raised to the manifests' (the record of a flush start was lost)"
        );
        ColdTier::stage_watermark(&mut batch, table.table_id, watermark);
    }
    let highest = watermark.max(max_seq);
    if highest > db.seq.last() {
        db.seq.raise_to(highest);
        batch.raise_system_counter(crate::seq::LAST_SEQ_KEY, db.seq.last());
    }
    if !batch.is_empty() {
        db.store.commit_synced(batch).map_err(store_error)?;
    }
    if raise_watermark {
        db.cold.apply_watermark(table.table_id, watermark);
    }
    Ok(())
}

/// The job manager as a commit observer: rows written count toward the table's
/// flush policy.
#[derive(Clone, Default)]
pub(crate) struct PolicyCounter(Arc<Mutex<PolicyState>>);

impl crate::observers::CommitObserver for PolicyCounter {
    fn written(&self, table: &TableDef, versions: u64) {
        if table.flush_policy.is_some() {
            *self.0.lock().pending_rows.entry(table.table_id).or_insert(0) += versions;
        }
    }
}

/// `system.jobs`, for role `service` and above (job metrics count every user's rows).
pub(crate) struct JobsTable(pub Arc<JobManager>);

impl crate::system_tables::SystemTable for JobsTable {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn batch(
        &self,
        _: &Tiers,
        caller: &Caller,
    ) -> datafusion::common::Result<datafusion::arrow::record_batch::RecordBatch> {
        use crate::system_tables::{batch, opt_text, text, timestamp_field, timestamps};
        use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};
        crate::access::require(caller, crate::access::Action::ReadJobs)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let jobs =
            all_records(&self.0).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let ts = |name: &str| Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, None), true);
        let int = |values: Vec<Option<i64>>| -> ArrayRef { Arc::new(Int64Array::from(values)) };
        let opt_ts =
            |values: Vec<Option<i64>>| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(values)) };
        batch(
            vec![
                Field::new("job_id", DataType::Utf8, false),
                Field::new("job_type", DataType::Utf8, false),
                Field::new("status", DataType::Utf8, false),
                Field::new("namespace", DataType::Utf8, false),
                Field::new("table_name", DataType::Utf8, false),
                Field::new("trigger", DataType::Utf8, false),
                timestamp_field("created_at"),
                ts("started_at"),
                ts("finished_at"),
                Field::new("duration_ms", DataType::Int64, true),
                Field::new("rows_flushed", DataType::Int64, false),
                Field::new("users_flushed", DataType::Int64, false),
                Field::new("files_written", DataType::Int64, false),
                Field::new("bytes_written", DataType::Int64, false),
                Field::new("progress", DataType::Float64, false),
                crate::arrow_conv::field("result", &kalamdb_commons::KalamType::Json, true),
                Field::new("error_message", DataType::Utf8, true),
            ],
            vec![
                text(jobs.iter().map(|j| j.job_id.clone()).collect()),
                text(jobs.iter().map(|j| j.job_type.clone()).collect()),
                text(jobs.iter().map(|j| j.status.as_str().to_string()).collect()),
                text(jobs.iter().map(|j| j.namespace.clone()).collect()),
                text(jobs.iter().map(|j| j.table_name.clone()).collect()),
                text(jobs.iter().map(|j| j.trigger.as_str().to_string()).collect()),
                timestamps(jobs.iter().map(|j| j.created_at).collect()),
                opt_ts(jobs.iter().map(|j| j.started_at).collect()),
                opt_ts(jobs.iter().map(|j| j.finished_at).collect()),
                int(jobs.iter().map(|j| j.duration_ms()).collect()),
                int(jobs.iter().map(|j| Some(j.metrics.rows_flushed as i64)).collect()),
                int(jobs
                    .iter()
                    .map(|j| Some(j.metrics.users_flushed as i64))
                    .collect()),
                int(jobs
                    .iter()
                    .map(|j| Some(j.metrics.files_written as i64))
                    .collect()),
                int(jobs
                    .iter()
                    .map(|j| Some(j.metrics.bytes_written as i64))
                    .collect()),
                Arc::new(Float64Array::from(
                    jobs.iter().map(|j| j.progress).collect::<Vec<_>>(),
                )),
                opt_text(jobs.iter().map(|j| j.result_json()).collect()),
                opt_text(jobs.iter().map(|j| j.error_message.clone()).collect()),
            ],
        )
    }
}

impl JobControl for JobManager {
    /// Registers a flush of `table` and starts its task; returns the `queued` record.
    /// `FLUSH_IN_PROGRESS` when one is already queued or running for the table.
    fn submit(&self, table: &TableDef, kind: JobKind, trigger: JobTrigger) -> KalamResult<JobRecord> {
        if table.table_type != TableType::User {
            return Err(KalamError::unsupported(format!(
                "STORAGE {} supports USER tables only (only they have Parquet segments); '{}' is a {} table",
                kind.as_str().to_ascii_uppercase(),
                table.qualified_name(),
                table.table_type.as_str().to_ascii_uppercase()
            )));
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err(KalamError::new(
                ErrorCode::InvalidRequest,
                "the server is shutting down; no new jobs are accepted",
            ));
        }
        let mut active = self.active.lock();
        if let Some(existing) = active
            .values()
            .find(|j| j.record.lock().table_id == table.table_id)
        {
            return Err(flush_in_progress(table, &existing.id()));
        }
        let record = JobRecord {
            job_id: uuid::Uuid::now_v7().to_string(),
            job_type: kind.as_str().into(),
            status: JobStatus::Queued,
            namespace: table.namespace.clone(),
            table_name: table.name.clone(),
            table_id: table.table_id,
            trigger,
            created_at: now_micros(),
            started_at: None,
            finished_at: None,
            metrics: FlushMetrics::default(),
            progress: 0.0,
            watermark: None,
            error_message: None,
            compaction: None,
        };
        persist(&self.tiers, &record)?;
        self.move_status(None, Some(JobStatus::Queued));
        let job = Arc::new(ActiveJob {
            record: Mutex::new(record.clone()),
            cancel: CancellationToken::new(),
            finished: CancellationToken::new(),
        });
        active.insert(record.job_id.clone(), job.clone());
        drop(active);
        tracing::info!(
            job_id = %record.job_id,
            table = %table.qualified_name(),
            trigger = trigger.as_str(),
            job_type = kind.as_str(),
            "job queued"
        );
        let me = self.me.upgrade().expect("a job manager lives in an Arc");
        self.tasks.spawn(run_job(me, job));
        Ok(record)
    }

    /// `KILL JOB`: cancels a queued job, or asks a running one to stop at its next
    /// batch boundary and waits (up to `wait`) for it to stop. Returns the job's
    /// record afterwards and whether it was still active; a finished job is
    /// returned unchanged.
    fn kill<'a>(&'a self, job_id: &'a str, wait: Duration) -> BoxFuture<'a, KalamResult<(JobRecord, bool)>> {
        Box::pin(async move {
            if let Some(job) = self.active_job(job_id) {
                job.cancel.cancel();
                let _ = tokio::time::timeout(wait, job.finished.cancelled()).await;
                return Ok((job.snapshot(), true));
            }
            let record = load_record(&self.tiers, job_id)?.ok_or_else(|| {
                KalamError::new(ErrorCode::JobNotFound, format!("job '{job_id}' does not exist"))
            })?;
            Ok((record, false))
        })
    }

    /// Cancels the jobs of a table and waits until they have stopped (`DROP TABLE`).
    fn cancel_table_jobs(&self, table_id: u32) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let jobs: Vec<Arc<ActiveJob>> = self
                .active
                .lock()
                .values()
                .filter(|j| j.record.lock().table_id == table_id)
                .cloned()
                .collect();
            for job in &jobs {
                job.cancel.cancel();
            }
            for job in jobs {
                job.finished.cancelled().await;
            }
        })
    }
}
