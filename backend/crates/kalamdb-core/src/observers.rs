//! What a commit tells the layers above it. `write.rs` commits rows and knows
//! nothing of live queries or jobs: the observers registered at open do — the live
//! hub (the change log, written in the commit's own batch, and the feeds of live
//! subscriptions, published after the write under the commit lock so that they see
//! a table's commits in `_seq` order and only committed ones) and the job manager
//! (rows written, for flush policies).

use std::sync::Arc;

use kalamdb_store::StoreBatch;

use crate::catalog::TableDef;

/// One key's change in one commit.
pub(crate) struct Change {
    pub seq: u64,
    /// The live version it replaced (`_seq`, row in the row codec): none for an
    /// insert.
    pub old: Option<(u64, Vec<u8>)>,
    /// The new row in the row codec; `None` for a delete.
    pub new: Option<Vec<u8>>,
}

/// The changes of one commit to one scope of one table, in `_seq` order.
pub(crate) struct ChangeSet {
    pub scope: String,
    pub changes: Vec<Change>,
}

/// What runs once a commit's batch is written, still under its commit lock.
pub(crate) type AfterWrite = Box<dyn FnOnce() + Send>;

/// An observer of commits, registered at open.
pub(crate) trait CommitObserver: Send + Sync {
    /// Whether commits to `scope` of table `table_id` must read the row versions
    /// they replace and hand over their changes. Asked before the commit lock and
    /// again under it (a subscription may register in between).
    fn wants_changes(&self, _table_id: u32, _scope: &str) -> bool {
        false
    }

    /// Under the commit lock, before the batch is written, when some observer
    /// wants the changes: adds what this observer keeps of them to `batch`, and
    /// returns what to run once the batch is written.
    fn stage(
        &self,
        _batch: &mut StoreBatch<'_>,
        _table_id: u32,
        _changes: &Arc<ChangeSet>,
    ) -> Option<AfterWrite> {
        None
    }

    /// After the commit, outside the lock: `versions` row versions were written.
    fn written(&self, _table: &TableDef, _versions: u64) {}
}

/// The registered observers.
pub(crate) struct CommitObservers(Vec<Box<dyn CommitObserver>>);

impl CommitObservers {
    pub fn new(observers: Vec<Box<dyn CommitObserver>>) -> Self {
        CommitObservers(observers)
    }

    pub fn wants_changes(&self, table_id: u32, scope: &str) -> bool {
        self.0.iter().any(|o| o.wants_changes(table_id, scope))
    }

    pub fn stage(
        &self,
        batch: &mut StoreBatch<'_>,
        table_id: u32,
        changes: &Arc<ChangeSet>,
    ) -> Vec<AfterWrite> {
        (self.0.iter())
            .filter_map(|o| o.stage(batch, table_id, changes))
            .collect()
    }

    pub fn written(&self, table: &TableDef, versions: u64) {
        for observer in &self.0 {
            observer.written(table, versions);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Wants the changes of scope "a" only; counts what it is told.
    #[derive(Default, Clone)]
    struct Counting {
        staged: Arc<AtomicU64>,
        published: Arc<AtomicU64>,
        written: Arc<AtomicU64>,
    }

    impl CommitObserver for Counting {
        fn wants_changes(&self, _table_id: u32, scope: &str) -> bool {
            scope == "a"
        }

        fn stage(
            &self,
            _batch: &mut StoreBatch<'_>,
            _table_id: u32,
            changes: &Arc<ChangeSet>,
        ) -> Option<AfterWrite> {
            self.staged
                .fetch_add(changes.changes.len() as u64, Ordering::SeqCst);
            let published = self.published.clone();
            Some(Box::new(move || {
                published.fetch_add(1, Ordering::SeqCst);
            }))
        }

        fn written(&self, _table: &TableDef, versions: u64) {
            self.written.fetch_add(versions, Ordering::SeqCst);
        }
    }

    /// An observer that wants nothing.
    struct Quiet;
    impl CommitObserver for Quiet {}

    #[test]
    fn every_observer_is_asked_and_told() {
        let dir = tempfile::tempdir().unwrap();
        let store = kalamdb_store::Store::open(dir.path(), &Default::default()).unwrap();
        let counting = Counting::default();
        let observers = CommitObservers::new(vec![Box::new(Quiet), Box::new(counting.clone())]);
        assert!(observers.wants_changes(1, "a"));
        assert!(!observers.wants_changes(1, "b"));
        let changes = Arc::new(ChangeSet {
            scope: "a".into(),
            changes: vec![Change {
                seq: 1,
                old: None,
                new: Some(vec![1]),
            }],
        });
        let mut batch = store.batch();
        let after = observers.stage(&mut batch, 1, &changes);
        assert_eq!((after.len(), counting.staged.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(
            counting.published.load(Ordering::SeqCst),
            0,
            "nothing runs before the write"
        );
        after.into_iter().for_each(|run| run());
        assert_eq!(counting.published.load(Ordering::SeqCst), 1);
        let table: TableDef = serde_json::from_value(serde_json::json!({
            "table_id": 1, "namespace": "app", "name": "t", "table_type": "shared", "columns": [],
            "primary_key": null, "next_column_id": 1, "flush_policy": null, "ttl_seconds": null,
            "access_level": null, "created_at": 0, "schema_version": 1
        }))
        .unwrap();
        observers.written(&table, 3);
        assert_eq!(counting.written.load(Ordering::SeqCst), 3);
    }
}
