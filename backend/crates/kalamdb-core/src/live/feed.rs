//! From commits and snapshots to messages: a table's dispatcher evaluates every
//! subscription's filter on each change's old and new row, and a new subscription's
//! initial data is read from the snapshot taken when it registered.
//!
//! One subscriber's expensive filter must not delay the others: a filter that may
//! cost more than the rows it reads (`compile.rs`, `LivePlan::costly`) — or one
//! that turned out slow on the dispatcher — is evaluated off the dispatcher, by a
//! task of its subscription that takes each commit's decoded rows from a bounded
//! queue (full: `SUBSCRIPTION_LAGGED`) and evaluates them on the blocking pool,
//! a few such evaluations at a time, each within `live_filter_budget_ms` (over it:
//! `FILTER_TOO_SLOW`). A subscription's messages keep their order: once its changes
//! go to its queue, all later ones do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use datafusion::arrow::array::{Array, BooleanArray, UInt32Array};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::StreamExt;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use parking_lot::RwLock;
use serde_json::json;
use tokio::sync::mpsc;

use super::{DEFAULT_BATCH_ROWS, LiveHub, MAX_BATCH_ROWS, SubscribeOptions, Subscription, lagged};
use crate::assemble::{RowAssembler, scan_columns};
use crate::base::df_error;
use crate::catalog::{SEQ_COLUMN, TableDef};
use crate::observers::ChangeSet;
use crate::provider::ScanScope;
use crate::query::QueryEngine;
use crate::results::{write_int64, write_json_object_array};
use crate::scoped::{SCAN_BATCH_ROWS, ScopedTable, TableSnapshot};

type Subs = Arc<RwLock<HashMap<String, Vec<Arc<Subscription>>>>>;

/// A filter evaluation on the dispatcher longer than this sends the subscription's
/// later changes to its own queue.
const INLINE_EVALUATION: std::time::Duration = std::time::Duration::from_millis(2);

/// Commits a costly filter's queue holds before its subscription lags.
const LANE_CHANGE_SETS: usize = 256;

/// Bytes of decoded rows a costly filter's queue holds before its subscription
/// lags (the rows are shared with the table's other subscriptions).
const LANE_BYTES: usize = 64 << 20;

/// Rows a costly filter evaluates between two checks of its time budget.
const EVALUATION_SLICE_ROWS: usize = 1024;

/// One commit's changes and their decoded rows, for a costly filter's queue.
pub(crate) struct Work {
    set: Arc<ChangeSet>,
    rows: Arc<Decoded>,
}

/// A table's dispatcher: runs until its feed is dropped (no subscription left).
pub(super) async fn dispatch(
    hub: Weak<LiveHub>,
    subs: Subs,
    backlog: Arc<AtomicUsize>,
    mut rx: mpsc::UnboundedReceiver<Arc<ChangeSet>>,
) {
    while let Some(set) = rx.recv().await {
        let behind = backlog.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let listening = subs.read().get(&set.scope).cloned().unwrap_or_default();
        if behind > super::MAX_FEED_BACKLOG {
            for sub in &listening {
                hub.end(sub, Some(&lagged()));
            }
            continue;
        }
        // The rows of a change set are decoded once per table definition the
        // subscriptions were compiled against (one, unless the table was altered).
        let mut decoded: HashMap<usize, KalamResult<Arc<Decoded>>> = HashMap::new();
        for sub in &listening {
            if sub.is_ended() {
                continue;
            }
            let rows = decoded
                .entry(Arc::as_ptr(&sub.table) as usize)
                .or_insert_with(|| decode(&sub.table, &set).map(Arc::new));
            let rows = match rows {
                Ok(rows) => rows.clone(),
                Err(e) => {
                    hub.end(sub, Some(&e.clone()));
                    continue;
                }
            };
            if sub.plan.costly || sub.lane.lock().is_some() {
                to_lane(&hub, sub, set.clone(), rows);
                continue;
            }
            let outcome = changes_of(sub, &set, &rows, sub.start_seq, None);
            if let Ok((_, _, filtering)) = &outcome
                && *filtering > INLINE_EVALUATION
            {
                // Its filter was slow here: its later changes are evaluated off the
                // dispatcher.
                start_lane(&hub, sub);
            }
            match outcome {
                Ok((messages, count, _)) => {
                    if !sub.send(messages, count) {
                        hub.end(sub, Some(&lagged()));
                    }
                }
                Err(e) => hub.end(sub, Some(&e)),
            }
        }
    }
}

