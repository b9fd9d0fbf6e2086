//! `_seq`: the version stamp of every write (see `docs/storage-format.md`).

use std::sync::atomic::{AtomicU64, Ordering};

use kalamdb_commons::{KalamError, KalamResult};

use crate::base::now_micros;

/// Allocates `_seq` values: unique, growing with every write, milliseconds since
/// [`SEQ_EPOCH_MS`] in the high bits and a counter in the low [`SEQ_COUNTER_BITS`]
/// (`(unix_ms - SEQ_EPOCH_MS) << 20 | counter`). Every value fits a non-negative
/// `i64` (the `_seq` column is BIGINT): 43 bits of milliseconds last until the year
/// 2302, and the allocator refuses to go past `i64::MAX` rather than wrap.
///
/// A value is never below the last one persisted (`meta/last_seq`): data written
/// with an older layout (larger values) keeps counting up from its last value.
/// See `docs/storage-format.md`.
pub(crate) struct SeqGenerator {
    last: AtomicU64,
}

pub(crate) const SEQ_COUNTER_BITS: u32 = 20;
/// 2024-01-01T00:00:00Z in Unix milliseconds.
pub(crate) const SEQ_EPOCH_MS: u64 = 1_704_067_200_000;
/// The largest `_seq`: every one fits a non-negative BIGINT.
pub(crate) const MAX_SEQ: u64 = i64::MAX as u64;
pub(crate) const LAST_SEQ_KEY: &str = "meta/last_seq";

impl SeqGenerator {
    pub(crate) fn new(last_persisted: u64) -> Self {
        SeqGenerator {
            last: AtomicU64::new(last_persisted),
        }
    }

    pub fn next(&self) -> KalamResult<u64> {
        self.next_block(1)
    }

    /// Reserves `count` consecutive values and returns the first.
    pub fn next_block(&self, count: u64) -> KalamResult<u64> {
        let millis = (now_micros().max(0) as u64 / 1000).saturating_sub(SEQ_EPOCH_MS);
        let now = millis.saturating_mul(1 << SEQ_COUNTER_BITS).min(MAX_SEQ);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let first = now.max(last.saturating_add(1));
            let end = first.saturating_add(count.saturating_sub(1));
            if last >= MAX_SEQ || end > MAX_SEQ {
                return Err(KalamError::internal(
                    "_seq values are exhausted (the largest BIGINT was reached)",
                ));
            }
            match self
                .last
                .compare_exchange_weak(last, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(first),
                Err(actual) => last = actual,
            }
        }
    }

    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// A value of now that no write has and no later write will get: at least
    /// [`SeqGenerator::last`] and at least this millisecond's first value, and every
    /// later allocation is above it. A live query's `last_seq` (it names the present,
    /// also on a server idle for a day).
    pub fn reserve_now(&self) -> u64 {
        let millis = (now_micros().max(0) as u64 / 1000).saturating_sub(SEQ_EPOCH_MS);
        let now = millis.saturating_mul(1 << SEQ_COUNTER_BITS).min(MAX_SEQ);
        self.last.fetch_max(now, Ordering::Relaxed).max(now)
    }

    /// Makes every later value larger than `seq` (start-up recovery).
    pub fn raise_to(&self, seq: u64) {
        self.last.fetch_max(seq.min(MAX_SEQ), Ordering::Relaxed);
    }
}

/// A `_seq` as the BIGINT the `_seq` column holds. The allocator never exceeds
/// `i64::MAX`, so this cannot fail for a stored value; a value past it (a corrupt
/// store) reads as `i64::MAX` rather than as a negative number.
pub(crate) fn seq_as_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_grow_and_start_above_the_persisted_one() {
        let far_future = u64::MAX / 4;
        let seq = SeqGenerator::new(far_future);
        let a = seq.next().unwrap();
        let b = seq.next().unwrap();
        assert_eq!(a, far_future + 1);
        assert_eq!(b, a + 1);
        let fresh = SeqGenerator::new(0);
        let first = fresh.next().unwrap();
        assert!(first > 1 << 40, "time in the high bits");
        assert!(fresh.next().unwrap() > first);
    }

    #[test]
    fn a_reserved_seq_is_now_and_below_every_later_one() {
        let fresh = SeqGenerator::new(0);
        let reserved = fresh.reserve_now();
        assert!(reserved > 1 << 40, "this millisecond, not 0");
        assert!(fresh.next().unwrap() > reserved);
        // Ahead of the clock (values of an older layout): never below the last one.
        let ahead = SeqGenerator::new(MAX_SEQ / 2);
        assert_eq!(ahead.reserve_now(), MAX_SEQ / 2);
        assert_eq!(ahead.next().unwrap(), MAX_SEQ / 2 + 1);
    }

    #[test]
    fn seqs_stay_non_negative_bigints() {
        // Today's values leave room for centuries: 2300-01-01 still fits.
        let year_2300_ms: u64 = 10_413_792_000_000;
        let seq_2300 = (year_2300_ms - SEQ_EPOCH_MS) << SEQ_COUNTER_BITS;
        assert!(seq_2300 < MAX_SEQ);
        // A value written by the old layout (unix_ms << 22, 2038) keeps counting up.
        let old_layout = 2_145_916_800_000u64 << 22;
        assert!(old_layout < MAX_SEQ);
        let seq = SeqGenerator::new(old_layout);
        assert_eq!(seq.next().unwrap(), old_layout + 1);
        // At the end of the range the allocator refuses instead of wrapping.
        let end = SeqGenerator::new(MAX_SEQ - 1);
        assert_eq!(end.next().unwrap(), MAX_SEQ);
        assert!(end.next().is_err());
        assert_eq!(seq_as_i64(MAX_SEQ), i64::MAX);
        assert!(seq_as_i64(u64::MAX) > 0);
    }
}
