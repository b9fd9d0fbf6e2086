//! The flush job: move one USER table's hot rows up to a watermark into Parquet.
//!
//! For each user (scope) with hot rows (several scopes at once, on up to
//! `flush_parallelism` threads):
//! 1. stream the scope's hot rows with `_seq <= watermark` (one RocksDB iterator, in
//!    `_seq` order) into Arrow batches of `flush_batch_rows` rows, each encoded and
//!    sent into the upload of `batch-<n>.parquet` in the table's storage as it fills:
//!    memory is bounded by one batch, one Parquet row group and one upload part,
//!    whatever the table's size;
//! 2. complete the upload: the segment appears whole (`segment_partial` is a crash
//!    point after the first batch, `segment_written` after the completion);
//! 3. create the scope's next manifest version (create-if-absent: `manifest_saved`);
//! 4. under the cold tier's commit lock, publish the manifest to readers and delete
//!    the scope's hot rows `<= watermark` in one RocksDB batch (`scope_committed`), then
//!    delete the previous version. If that batch fails, the new version is withdrawn
//!    (the previous one is current again) and the segment removed.
//!
//! Rows written during the flush get `_seq`s above the watermark and stay hot. A row
//! at or below the watermark that a write replaces while the flush runs is marked
//! stale by that write (see `write.rs`), so its Parquet copy is never read. A crash
//! between 3 and 4 is rolled forward at start-up (`jobs::recover`). Cancellation is
//! checked between batches: an unfinished segment is removed, committed scopes stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use parking_lot::Mutex;

use kalamdb_cold::{Segment, SegmentWriter};
use kalamdb_commons::{KalamError, KalamResult};

use super::ActiveJob;
use crate::assemble::RowAssembler;
use crate::base::{now_micros, store_error};
use crate::catalog::TableDef;
use crate::cold::{ColdTier, cold_error};
use crate::failpoint;
use crate::job_record::FlushMetrics;
use crate::scoped::ScopedTable;
use crate::segment;
use crate::tiers::Tiers;

pub(crate) enum FlushEnd {
    Completed,
    Cancelled,
}

/// Runs the flush of `table` up to `watermark`. Blocking: call from a blocking thread.
///
/// Scopes are flushed by up to `flush_parallelism` threads at once, each taking the
/// next scope not yet started; each scope is committed on its own, as before, so
/// the order in which they finish does not matter. Memory is one batch and one row
/// group per thread.
pub(crate) fn flush_table(
    db: &Arc<Tiers>,
    table: &Arc<TableDef>,
    watermark: u64,
    job: &ActiveJob,
) -> KalamResult<(FlushEnd, FlushMetrics)> {
    let _pin = db.cold.pin_while_flushing(table.table_id);
    db.holds.wait("flush_start", || job.cancel.is_cancelled());
    let scopes = ScopedTable::hot_scopes(db, table)?;
    let batch_rows = db.options.jobs.flush_batch_rows.max(1);
    let threads = db.options.jobs.flush_parallelism.clamp(1, scopes.len().max(1));
    let next = AtomicUsize::new(0);
    let progress = Mutex::new(Progress::default());
    let worker = || {
        loop {
            let index = next.fetch_add(1, AtomicOrdering::Relaxed);
            if index >= scopes.len() || progress.lock().end.is_some() {
                return;
            }
            if job.cancel.is_cancelled() {
                progress.lock().end.get_or_insert(Ok(FlushEnd::Cancelled));
                return;
            }
            let outcome = flush_scope(&scopes[index], watermark, batch_rows, job);
            let mut p = progress.lock();
            match outcome {
                Ok(ScopeOutcome::Empty) => {}
                Ok(ScopeOutcome::Flushed { rows, bytes }) => {
                    p.metrics.rows_flushed += rows;
                    p.metrics.users_flushed += 1;
                    p.metrics.files_written += 1;
                    p.metrics.bytes_written += bytes;
                    if p.metrics.files_written == 1 {
                        failpoint::hit("scope_committed");
                    }
                }
                Ok(ScopeOutcome::Cancelled) => {
                    p.end.get_or_insert(Ok(FlushEnd::Cancelled));
                    return;
                }
                Err(e) => {
                    p.end.get_or_insert(Err(e));
                    return;
                }
            }
            p.done += 1;
            // Under the lock: progress records are persisted in order.
            job.progress(db, p.metrics, p.done as f64 / scopes.len() as f64);
        }
    };
    if threads == 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::Builder::new()
                        .name("kalamdb-flush".into())
                        .spawn_scoped(s, worker)
                })
                .collect();
            for handle in handles {
                match handle {
                    Ok(handle) => {
                        if handle.join().is_err() {
                            progress
                                .lock()
                                .end
                                .get_or_insert(Err(KalamError::internal("a flush thread panicked")));
                        }
                    }
                    Err(e) => {
                        // Fewer threads than asked for: the others take the scopes.
                        tracing::warn!(table = %table.qualified_name(), "could not start a flush thread: {e}");
                    }
                }
            }
        });
        // Scopes no thread took (none could be started) are flushed here.
        worker();
    }
    let Progress { metrics, end, .. } = progress.into_inner();
    match end {
        Some(Ok(end)) => Ok((end, metrics)),
        Some(Err(e)) => Err(e),
        None => {
            failpoint::hit("before_completed");
            Ok((FlushEnd::Completed, metrics))
        }
    }
}