/// Starts the queue and task of `sub`'s costly filter (once).
fn start_lane(hub: &Arc<LiveHub>, sub: &Arc<Subscription>) {
    let mut lane = sub.lane.lock();
    if lane.is_some() || sub.is_ended() {
        return;
    }
    let (tx, rx) = mpsc::channel(LANE_CHANGE_SETS);
    *lane = Some(tx);
    tokio::spawn(evaluate_lane(Arc::downgrade(hub), sub.clone(), rx));
}

/// Queues one commit for `sub`'s costly filter; a full queue (in commits or in
/// the bytes of their rows) ends it (lagged).
fn to_lane(hub: &Arc<LiveHub>, sub: &Arc<Subscription>, set: Arc<ChangeSet>, rows: Arc<Decoded>) {
    start_lane(hub, sub);
    let bytes = rows.batch.get_array_memory_size();
    let held = sub.lane_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
    // One commit larger than the bound is taken into an empty queue.
    let queued = (held <= LANE_BYTES || held == bytes)
        && match sub.lane.lock().as_ref() {
            Some(tx) => tx.try_send(Work { set, rows }).is_ok(),
            None => return, // ended meanwhile
        };
    if !queued {
        hub.end(sub, Some(&lagged()));
    }
}

/// A costly filter's task: each queued commit evaluated on the blocking pool (a
/// few costly filters at once, all subscriptions), within the filter budget. Ends
/// when the subscription does (its queue's sender goes).
async fn evaluate_lane(hub: Weak<LiveHub>, sub: Arc<Subscription>, mut rx: mpsc::Receiver<Work>) {
    while let Some(work) = rx.recv().await {
        sub.lane_bytes
            .fetch_sub(work.rows.batch.get_array_memory_size(), Ordering::AcqRel);
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if sub.is_ended() {
            return;
        }
        match evaluate_costly(&hub, &sub, work.set, work.rows, sub.start_seq).await {
            None => return,
            Some(Ok((messages, count))) => {
                if !sub.send(messages, count) {
                    hub.end(&sub, Some(&lagged()));
                }
            }
            Some(Err(e)) => hub.end(&sub, Some(&e)),
        }
    }
}

/// The `change` messages of `sub`'s costly filter over one commit's changes after
/// `after` (see [`changes_of`]), evaluated on the blocking pool in its user's turn
/// (one evaluation per user at a time, a few in all: one user's many costly
/// filters take turns with every other user's) and within the filter budget.
/// `None` when the subscription ended while it waited.
pub(super) async fn evaluate_costly(
    hub: &LiveHub,
    sub: &Arc<Subscription>,
    set: Arc<ChangeSet>,
    rows: Arc<Decoded>,
    after: u64,
) -> Option<KalamResult<(Vec<String>, u64)>> {
    let user_turn = hub.costly_turn(sub.caller.user_id.as_str());
    let _turn = user_turn.acquire_owned().await.ok()?;
    let _slot = hub.costly_filters.acquire().await.ok()?;
    if sub.is_ended() {
        return None;
    }
    let budget = hub.options.filter_budget;
    let (evaluated, holds) = (sub.clone(), hub.holds.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        // The pause point stands for evaluation time (tests hold it past the budget).
        let deadline = std::time::Instant::now() + budget;
        holds.wait_named(|| format!("live_filter:{}", evaluated.caller.username));
        changes_of(&evaluated, &set, &rows, after, Some(deadline))
    })
    .await;
    Some(match outcome {
        Ok(outcome) => outcome.map(|(messages, count, _)| (messages, count)),
        Err(e) => Err(KalamError::internal(format!("a live filter task failed: {e}"))),
    })
}

