//! The server's one maintenance ticker. Every `policy_check_interval` it runs what the
//! parts of the engine keep up over time, in this order: flush policies and the
//! retention of finished jobs (`jobs`), then — RocksDB work, on the blocking pool — the
//! change log's sweep (`live`) and the removal of expired STREAM rows (`stream`; it
//! takes tables' commit locks). The parts do not call each other for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobManager;
use crate::live::LiveHub;

/// The running ticker; [`Ticker::stop`] ends it, and so does the database going away.
pub(crate) struct Ticker {
    stop: CancellationToken,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Ticker {
    pub fn start(jobs: &Arc<JobManager>, live: &Arc<LiveHub>, every: Duration) -> Ticker {
        let (weak, stop) = (
            (Arc::downgrade(jobs), Arc::downgrade(live)),
            CancellationToken::new(),
        );
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = interval.tick() => {}
                }
                let (Some(jobs), Some(live)) = (weak.0.upgrade(), weak.1.upgrade()) else {
                    return;
                };
                tick(jobs, live).await;
            }
        });
        Ticker {
            stop,
            task: parking_lot::Mutex::new(Some(task)),
        }
    }

    /// Stops the ticker and waits (up to `wait`) for a tick in progress to end.
    pub async fn stop(&self, wait: Duration) {
        self.stop.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(wait, task).await;
        }
    }
}

async fn tick(jobs: Arc<JobManager>, live: Arc<LiveHub>) {
    jobs.maintain();
    let sweep_history = live.sweep_due();
    let db = jobs.tiers().clone();
    let swept = tokio::task::spawn_blocking(move || {
        if sweep_history && let Err(e) = crate::live::sweep_history(&db) {
            tracing::warn!("change history sweep failed: {}", e.message);
        }
        crate::stream::sweep_expired(&db)
    })
    .await;
    if let Ok(Err(e)) = swept {
        tracing::warn!("STREAM table sweep failed: {}", e.message);
    }
}