/// What the threads of one flush share.
#[derive(Default)]
struct Progress {
    metrics: FlushMetrics,
    /// Scopes finished.
    done: usize,
    /// Set by the first thread that stops the flush (cancelled, or failed).
    end: Option<KalamResult<FlushEnd>>,
}

enum ScopeOutcome {
    Empty,
    Flushed { rows: u64, bytes: u64 },
    Cancelled,
}

fn flush_scope(
    scoped: &ScopedTable,
    watermark: u64,
    batch_rows: usize,
    job: &ActiveJob,
) -> KalamResult<ScopeOutcome> {
    let (db, table, scope) = (scoped.db(), scoped.def().as_ref(), scoped.scope());
    let cold: &ColdTier = &db.cold;
    let manifest = cold.manifest(table, scope)?;
    let dir = cold.scope_dir(table, scope)?;
    let batch_no = manifest.next_batch;
    let mut builder = segment::assembler(table, batch_rows);
    let mut writer: Option<SegmentWriter> = None;
    let mut cancelled = false;
    let mut failure: Option<KalamError> = None;
    // The index entries of the rows moved to Parquet, removed with the hot rows.
    let mut index_entries: Vec<(Vec<u8>, u64)> = Vec::new();
    // UNIQUE indexes keep their entries: they must see the rows in Parquet too.
    let mut cleaned = table.clone();
    cleaned.indexes.retain(|i| !i.unique);
    scoped.visit_versions(&db.store.view(), watermark, |seq, bytes| {
        builder.push_encoded(seq, bytes)?;
        if !cleaned.indexes.is_empty() {
            let decoded = kalamdb_store::row_codec::decode_row(bytes)?;
            if !decoded.deleted {
                for key in crate::index::entry_keys(&cleaned, scope, &decoded) {
                    index_entries.push((key, seq));
                }
            }
        }
        if builder.rows >= batch_rows {
            if let Err(e) = write_batch(&mut writer, &mut builder, &dir, batch_no, batch_rows) {
                failure = Some(e);
                return Ok(false);
            }
            failpoint::hit("segment_partial");
            db.holds.wait("flush_batch", || job.cancel.is_cancelled());
            if pause_unless_cancelled(job, db.options.jobs.flush_batch_pause) {
                cancelled = true;
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    if let Some(e) = failure {
        if let Some(w) = writer {
            w.abort();
        }
        return Err(e);
    }
    if cancelled {
        if let Some(w) = writer {
            w.abort();
        }
        return Ok(ScopeOutcome::Cancelled);
    }
    if builder.rows > 0 {
        write_batch(&mut writer, &mut builder, &dir, batch_no, batch_rows)?;
    }
    let Some(writer) = writer else {
        return Ok(ScopeOutcome::Empty);
    };
    let written = writer.finish().map_err(cold_error)?;
    failpoint::hit("segment_written");

    let figures = builder
        .statistics()
        .expect("a segment assembler keeps statistics");
    let segment = Segment {
        file: written.file,
        batch: batch_no,
        job_id: job.id().to_string(),
        row_count: figures.rows,
        deleted_count: figures.deleted,
        size_bytes: written.size_bytes,
        min_seq: figures.min_seq,
        max_seq: figures.max_seq,
        watermark,
        created_at: now_micros(),
        columns: builder.column_stats(),
    };
    let segment_file = segment.file.clone();
    let mut next = manifest.next();
    next.commit_id = format!("{}:{scope}", job.id());
    next.next_batch = batch_no + 1;
    next.segments.push(segment);
    if let Err(e) = next.save(&dir) {
        if e.commit_unknown() {
            cold.unsettle(table.table_id, scope);
        }
        return Err(cold_error(e));
    }
    failpoint::hit("manifest_saved");

    let published = {
        // An entry goes only if it still names the flushed version: a write that
        // replaced the row meanwhile wrote the same key for its own version. The
        // table's commit lock keeps writers out between the check and the delete
        // (taken before the cold tier's lock, as writers do).
        let _writers =
            (!index_entries.is_empty()).then(|| db.commit_locks.lock_blocking(table.table_id, scope));
        let _commit = cold.commit_lock.write();
        let mut batch = db.store.batch();
        batch.delete_hot_through(table.table_id, scope, watermark);
        stage_entry_deletes(db, &mut batch, &index_entries)?;
        let committed = if failpoint::armed("fail_hot_delete") {
            Err(KalamError::internal("KALAMDB_FAILPOINT: the hot delete failed"))
        } else {
            db.store.commit(batch).map_err(store_error)
        };
        if let Err(e) = committed {
            // The rows are still hot: the saved manifest must not list their segment,
            // or a restart would roll it forward while readers see the rows hot.
            // Withdraw the saved version (the previous one is current again) and
            // remove the segment; if that fails too, start-up recovery rolls the
            // saved manifest forward instead.
            let restored = next
                .withdraw(&dir)
                .and_then(|()| dir.storage.delete(&dir.file(&segment_file)));
            if let Err(undo) = restored {
                tracing::error!(table = %table.qualified_name(), scope, "could not undo a flush step: {undo}");
            }
            return Err(e);
        }
        cold.publish(table.table_id, scope, &manifest, next)
    };
    ColdTier::remove_older_manifests(&dir, &published);
    Ok(ScopeOutcome::Flushed {
        rows: figures.rows,
        bytes: written.size_bytes,
    })
}

/// Stages the delete of each index entry `(key, seq)` that still names `seq` (a write
/// that replaced the row meanwhile wrote the same key for its own version). Call with
/// the scope's commit lock held, so no writer comes between the check and the delete.
pub(super) fn stage_entry_deletes(
    db: &Tiers,
    batch: &mut kalamdb_store::StoreBatch<'_>,
    entries: &[(Vec<u8>, u64)],
) -> KalamResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
    let current = db.store.latest().index_multi_get(&keys).map_err(store_error)?;
    for ((key, seq), current) in entries.iter().zip(current) {
        if current == Some(*seq) {
            batch.delete_index_entry(key);
        }
    }
    Ok(())
}

/// Sleeps for `pause` (in short slices, so a cancellation is seen promptly);
/// returns whether the job was cancelled.
fn pause_unless_cancelled(job: &ActiveJob, pause: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + pause;
    loop {
        if job.cancel.is_cancelled() {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(std::time::Duration::from_millis(10)));
    }
}

pub(super) fn write_batch(
    writer: &mut Option<SegmentWriter>,
    builder: &mut RowAssembler,
    dir: &kalamdb_cold::ScopeDir,
    batch_no: u64,
    batch_rows: usize,
) -> KalamResult<()> {
    if writer.is_none() {
        *writer = Some(
            SegmentWriter::create(dir, batch_no, builder.schema().clone(), batch_rows).map_err(cold_error)?,
        );
    }
    let batch = builder.finish()?;
    writer
        .as_mut()
        .expect("created above")
        .write(&batch)
        .map_err(cold_error)
}