/// A change set's old and new rows as one batch of the table's columns with the
/// hidden ones, and where each change's rows are in it.
pub(super) struct Decoded {
    batch: RecordBatch,
    slots: Vec<(Option<usize>, Option<usize>)>,
}

pub(super) fn decode(table: &Arc<TableDef>, set: &ChangeSet) -> KalamResult<Decoded> {
    let mut builder = RowAssembler::new(scan_columns(table, true), SCAN_BATCH_ROWS);
    let mut slots = Vec::with_capacity(set.changes.len());
    let corrupt = |e| KalamError::internal(format!("corrupt row: {e}"));
    for change in &set.changes {
        let old = match &change.old {
            Some((seq, bytes)) => {
                builder.push_encoded(*seq, bytes).map_err(corrupt)?;
                Some(builder.rows - 1)
            }
            None => None,
        };
        let new = match &change.new {
            Some(bytes) => {
                builder.push_encoded(change.seq, bytes).map_err(corrupt)?;
                Some(builder.rows - 1)
            }
            None => None,
        };
        slots.push((old, new));
    }
    Ok(Decoded {
        batch: builder.finish()?,
        slots,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// Rows of the batch that `filter` keeps (all of them without a filter). With a
/// `deadline`, evaluated [`EVALUATION_SLICE_ROWS`] rows at a time and stopped past
/// it with `FILTER_TOO_SLOW`.
fn matching(
    sub: &Subscription,
    batch: &RecordBatch,
    deadline: Option<std::time::Instant>,
) -> KalamResult<Option<BooleanArray>> {
    let Some(filter) = &sub.plan.filter else {
        return Ok(None);
    };
    let evaluate = |rows: &RecordBatch| -> KalamResult<BooleanArray> {
        let values = filter
            .evaluate(rows)
            .and_then(|v| v.into_array(rows.num_rows()))
            .map_err(df_error)?;
        values
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| KalamError::internal("a live query's filter did not yield booleans"))
    };
    let Some(deadline) = deadline else {
        return evaluate(batch).map(Some);
    };
    let mut masks = Vec::new();
    let mut offset = 0;
    loop {
        if std::time::Instant::now() > deadline {
            return Err(KalamError::new(
                ErrorCode::FilterTooSlow,
                "the subscription's filter took longer than live_filter_budget_ms over one \
                 commit's changes: subscribe with a cheaper WHERE",
            ));
        }
        if offset >= batch.num_rows() {
            break;
        }
        let rows = batch.slice(offset, EVALUATION_SLICE_ROWS.min(batch.num_rows() - offset));
        masks.push(evaluate(&rows)?);
        offset += rows.num_rows();
    }
    let masks: Vec<&dyn Array> = masks.iter().map(|m| m as &dyn Array).collect();
    let mask = datafusion::arrow::compute::concat(&masks)
        .map_err(|e| KalamError::internal(format!("a live filter's answers: {e}")))?;
    Ok(mask.as_any().downcast_ref::<BooleanArray>().cloned())
}

/// The `change` messages one change set makes for `sub` from its changes after
/// `_seq` `after`, how many changes they carry, and how long its filter took (within
/// `deadline`, when one is given). A row entering the filter is an insert, leaving
/// it a delete.
pub(super) fn changes_of(
    sub: &Subscription,
    set: &ChangeSet,
    rows: &Decoded,
    after: u64,
    deadline: Option<std::time::Instant>,
) -> KalamResult<(Vec<String>, u64, std::time::Duration)> {
    let started = std::time::Instant::now();
    let mask = matching(sub, &rows.batch, deadline)?;
    let filtering = started.elapsed();
    let kept =
        |slot: Option<usize>| slot.is_some_and(|i| mask.as_ref().is_none_or(|m| m.is_valid(i) && m.value(i)));
    // Runs of one operation, each at most a batch of rows.
    let mut runs: Vec<(Op, Vec<u32>, Vec<u32>, u64)> = Vec::new();
    let mut count = 0u64;
    for (change, &(old, new)) in set.changes.iter().zip(&rows.slots) {
        if change.seq <= after {
            continue;
        }
        let op = match (kept(old), kept(new)) {
            (false, false) => continue,
            (false, true) => Op::Insert,
            (true, true) => Op::Update,
            (true, false) => Op::Delete,
        };
        count += 1;
        let slot = |s: Option<usize>| s.map(|i| i as u32);
        match runs.last_mut() {
            Some((last, news, olds, seq))
                if *last == op && news.len().max(olds.len()) < DEFAULT_BATCH_ROWS =>
            {
                news.extend(slot(new).filter(|_| op != Op::Delete));
                olds.extend(slot(old).filter(|_| op != Op::Insert));
                *seq = change.seq;
            }
            _ => runs.push((
                op,
                slot(new).filter(|_| op != Op::Delete).into_iter().collect(),
                slot(old).filter(|_| op != Op::Insert).into_iter().collect(),
                change.seq,
            )),
        }
    }
    if runs.is_empty() {
        return Ok((Vec::new(), 0, filtering));
    }
    let projected = rows
        .batch
        .project(&sub.plan.output)
        .map_err(|e| KalamError::internal(e.to_string()))?;
    let mut messages = Vec::with_capacity(runs.len());
    for (op, news, olds, seq) in runs {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#"{"type":"change","id":"#);
        out.extend_from_slice(json!(sub.id).to_string().as_bytes());
        out.extend_from_slice(format!(r#","op":"{}","rows":"#, op.as_str()).as_bytes());
        write_rows(sub, &projected, &news, &mut out)?;
        if op != Op::Insert {
            out.extend_from_slice(br#","old_rows":"#);
            write_rows(sub, &projected, &olds, &mut out)?;
        }
        out.extend_from_slice(br#","seq":"#);
        write_int64(seq, sub.plan.int64_as_string, &mut out);
        out.push(b'}');
        messages.push(String::from_utf8(out).map_err(|e| KalamError::internal(e.to_string()))?);
    }
    Ok((messages, count, filtering))
}

fn write_rows(
    sub: &Subscription,
    batch: &RecordBatch,
    indices: &[u32],
    out: &mut Vec<u8>,
) -> KalamResult<()> {
    let rows = take_record_batch(batch, &UInt32Array::from(indices.to_vec()))
        .map_err(|e| KalamError::internal(e.to_string()))?;
    write_json_object_array(&sub.plan.fields, &rows, sub.plan.int64_as_string, out);
    Ok(())
}

/// Sends the initial data of `sub` from `snapshot`: every matching row, or the
/// newest `last_rows` of them (oldest first), in `initial_data` messages of at most
/// `batch_size` rows. `false` when the subscription ended meanwhile.
pub(super) async fn initial_data(
    db: &Arc<QueryEngine>,
    sub: &Arc<Subscription>,
    snapshot: TableSnapshot,
    options: &SubscribeOptions,
) -> KalamResult<bool> {
    let batch_rows = options
        .batch_size
        .unwrap_or(DEFAULT_BATCH_ROWS)
        .clamp(1, MAX_BATCH_ROWS);
    let scope = ScanScope {
        caller: sub.caller.clone(),
        expose_hidden: true,
    };
    let session = crate::query::session(db, scope, &sub.table.namespace, false)?;
    let scoped = Arc::new(ScopedTable::with_scope(
        db.tiers.clone(),
        sub.table.clone(),
        sub.scope.clone(),
        true,
    ));
    let all: Vec<usize> = (0..scoped.columns().len()).collect();
    let filters: Vec<_> = sub.plan.logical_filter.iter().cloned().collect();
    let lookup = crate::tiered_scan::HotLookup {
        keys: None,
        index: None,
    };
    let scan =
        crate::tiered_scan::plan_scan(session.state(), &scoped, snapshot, &all, &filters, lookup, None)
            .map_err(df_error)?;
    let mut plan: Arc<dyn ExecutionPlan> = match &sub.plan.filter {
        Some(filter) => Arc::new(FilterExec::try_new(filter.clone(), scan).map_err(df_error)?),
        None => scan,
    };
    if let Some(last) = options.last_rows {
        let seq =
            datafusion::physical_expr::expressions::col(SEQ_COLUMN, scoped.schema()).map_err(df_error)?;
        let newest_first = SortOptions {
            descending: true,
            nulls_first: false,
        };
        let ordering = LexOrdering::new([PhysicalSortExpr::new(seq, newest_first)])
            .ok_or_else(|| KalamError::internal("empty ordering"))?;
        plan = Arc::new(
            SortExec::new(ordering, Arc::new(CoalescePartitionsExec::new(plan))).with_fetch(Some(last)),
        );
    }
    let mut stream = execute_stream(plan, session.task_ctx()).map_err(df_error)?;
    let mut sender = InitialSender {
        sub,
        batch_rows,
        pending: Vec::new(),
        pending_rows: 0,
        sent: 0,
    };
    if options.last_rows.is_some() {
        // At most `last_rows` rows, newest first: sent oldest first.
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            batches.push(batch.map_err(df_error)?);
        }
        let all = concat_batches(&scoped.schema().clone(), &batches)
            .map_err(|e| KalamError::internal(e.to_string()))?;
        let reversed: Vec<u32> = (0..all.num_rows() as u32).rev().collect();
        let all = take_record_batch(&all, &UInt32Array::from(reversed))
            .map_err(|e| KalamError::internal(e.to_string()))?;
        if !sender.add(all).await? {
            return Ok(false);
        }
    } else {
        while let Some(batch) = stream.next().await {
            if sub.is_ended() || !sender.add(batch.map_err(df_error)?).await? {
                return Ok(false);
            }
        }
    }
    sender.finish().await
}

/// Cuts rows into `initial_data` messages; the last one says `has_more: false`.
struct InitialSender<'a> {
    sub: &'a Arc<Subscription>,
    batch_rows: usize,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    sent: usize,
}

impl InitialSender<'_> {
    async fn add(&mut self, batch: RecordBatch) -> KalamResult<bool> {
        let batch = batch
            .project(&self.sub.plan.output)
            .map_err(|e| KalamError::internal(e.to_string()))?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (self.batch_rows - self.pending_rows).min(batch.num_rows() - offset);
            self.pending.push(batch.slice(offset, take));
            self.pending_rows += take;
            offset += take;
            // A full message goes out once a row of the next one exists, so that
            // the last message is the one that says `has_more: false`.
            if self.pending_rows == self.batch_rows && offset < batch.num_rows() && !self.emit(true).await? {
                return Ok(false);
            }
        }
        // A full message whose batch ended here waits for the next batch (or
        // `finish`) to know whether it is the last.
        Ok(true)
    }

    async fn emit(&mut self, has_more: bool) -> KalamResult<bool> {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.sub.plan.fields.clone(),
        ));
        let rows = concat_batches(&schema, &self.pending).map_err(|e| KalamError::internal(e.to_string()))?;
        self.pending.clear();
        self.pending_rows = 0;
        let mut out = Vec::with_capacity(256 + rows.num_rows() * 64);
        out.extend_from_slice(br#"{"type":"initial_data","id":"#);
        out.extend_from_slice(json!(self.sub.id).to_string().as_bytes());
        out.extend_from_slice(br#","rows":"#);
        write_json_object_array(
            &self.sub.plan.fields,
            &rows,
            self.sub.plan.int64_as_string,
            &mut out,
        );
        out.extend_from_slice(
            format!(r#","batch":{},"has_more":{has_more},"last_seq":"#, self.sent).as_bytes(),
        );
        write_int64(self.sub.start_seq, self.sub.plan.int64_as_string, &mut out);
        out.push(b'}');
        self.sent += 1;
        let text = String::from_utf8(out).map_err(|e| KalamError::internal(e.to_string()))?;
        Ok(!self.sub.is_ended() && self.sub.outbox.push_waiting(text).await)
    }

    async fn finish(mut self) -> KalamResult<bool> {
        self.emit(false).await
    }
}
