//! Compaction: rewrites each scope's Parquet segments into fewer, keeping only the
//! versions readers can see (`docs/storage-format.md`, "Compaction"). Blocking: runs
//! on a blocking thread of a compaction job.
//!
//! Per scope: (1) the manifest and a RocksDB snapshot of one moment; (2) the inputs'
//! readable versions — not a tombstone, no stale marker in the snapshot — streamed in
//! `_seq` order into new segments of up to `compaction_target_mb`, `_seq`s unchanged; (3) the manifest naming the
//! new segment instead of the inputs is saved (the commit point), then, under the
//! tier's commit lock, the scope's stale markers seen in the snapshot and the UNIQUE
//! entries that still name a dropped version are deleted and readers switch; (4) the inputs are
//! deleted once no reader holds the old manifest ([`ColdTier::retire`]).

use std::collections::HashSet;
use std::sync::Arc;

use kalamdb_cold::{Segment, SegmentWriter};
use kalamdb_commons::KalamResult;
use kalamdb_store::DecodedRow;

use super::ActiveJob;
use super::flush::{FlushEnd, stage_entry_deletes, write_batch};
use crate::assemble::RowAssembler;
use crate::base::{now_micros, store_error};
use crate::catalog::TableDef;
use crate::cold::cold_error;
use crate::failpoint;
use crate::job_record::{CompactionMetrics, FlushMetrics};
use crate::segment;
use crate::tiers::Tiers;

/// What one compaction job did, over every scope.
#[derive(Default)]
pub(crate) struct Compacted {
    pub output: FlushMetrics,
    pub input: CompactionMetrics,
}

/// Compacts every scope of `table` that has at least `min_segments` segments, or
/// versions to drop. Checks for `KILL JOB` between scopes and between batches.
pub(crate) fn compact_table(
    db: &Arc<Tiers>,
    table: &Arc<TableDef>,
    min_segments: usize,
    job: &ActiveJob,
) -> KalamResult<(FlushEnd, Compacted)> {
    let _pin = db.cold.pin_while_flushing(table.table_id);
    let scopes = db.cold.scopes_on_disk(table)?;
    let batch_rows = db.options.jobs.flush_batch_rows.max(1);
    let mut done = Compacted::default();
    for (i, scope) in scopes.iter().enumerate() {
        if job.cancel.is_cancelled() {
            return Ok((FlushEnd::Cancelled, done));
        }
        match compact_scope(db, table, scope, min_segments, batch_rows, job)? {
            ScopeEnd::Untouched => {}
            ScopeEnd::Cancelled => return Ok((FlushEnd::Cancelled, done)),
            ScopeEnd::Compacted(scope_done) => {
                done.output.users_flushed += 1;
                done.output.files_written += scope_done.output.files_written;
                done.output.bytes_written += scope_done.output.bytes_written;
                done.output.rows_flushed += scope_done.input.rows_kept;
                done.input.segments_in += scope_done.input.segments_in;
                done.input.bytes_in += scope_done.input.bytes_in;
                done.input.rows_kept += scope_done.input.rows_kept;
                done.input.rows_dropped += scope_done.input.rows_dropped;
            }
        }
        job.compaction_progress(db, &done, (i + 1) as f64 / scopes.len() as f64);
    }
    Ok((FlushEnd::Completed, done))
}

enum ScopeEnd {
    Untouched,
    Cancelled,
    Compacted(Compacted),
}

