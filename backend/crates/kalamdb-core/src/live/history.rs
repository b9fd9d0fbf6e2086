//! The change log (`changes` column family, `docs/storage-format.md`): every
//! committed change of every table, written in the commit's own batch (so a change
//! is logged exactly when it is committed), kept `live_history_seconds`, read by
//! `from_seq` resumes.
//!
//! A key is `table · minute bucket · scope · _seq`: a resume of one scope seeks
//! once per minute of history it covers, and forgetting old changes is one range
//! delete per table whatever the number of changes or scopes.
//!
//! A value is `flags u8` (1: the change replaced a live row; 2: it wrote one, not a
//! tombstone), then for flag 1 `old _seq u64 BE · old row length u32 BE · old row`,
//! then for flag 2 the new row (row codec).

use std::sync::Arc;

use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use kalamdb_store::{StoreBatch, StoreView};

use super::feed::{changes_of, decode, evaluate_costly};
use super::{LiveHub, Subscription};
use crate::base::store_error;
use crate::catalog::TableDef;
use crate::observers::{Change, ChangeSet};
use crate::query::QueryEngine;
use crate::seq::{SEQ_COUNTER_BITS, SEQ_EPOCH_MS};

/// Width of a time bucket of the change log.
pub(crate) const HISTORY_BUCKET_MS: u64 = 60_000;

/// `system` key: the first `_seq` the log holds every change after (the log began,
/// or was turned on again, at that point).
const LOG_SINCE_KEY: &str = "live/log_since";

/// Changes replayed per evaluation (one decoded batch).
const REPLAY_CHUNK: usize = 1024;

/// Milliseconds since the `_seq` epoch that a `_seq` carries.
fn seq_millis(seq: u64) -> u64 {
    seq >> SEQ_COUNTER_BITS
}

/// The bucket of a change with this `_seq`.
pub(crate) fn bucket_of(seq: u64) -> u32 {
    u32::try_from(seq_millis(seq) / HISTORY_BUCKET_MS).unwrap_or(u32::MAX)
}

/// The smallest `_seq` of this wall-clock moment (Unix milliseconds).
fn seq_at(unix_ms: u64) -> u64 {
    unix_ms.saturating_sub(SEQ_EPOCH_MS) << SEQ_COUNTER_BITS
}

fn now_ms() -> u64 {
    crate::base::now_micros().max(0) as u64 / 1000
}

/// `system` key: present once the sweep records per table what it removed
/// (`live/pruned/<table_id>`).
const PRUNING_RECORDED_KEY: &str = "live/pruning_recorded";

/// At start-up: records where the log begins when it was off (or never on) and is
/// on now; forgets that point when it is off (a later resume across the gap must
/// be refused). A data directory whose sweeps did not record what they removed
/// gets, for each of its `tables`, the point below which changes may be gone: the
/// start of its first remaining time bucket, or `last_seq` when none remains.
pub(crate) fn open_log(
    db: &kalamdb_store::Store,
    enabled: bool,
    last_seq: u64,
    tables: &[u32],
) -> KalamResult<()> {
    let latest = db.latest();
    let present = latest.system_get(LOG_SINCE_KEY).map_err(store_error)?.is_some();
    let mut batch = db.batch();
    match (enabled, present) {
        (true, false) => batch.put_system(LOG_SINCE_KEY, &last_seq.to_be_bytes()),
        (false, true) => batch.delete_system(LOG_SINCE_KEY),
        _ => {}
    }
    if enabled
        && latest
            .system_get(PRUNING_RECORDED_KEY)
            .map_err(store_error)?
            .is_none()
    {
        for &table_id in tables {
            let forgotten_through = match latest.first_change_bucket(table_id).map_err(store_error)? {
                Some(bucket) => bucket_start(bucket).saturating_sub(1),
                None => last_seq,
            };
            batch.raise_system_counter(&pruned_key(table_id), forgotten_through);
        }
        batch.put_system(PRUNING_RECORDED_KEY, &[1]);
    }
    if batch.is_empty() {
        return Ok(());
    }
    db.commit(batch).map_err(store_error)
}

/// The smallest `_seq` of a time bucket.
fn bucket_start(bucket: u32) -> u64 {
    seq_at(SEQ_EPOCH_MS + u64::from(bucket) * HISTORY_BUCKET_MS)
}

/// The largest `_seq` a sweep now may remove (every change of the buckets before
/// the one the history begins in), and that bucket.
fn sweep_point(history: std::time::Duration) -> (u32, u64) {
    let horizon = seq_at(now_ms().saturating_sub(history.as_millis() as u64));
    let bucket = bucket_of(horizon);
    (bucket, bucket_start(bucket).saturating_sub(1))
}

/// Stages one change in the commit's batch.
pub(crate) fn log_change(batch: &mut StoreBatch<'_>, table_id: u32, scope: &str, change: &Change) {
    batch.put_change(
        table_id,
        bucket_of(change.seq),
        scope,
        change.seq,
        &encode_change(change),
    );
}

