//! Hot row versions per table, kept as writes and flushes happen, so `/metrics`
//! reads them in O(tables) instead of counting RocksDB keys on every scrape.
//!
//! Counted at start-up (one key-only pass over the hot tier, exact) and again after
//! each flush job of the table; between them, each committed statement adds the
//! versions it wrote and subtracts the hot versions it replaced. The figure is a
//! gauge, not an invariant, and can be off in two ways until the table's next count:
//! a replaced version at or below the table's flush watermark may already be in
//! Parquet, so it is not subtracted (the figure runs high by the rows replaced while
//! a flush of them runs, or after a flush of them failed); and statements that commit
//! while a count is taken may be counted twice or not at all.

use std::collections::HashMap;

use parking_lot::Mutex;

#[derive(Default)]
pub(crate) struct HotRows {
    counts: Mutex<HashMap<u32, i64>>,
}

impl HotRows {
    pub fn set(&self, table_id: u32, count: u64) {
        self.counts
            .lock()
            .insert(table_id, i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn add(&self, table_id: u32, delta: i64) {
        let mut counts = self.counts.lock();
        let count = counts.entry(table_id).or_insert(0);
        *count = count.saturating_add(delta).max(0);
    }

    pub fn forget(&self, table_id: u32) {
        self.counts.lock().remove(&table_id);
    }

    /// The table's hot row versions (0 when unknown).
    pub fn get(&self, table_id: u32) -> u64 {
        self.counts
            .lock()
            .get(&table_id)
            .map_or(0, |c| (*c).max(0) as u64)
    }

    pub fn total(&self) -> u64 {
        self.counts.lock().values().map(|c| (*c).max(0) as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_with_deltas_and_never_go_negative() {
        let rows = HotRows::default();
        rows.set(1, 10);
        rows.add(1, 5);
        rows.add(2, 3);
        rows.add(2, -7);
        assert_eq!(rows.total(), 15, "table 2 stays at 0");
        assert_eq!((rows.get(1), rows.get(2), rows.get(3)), (15, 0, 0));
        rows.forget(1);
        assert_eq!(rows.total(), 0);
    }
}