fn compact_scope(
    db: &Arc<Tiers>,
    table: &TableDef,
    scope: &str,
    min_segments: usize,
    batch_rows: usize,
    job: &ActiveJob,
) -> KalamResult<ScopeEnd> {
    let cold = &db.cold;
    // The snapshot `S`, with the scope's writers held out for the moment it takes:
    // from here on the markers they write are recorded (`marker_log`).
    let (manifest, view, marker_log) = {
        let _writers = db.commit_locks.lock_blocking(table.table_id, scope);
        let _tiers = cold.commit_lock.read_recursive();
        let log = cold.open_marker_log(table.table_id, scope);
        (cold.manifest(table, scope)?, db.store.view(), log)
    };
    let inputs = &manifest.segments;
    // Every marker of the scope in `S`: it names a version of an input, dropped below,
    // or one no segment holds (left by a crash); after the rewrite none is needed.
    let stale: HashSet<u64> = (view.stale_seqs(table.table_id, scope).map_err(store_error)?)
        .into_iter()
        .collect();
    let droppable = inputs.iter().any(|s| s.deleted_count > 0)
        || (stale.iter()).any(|seq| manifest.segment_with_seq(*seq).is_some());
    // A statement (`min_segments` 2) rewrites a scope of two or more segments, or one
    // with versions to drop; a policy only the scopes with more small segments than
    // its limit. Neither rewrites segments it could not make fewer or smaller.
    let target = db.options.jobs.compaction_target_bytes.max(1);
    let small = (inputs.iter())
        .filter(|s| s.size_bytes < cold.small_below())
        .count();
    let fewer = (inputs.len() as u64) > manifest.size_bytes().div_ceil(target);
    let worth_it = match min_segments <= 2 {
        true => (inputs.len() >= 2 && fewer) || droppable,
        false => small >= min_segments,
    };
    if inputs.is_empty() || !worth_it {
        return Ok(ScopeEnd::Untouched);
    }
    let dir = cold.scope_dir(table, scope)?;
    // The table as its UNIQUE indexes see it (their entries outlive flushes).
    let mut unique = table.clone();
    unique.indexes.retain(|i| i.unique);
    let mut out = Outputs {
        table,
        dir: dir.clone(),
        batch_rows,
        target_bytes: db.options.jobs.compaction_target_bytes.max(1),
        next_batch: manifest.next_batch,
        job_id: job.id(),
        watermark: manifest.watermark(),
        builder: segment::assembler(table, batch_rows),
        writer: None,
        written: Vec::new(),
        listed: false,
    };
    let mut done = Compacted::default();
    // The UNIQUE entries of dropped row versions (tombstones have none).
    let mut dropped_entries: Vec<(Vec<u8>, u64)> = Vec::new();
    for input in inputs {
        done.input.segments_in += 1;
        done.input.bytes_in += input.size_bytes;
        for batch in kalamdb_cold::read_batches(&dir, input, batch_rows).map_err(cold_error)? {
            let batch = batch.map_err(cold_error)?;
            let seqs = segment::seq_column(input, &batch)?;
            for i in 0..batch.num_rows() {
                let seq = seqs.value(i) as u64;
                let row: DecodedRow = segment::decode_row(table, input, &batch, i)?;
                if row.deleted || stale.contains(&seq) {
                    done.input.rows_dropped += 1;
                    if !row.deleted && !unique.indexes.is_empty() {
                        for key in crate::index::entry_keys(&unique, scope, &row) {
                            dropped_entries.push((key, seq));
                        }
                    }
                    continue;
                }
                out.push(seq, row.cells)?;
                done.input.rows_kept += 1;
            }
            db.holds.wait("compact_batch", || job.cancel.is_cancelled());
            if job.cancel.is_cancelled() {
                drop(out);
                return Ok(ScopeEnd::Cancelled);
            }
        }
    }
    out.close()?;
    let mut next = manifest.next();
    next.commit_id = format!("{}:{scope}", job.id());
    next.next_batch = out.next_batch;
    done.output.files_written = out.written.len() as u64;
    done.output.bytes_written = out.written.iter().map(|s| s.size_bytes).sum();
    next.segments = out.written.clone();
    failpoint::hit("compact_segment_written");
    if let Err(e) = next.save(&dir) {
        // The version may be committed: what it lists stays (recovery settles it).
        out.listed = e.commit_unknown();
        if out.listed {
            cold.unsettle(table.table_id, scope);
        }
        return Err(cold_error(e));
    }
    out.listed = true;
    failpoint::hit("compact_manifest_saved");
    let published = {
        // Writers of the scope wait: the markers they wrote since `S` are put back
        // after the range delete of the scope's markers, and a UNIQUE entry goes only
        // if it still names the dropped version.
        let _writers = db.commit_locks.lock_blocking(table.table_id, scope);
        let _commit = cold.commit_lock.write();
        // The saved manifest is the commit: readers switch to it before anything that
        // may fail (a clean-up that fails leaves what names versions no segment holds,
        // which readers ignore).
        let published = cold.publish(table.table_id, scope, &manifest, next);
        let clean_up = || -> KalamResult<()> {
            let mut batch = db.store.batch();
            if !stale.is_empty() {
                batch.delete_stale_scope(table.table_id, scope);
                for seq in marker_log.written() {
                    batch.put_stale(table.table_id, scope, seq);
                }
            }
            stage_entry_deletes(db, &mut batch, &dropped_entries)?;
            db.store.commit(batch).map_err(store_error)
        };
        if let Err(e) = clean_up() {
            tracing::warn!(table = %table.qualified_name(), scope, "compaction clean-up failed: {}", e.message);
        }
        published
    };
    failpoint::hit("compact_committed");
    crate::cold::ColdTier::remove_older_manifests(&dir, &published);
    let files = inputs.iter().map(|s| s.file.clone()).collect();
    cold.retire(table.table_id, manifest, dir, files);
    Ok(ScopeEnd::Compacted(done))
}