/// A change as its log value (see the module documentation).
fn encode_change(change: &Change) -> Vec<u8> {
    let mut value = Vec::with_capacity(
        1 + change.old.as_ref().map_or(0, |(_, row)| 12 + row.len())
            + change.new.as_ref().map_or(0, Vec::len),
    );
    value.push(u8::from(change.old.is_some()) | (u8::from(change.new.is_some()) << 1));
    if let Some((seq, row)) = &change.old {
        value.extend_from_slice(&seq.to_be_bytes());
        value.extend_from_slice(&(row.len() as u32).to_be_bytes());
        value.extend_from_slice(row);
    }
    if let Some(row) = &change.new {
        value.extend_from_slice(row);
    }
    value
}

fn parse_change(seq: u64, value: &[u8]) -> Option<Change> {
    let (&flags, mut rest) = value.split_first()?;
    let old = if flags & 1 != 0 {
        let old_seq = u64::from_be_bytes(rest.get(0..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
        let row = rest.get(12..12 + len)?.to_vec();
        rest = &rest[12 + len..];
        Some((old_seq, row))
    } else {
        None
    };
    let new = (flags & 2 != 0).then(|| rest.to_vec());
    Some(Change { seq, old, new })
}

/// `system` key per table: the largest `_seq` a sweep may have forgotten (every
/// change of the table after it is still in the log).
fn pruned_key(table_id: u32) -> String {
    kalamdb_store::keys::changes_pruned_key(table_id)
}

fn read_seq_value(view: &StoreView, key: &str) -> KalamResult<Option<u64>> {
    match view.system_get(key).map_err(store_error)? {
        Some(bytes) => Ok(Some(u64::from_be_bytes(
            bytes
                .try_into()
                .map_err(|_| KalamError::internal(format!("corrupt {key}")))?,
        ))),
        None => Ok(None),
    }
}

/// Whether the log holds every change of `table` after `from_seq`, as of `view`
/// (taken under the table's commit lock, before the subscription registers; the
/// replay reads the same view, so a sweep meanwhile cannot take a change away).
/// The answer depends on what the log has forgotten of this table, not on the
/// clock: a `last_seq` stays resumable on a table nobody writes to.
pub(crate) fn check_available(
    db: &QueryEngine,
    view: &StoreView,
    table: &TableDef,
    from_seq: u64,
) -> KalamResult<()> {
    let unavailable = |why: String| {
        Err(KalamError::new(
            ErrorCode::ResumeUnavailable,
            format!(
                "cannot resume '{}' from seq {from_seq}: {why}; subscribe without from_seq",
                table.qualified_name()
            ),
        ))
    };
    let history = db.options.live.history;
    if history.is_zero() {
        return unavailable("the server keeps no change history (live_history_seconds = 0)".into());
    }
    let since = read_seq_value(view, LOG_SINCE_KEY)?.unwrap_or(u64::MAX);
    if from_seq < since {
        return unavailable("the change history starts after it".into());
    }
    if read_seq_value(view, &pruned_key(table.table_id))?.is_some_and(|pruned| from_seq < pruned) {
        return unavailable(format!(
            "changes are kept {} seconds (live_history_seconds) and later ones were forgotten",
            history.as_secs()
        ));
    }
    Ok(())
}

/// Replays the logged changes of `sub`'s scope with `_seq` in `(from_seq,
/// start_seq]` as `change` messages (its filter applied to old and new rows, as
/// live changes are), read from `view` (the registration's); later ones reach it
/// through its feed. Rows of a STREAM table that have expired are not replayed,
/// nor are their deletes. `false` when the subscription ended meanwhile.
pub(crate) async fn replay(
    hub: &LiveHub,
    sub: &Arc<Subscription>,
    view: Arc<StoreView>,
    from_seq: u64,
) -> KalamResult<bool> {
    let through = sub.start_seq;
    let mut after = from_seq;
    loop {
        // A chunk of changes is read on the blocking pool, then evaluated and sent.
        let (view, table, scope) = (view.clone(), sub.table.clone(), sub.scope.clone());
        let mut chunk =
            tokio::task::spawn_blocking(move || read_chunk(&view, &table, &scope, after, through))
                .await
                .map_err(|e| KalamError::internal(format!("replay task failed: {e}")))??;
        let Some(last) = chunk.last().map(|c| c.seq) else {
            return Ok(true);
        };
        let horizon = crate::stream::horizon(&sub.table);
        if horizon > 0 {
            chunk.retain(|c| c.seq >= horizon && c.old.as_ref().is_none_or(|(old, _)| *old >= horizon));
        }
        let set = ChangeSet {
            scope: sub.scope.clone(),
            changes: chunk,
        };
        let decoded = decode(&sub.table, &set)?;
        // A costly filter is evaluated as its live changes are: off the async
        // workers, in its user's turn, within the filter budget.
        let (messages, count) = if sub.plan.costly {
            match evaluate_costly(hub, sub, Arc::new(set), Arc::new(decoded), after).await {
                Some(outcome) => outcome?,
                None => return Ok(false),
            }
        } else {
            let (messages, count, _) = changes_of(sub, &set, &decoded, after, None)?;
            (messages, count)
        };
        for message in messages {
            if sub.is_ended() || !sub.outbox.push_waiting(message).await {
                return Ok(false);
            }
        }
        sub.changes_sent
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        after = last;
        if sub.is_ended() {
            return Ok(false);
        }
    }
}

/// Up to [`REPLAY_CHUNK`] changes of one scope with `_seq` in `(after, through]`.
fn read_chunk(
    view: &StoreView,
    table: &TableDef,
    scope: &str,
    after: u64,
    through: u64,
) -> KalamResult<Vec<Change>> {
    let mut out = Vec::new();
    let mut corrupt = false;
    let (first, last) = (bucket_of(after.saturating_add(1)), bucket_of(through));
    for bucket in first..=last {
        view.changes_visit(table.table_id, bucket, scope, after, through, |seq, value| {
            match parse_change(seq, value) {
                Some(change) => out.push(change),
                None => corrupt = true,
            }
            Ok(!corrupt && out.len() < REPLAY_CHUNK)
        })
        .map_err(store_error)?;
        if corrupt {
            return Err(KalamError::internal(format!(
                "corrupt change log entry of '{}'",
                table.qualified_name()
            )));
        }
        if out.len() >= REPLAY_CHUNK {
            break;
        }
    }
    Ok(out)
}

/// Forgets the changes older than the history: one range delete per table that
/// has some (a seek each to find out), and records per table the largest `_seq`
/// that may be gone (see [`check_available`]).
pub(crate) fn sweep_history(db: &crate::tiers::Tiers) -> KalamResult<()> {
    // Every change of the buckets before `bucket` is below its first `_seq`.
    let (bucket, forgotten_through) = sweep_point(db.options.live.history);
    let mut batch = db.store.batch();
    for table in db.catalog.tables() {
        if db
            .store
            .latest()
            .has_changes_before(table.table_id, bucket)
            .map_err(store_error)?
        {
            batch.delete_changes_before(table.table_id, bucket);
            batch.raise_system_counter(&pruned_key(table.table_id), forgotten_through);
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    db.store.commit(batch).map_err(store_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(change: Change) {
        let parsed = parse_change(change.seq, &encode_change(&change)).expect("parses");
        assert_eq!(parsed.seq, change.seq);
        assert_eq!(parsed.old, change.old);
        assert_eq!(parsed.new, change.new);
    }

    fn pruned(store: &kalamdb_store::Store, table_id: u32) -> Option<u64> {
        read_seq_value(&store.view(), &pruned_key(table_id)).unwrap()
    }

    #[test]
    fn a_directory_whose_sweeps_recorded_nothing_refuses_what_they_may_have_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = kalamdb_store::Store::open(&dir.path().join("rocksdb"), &Default::default()).unwrap();
        // Table 1 keeps changes from a bucket three minutes ago on (earlier ones were
        // swept by a server that did not record it); table 2 has none left.
        let first = bucket_of(seq_at(now_ms() - 3 * HISTORY_BUCKET_MS));
        let mut batch = store.batch();
        batch.put_change(1, first, "u1", bucket_start(first) + 5, &[0]);
        batch.put_change(1, first + 2, "u2", bucket_start(first + 2) + 1, &[0]);
        store.commit(batch).unwrap();
        let last_seq = seq_at(now_ms());
        open_log(&store, true, last_seq, &[1, 2]).unwrap();
        assert_eq!(pruned(&store, 1), Some(bucket_start(first) - 1));
        assert_eq!(pruned(&store, 2), Some(last_seq));
        // Once: a later start (with a later last_seq) leaves them.
        open_log(&store, true, last_seq + 1000, &[1, 2]).unwrap();
        assert_eq!(pruned(&store, 2), Some(last_seq));
    }

    #[test]
    fn changes_survive_their_encoding() {
        roundtrip(Change {
            seq: 7,
            old: None,
            new: Some(vec![1, 2, 3]),
        });
        roundtrip(Change {
            seq: 8,
            old: Some((7, vec![1, 2, 3])),
            new: Some(vec![4]),
        });
        roundtrip(Change {
            seq: 9,
            old: Some((8, vec![4])),
            new: None,
        });
        // An update to an empty row, and a truncated value, are told apart.
        roundtrip(Change {
            seq: 10,
            old: Some((9, vec![])),
            new: Some(vec![]),
        });
        assert!(parse_change(1, &[1, 0, 0]).is_none());
        assert!(parse_change(1, &[]).is_none());
    }

    #[test]
    fn buckets_are_minutes_of_the_seq_clock() {
        let at = |unix_ms: u64| seq_at(unix_ms);
        let t = SEQ_EPOCH_MS + 3_600_000;
        assert_eq!(bucket_of(at(t)), 60);
        assert_eq!(bucket_of(at(t + 59_999)), 60);
        assert_eq!(bucket_of(at(t + 60_000)), 61);
        // Later seqs never fall in earlier buckets.
        assert!(bucket_of(at(t) + 12345) >= bucket_of(at(t)));
    }
}
