//! Transactions: the statements between `BEGIN` and `COMMIT` as one atomic commit
//! over one snapshot (snapshot isolation, first committer wins).
//!
//! **Reads.** A transaction reads one moment of both tiers, taken when its first
//! statement starts: a RocksDB snapshot, and the cold tier's epoch of the same
//! moment (taken under the tiers' commit lock), pinned so that a flush or
//! compaction publishing later keeps the manifest it replaced — and so its files —
//! for the transaction ([`ColdTier::manifest_at`](crate::cold::ColdTier)). Over that
//! moment it sees its own writes ([`OwnRows`]): the snapshot's versions it replaced
//! are hidden, its rows are shown under provisional `_seq`s ([`PROVISIONAL_SEQ`] and
//! up). Every read path asks the same place: [`ScopedTable`](crate::scoped) takes
//! its snapshot (scans, point reads, index reads, `INSERT ... SELECT`, subqueries,
//! UPDATE's and DELETE's queries) and version lookups (`ON CONFLICT`) from the
//! transaction the statement runs in ([`current`]).
//!
//! **Writes.** Statements compute their writes as autocommit statements do
//! ([`PendingWrite`]s), but [`Transaction::stage`] keeps them in memory: per key the
//! newest row or tombstone and what the transaction first saw of the key (its
//! *base*: absent, or the snapshot's version `_seq`). Buffered bytes are charged to
//! a memory budget of the transaction's own, rows to `max_transaction_rows`.
//!
//! **Commit.** `write::commit_all`, given [`Transaction::take_commit`], takes the
//! commit locks of every scope the transaction wrote, in (table, scope) order (two commits never wait for each other), and
//! checks every base against the latest committed `pk` entries with the checks of
//! an autocommit statement (`write.rs`): a key changed since the snapshot fails the
//! whole transaction with `SERIALIZATION_FAILURE` — the first committer wins — and
//! UNIQUE indexes are checked against everything committed. Then one `WriteBatch`
//! holds every scope's versions under one `_seq` range, with the change-log entries;
//! live subscribers are told after it is written, each table's changes at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kalamdb_commons::{ErrorCode, KalamError, KalamResult, TableType, Value};
use kalamdb_store::StoreView;
use parking_lot::Mutex;

use crate::base::store_error;
use crate::budget::{Budget, Charge};
use crate::catalog::TableDef;
use crate::locks::key_cell;
use crate::pending::{Expect, Group, OnLive, Outcome, PendingWrite, changed_definition};
use crate::tiers::Tiers;

/// The first provisional `_seq`: a transaction's own rows read under `_seq`s from
/// here up until its commit gives them real ones (real `_seq`s stay far below).
pub(crate) const PROVISIONAL_SEQ: u64 = 1 << 62;

tokio::task_local! {
    static CURRENT: Arc<Transaction>;
}

/// The transaction the statement this task runs belongs to, if any.
pub(crate) fn current() -> Option<Arc<Transaction>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `work` (one statement) inside `transaction` (or outside any).
pub(crate) async fn within<F: std::future::Future>(
    transaction: Option<Arc<Transaction>>,
    work: F,
) -> F::Output {
    match transaction {
        Some(transaction) => CURRENT.scope(transaction, work).await,
        None => work.await,
    }
}

/// An open transaction.
pub(crate) struct Transaction {
    db: Arc<Tiers>,
    moment: Mutex<Option<Arc<Moment>>>,
    writes: Mutex<Writes>,
    /// The buffered writes' memory, charged to a budget of the transaction's own.
    charge: Charge,
}

/// The moment a transaction reads: a store view and the cold tier's epoch of the
/// same instant (unpinned when the transaction ends).
pub(crate) struct Moment {
    pub view: Arc<StoreView>,
    epoch: u64,
    db: Arc<Tiers>,
}

impl Drop for Moment {
    fn drop(&mut self) {
        self.db.cold.unpin(self.epoch);
    }
}

#[derive(Default)]
struct Writes {
    scopes: BTreeMap<(u32, String), ScopeWrites>,
    /// Keys written, over all scopes (`max_transaction_rows`).
    rows: usize,
    next_provisional: u64,
}

struct ScopeWrites {
    /// The definition the transaction wrote with.
    table: Arc<TableDef>,
    slots: HashMap<Vec<u8>, usize>,
    keys: Vec<KeyWrite>,
    /// What reads see, built when first needed after a change.
    own: Option<Arc<OwnRows>>,
}

/// The newest write of one key in the transaction.
struct KeyWrite {
    key: Value,
    /// What the transaction first saw of the key (checked at commit).
    base: Expect,
    deleted: bool,
    row: Vec<u8>,
    /// The provisional `_seq` reads show the row under.
    provisional: u64,
}

