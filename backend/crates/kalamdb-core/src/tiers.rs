//! The tiers layer's state: everything a read or a commit of rows needs — the store,
//! the catalog, `_seq`s, the Parquet tier, the commit locks and what commits tell
//! their observers. The query layer's [`QueryEngine`](crate::query::QueryEngine)
//! holds one and dereferences to it; the layers above reach it the same way.

use std::sync::Arc;

use kalamdb_store::Store;

use crate::budget::QueryRuntime;
use crate::catalog::Catalog;
use crate::cold::ColdTier;
use crate::defaults::DbOptions;
use crate::failpoint::Holds;
use crate::hot_rows::HotRows;
use crate::locks::{Claims, CommitLocks};
use crate::observers::CommitObservers;
use crate::seq::SeqGenerator;

pub(crate) struct Tiers {
    pub store: Store,
    pub catalog: Catalog,
    pub seq: SeqGenerator,
    pub options: DbOptions,
    /// Memory pools and spill files of statements (writes charge them too).
    pub query_runtime: QueryRuntime,
    /// One lock per table for the commits of DML, flush watermarks and DDL
    /// (`write.rs`).
    pub commit_locks: CommitLocks,
    /// Keys claimed by statements that lost their optimistic attempts (`write.rs`).
    pub claims: Claims,
    /// Parquet segments: manifests, watermarks, the tier commit lock.
    pub cold: ColdTier,
    /// Hot row versions per table (`/metrics`).
    pub hot_rows: HotRows,
    /// Identity columns' sequences.
    pub identities: crate::identity::Identities,
    /// Pause points for tests (see [`Holds`]).
    pub holds: Arc<Holds>,
    /// What commits tell the live hub and the job manager (`observers.rs`).
    pub commit_observers: CommitObservers,
}