/// The segments a compaction writes: the next one starts when the one being written
/// reaches `target_bytes`.
struct Outputs<'a> {
    table: &'a TableDef,
    dir: kalamdb_cold::ScopeDir,
    batch_rows: usize,
    target_bytes: u64,
    next_batch: u64,
    job_id: String,
    /// Every hot row at or below the inputs' watermarks left the hot tier.
    watermark: u64,
    builder: RowAssembler,
    writer: Option<SegmentWriter>,
    written: Vec<Segment>,
    /// Set once the saved manifest lists `written`.
    listed: bool,
}

impl Outputs<'_> {
    fn push(&mut self, seq: u64, cells: Vec<(u32, kalamdb_commons::Value)>) -> KalamResult<()> {
        self.builder.push(seq, cells);
        if self.builder.rows >= self.batch_rows {
            self.write()?;
            if self
                .writer
                .as_ref()
                .is_some_and(|w| w.bytes_written() >= self.target_bytes)
            {
                self.close()?;
            }
        }
        Ok(())
    }

    /// Writes the assembled rows into the segment being written (started if none is).
    fn write(&mut self) -> KalamResult<()> {
        let (dir, batch, rows) = (&self.dir, self.next_batch, self.batch_rows);
        write_batch(&mut self.writer, &mut self.builder, dir, batch, rows)
    }

    /// Finishes the segment being written, if any.
    fn close(&mut self) -> KalamResult<()> {
        if self.builder.rows > 0 {
            self.write()?;
        }
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let written = writer.finish().map_err(cold_error)?;
        let figures = self
            .builder
            .statistics()
            .expect("a segment assembler keeps statistics");
        self.written.push(Segment {
            file: written.file,
            batch: self.next_batch,
            job_id: self.job_id.clone(),
            row_count: figures.rows,
            deleted_count: figures.deleted,
            size_bytes: written.size_bytes,
            min_seq: figures.min_seq,
            max_seq: figures.max_seq,
            watermark: self.watermark,
            created_at: now_micros(),
            columns: self.builder.column_stats(),
        });
        self.next_batch += 1;
        self.builder = segment::assembler(self.table, self.batch_rows);
        Ok(())
    }
}

impl Drop for Outputs<'_> {
    /// A compaction that stops before its manifest lists what it wrote (cancelled, or
    /// an error) removes it.
    fn drop(&mut self) {
        if self.listed {
            return;
        }
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
        for segment in &self.written {
            if let Err(e) = self.dir.storage.delete(&self.dir.file(&segment.file)) {
                tracing::warn!("an unfinished compaction's segment was not removed: {e}");
            }
        }
    }
}