/// A transaction's writes to one scope, as its reads see them.
pub(crate) struct OwnRows {
    /// The snapshot's versions the transaction replaced or deleted (ascending).
    hidden: Vec<u64>,
    /// Its live rows: (provisional `_seq`, encoded row).
    rows: Vec<(u64, Vec<u8>)>,
    /// Key cell → index in `rows`, or `None` when the transaction deleted the key.
    by_key: HashMap<Vec<u8>, Option<usize>>,
}

impl OwnRows {
    /// Whether a read must not show the snapshot's version `seq`.
    pub fn hides(&self, seq: u64) -> bool {
        self.hidden.binary_search(&seq).is_ok()
    }

    pub fn hidden(&self) -> &[u64] {
        &self.hidden
    }

    /// The transaction's live rows.
    pub fn rows(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.rows.iter().map(|(seq, row)| (*seq, row.as_slice()))
    }

    /// The transaction's write of `key`: `None` when it wrote none, `Some(None)`
    /// when it deleted the key, else its row.
    pub fn row(&self, key: &Value) -> Option<Option<(u64, &[u8])>> {
        (self.by_key.get(&key_cell(key)))
            .map(|slot| slot.map(|i| (self.rows[i].0, self.rows[i].1.as_slice())))
    }
}

impl ScopeWrites {
    fn own_rows(&mut self) -> Arc<OwnRows> {
        if let Some(own) = &self.own {
            return own.clone();
        }
        let mut own = OwnRows {
            hidden: Vec::new(),
            rows: Vec::new(),
            by_key: HashMap::with_capacity(self.keys.len()),
        };
        for write in &self.keys {
            if let Expect::Version(seq) = write.base {
                own.hidden.push(seq);
            }
            let slot = (!write.deleted).then(|| {
                own.rows.push((write.provisional, write.row.clone()));
                own.rows.len() - 1
            });
            own.by_key.insert(key_cell(&write.key), slot);
        }
        own.hidden.sort_unstable();
        let own = Arc::new(own);
        self.own = Some(own.clone());
        own
    }
}

impl Transaction {
    pub fn new(db: Arc<Tiers>) -> KalamResult<Arc<Transaction>> {
        let budget = Budget::new(&db.query_runtime, None);
        let charge = budget.charge("the transaction's buffered writes")?;
        Ok(Arc::new(Transaction {
            db,
            moment: Mutex::new(None),
            writes: Mutex::default(),
            charge,
        }))
    }

    /// The moment the transaction reads, taken by its first statement.
    pub fn moment(&self) -> Arc<Moment> {
        let mut moment = self.moment.lock();
        if let Some(moment) = &*moment {
            return moment.clone();
        }
        let taken = {
            let _tiers = self.db.cold.commit_lock.read_recursive();
            Arc::new(Moment {
                view: Arc::new(self.db.store.view()),
                epoch: self.db.cold.pin_moment(),
                db: self.db.clone(),
            })
        };
        *moment = Some(taken.clone());
        taken
    }

    /// The transaction's writes to a scope as reads see them (`None`: it wrote none).
    pub fn own_rows(&self, table_id: u32, scope: &str) -> Option<Arc<OwnRows>> {
        let mut writes = self.writes.lock();
        (writes.scopes.get_mut(&(table_id, scope.to_string()))).map(ScopeWrites::own_rows)
    }

    /// The manifest of a scope at the transaction's moment (`None` for tables
    /// without Parquet segments).
    pub fn manifest(
        &self,
        table: &TableDef,
        scope: &str,
    ) -> KalamResult<Option<Arc<kalamdb_cold::Manifest>>> {
        match table.table_type {
            TableType::User => Ok(Some(self.db.cold.manifest_at(table, scope, self.epoch())?)),
            _ => Ok(None),
        }
    }

    /// Keeps a statement's writes in the transaction (nothing is committed). The
    /// statement's assumptions are checked against what the transaction sees —
    /// its own writes, then its snapshot — with an autocommit commit's outcomes:
    /// nothing of the statement is kept unless the outcome is `Done`.
    pub fn stage(&self, table: &Arc<TableDef>, scope: &str, writes: &[PendingWrite]) -> KalamResult<Outcome> {
        let moment = self.moment();
        let mut all = self.writes.lock();
        let key = (table.table_id, scope.to_string());
        if let Some(scope_writes) = all.scopes.get(&key)
            && !Arc::ptr_eq(&scope_writes.table, table)
        {
            return Err(changed_definition(table));
        }
        // The snapshot's entries of the keys the transaction has not written that
        // the statement expects to hold no row.
        let unseen: Vec<usize> = (0..writes.len())
            .filter(|&i| {
                matches!(writes[i].expect, Expect::Absent(_))
                    && (all.scopes.get(&key)).is_none_or(|s| !s.slots.contains_key(&key_cell(&writes[i].key)))
            })
            .collect();
        let horizon = crate::stream::horizon(table);
        let snapshot_live: HashMap<usize, bool> = if unseen.is_empty() {
            HashMap::new()
        } else {
            let entries = (moment.view)
                .pk_multi_get(table.table_id, scope, unseen.iter().map(|&i| &writes[i].key))
                .map_err(store_error)?;
            (unseen.iter().copied())
                .zip(entries.iter().map(|e| e.is_some_and(|e| e.is_live(horizon))))
                .collect()
        };
        // Decide every write first: a statement is kept whole or not at all.
        let scope_writes = all.scopes.get(&key);
        let mut written = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            let own = scope_writes.and_then(|s| s.slots.get(&key_cell(&write.key)).map(|&i| &s.keys[i]));
            let live = match own {
                Some(own) => !own.deleted,
                None => snapshot_live.get(&index).copied().unwrap_or(false),
            };
            let apply = match (write.expect, own) {
                (Expect::Absent(_), _) if !live => true,
                (Expect::Absent(OnLive::Fail), _) => return Ok(Outcome::Duplicate { index }),
                (Expect::Absent(OnLive::Skip), _) => false,
                (Expect::Absent(OnLive::Retry), _) => return Ok(Outcome::Retry),
                (Expect::Version(seq), Some(own)) if !own.deleted && own.provisional == seq => true,
                (Expect::Version(seq), None) if seq < PROVISIONAL_SEQ => true,
                (Expect::Version(_), _) => return Ok(Outcome::Retry),
            };
            written.push(apply);
        }
        let new_keys = (writes.iter().zip(&written))
            .filter(|(w, apply)| {
                **apply && scope_writes.is_none_or(|s| !s.slots.contains_key(&key_cell(&w.key)))
            })
            .count();
        let max = self.db.options.max_transaction_rows;
        if all.rows + new_keys > max {
            return Err(KalamError::new(
                ErrorCode::ResourcesExhausted,
                format!(
                    "the transaction would write more than {max} rows (max_transaction_rows); it was rolled back"
                ),
            ));
        }
        // What the buffer grows by: a new key's row, or what a rewritten key's row
        // grew by.
        let bytes: usize = (writes.iter().zip(&written))
            .filter(|(_, apply)| **apply)
            .map(|(w, _)| {
                let own = scope_writes.and_then(|s| s.slots.get(&key_cell(&w.key)).map(|&i| &s.keys[i]));
                match own {
                    Some(own) => w.row.len().saturating_sub(own.row.len()),
                    None => w.row.len() + 64,
                }
            })
            .sum();
        self.charge.grow(bytes)?;
        all.rows += new_keys;
        let first = all.next_provisional;
        all.next_provisional += writes.len() as u64;
        let scope_writes = all.scopes.entry(key).or_insert_with(|| ScopeWrites {
            table: table.clone(),
            slots: HashMap::new(),
            keys: Vec::new(),
            own: None,
        });
        scope_writes.own = None;
        for (n, (write, apply)) in writes.iter().zip(&written).enumerate() {
            if !apply {
                continue;
            }
            let provisional = PROVISIONAL_SEQ + first + n as u64;
            let cell = key_cell(&write.key);
            match scope_writes.slots.get(&cell) {
                Some(&slot) => {
                    let own = &mut scope_writes.keys[slot];
                    own.deleted = write.deleted;
                    own.row = write.row.clone();
                    own.provisional = provisional;
                }
                None => {
                    scope_writes.slots.insert(cell, scope_writes.keys.len());
                    scope_writes.keys.push(KeyWrite {
                        key: write.key.clone(),
                        base: write.expect,
                        deleted: write.deleted,
                        row: write.row.clone(),
                        provisional,
                    });
                }
            }
        }
        Ok(Outcome::Done { written })
    }

    /// The epoch of the cold tier the transaction reads.
    pub fn epoch(&self) -> u64 {
        self.moment().epoch
    }

    /// Takes the transaction's writes as what `write::commit_all` commits: per
    /// scope, the pending writes, each expecting what the transaction first saw of
    /// its key (see the module documentation). Empty when it wrote nothing.
    pub fn take_commit(&self) -> Vec<Group> {
        let writes = std::mem::take(&mut *self.writes.lock());
        // Per scope: its pending writes, and what each expected when first written.
        let mut groups = Vec::new();
        for ((_, scope), scope_writes) in writes.scopes {
            let mut pending = Vec::with_capacity(scope_writes.keys.len());
            let mut expected = Vec::with_capacity(scope_writes.keys.len());
            for write in scope_writes.keys {
                let expect = match write.base {
                    // Inserted, then deleted: nothing to write.
                    Expect::Absent(_) if write.deleted => continue,
                    Expect::Absent(_) => Expect::Absent(OnLive::Fail),
                    version => version,
                };
                expected.push(write.base);
                pending.push(PendingWrite {
                    key: write.key,
                    expect,
                    deleted: write.deleted,
                    row: write.row,
                    values: Vec::new(),
                });
            }
            if !pending.is_empty() {
                groups.push(Group {
                    table: scope_writes.table,
                    scope,
                    writes: pending,
                    expected,
                    replaced: None,
                });
            }
        }
        groups
    }
}
