//! The persisted record of a job (`system` CF, key `job/<job_id>`), shown as a row
//! of `system.jobs`.

use serde::{Deserialize, Serialize};

pub(crate) const JOB_PREFIX: &str = "job/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobTrigger {
    Manual,
    Policy,
}

impl JobTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            JobTrigger::Manual => "manual",
            JobTrigger::Policy => "policy",
        }
    }
}

/// What a job does: move hot rows into Parquet, or rewrite Parquet segments into fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Flush,
    Compact,
}

impl JobKind {
    /// The `job_type` of its records.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Flush => "flush",
            JobKind::Compact => "compact",
        }
    }

    pub fn of(record: &JobRecord) -> JobKind {
        match record.job_type.as_str() {
            "compact" => JobKind::Compact,
            _ => JobKind::Flush,
        }
    }
}

/// What a compaction did so far (or in total); its output is counted in
/// [`FlushMetrics::files_written`] and [`FlushMetrics::bytes_written`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactionMetrics {
    pub segments_in: u64,
    pub bytes_in: u64,
    pub rows_kept: u64,
    pub rows_dropped: u64,
}

/// What a flush did so far (or in total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FlushMetrics {
    pub rows_flushed: u64,
    pub users_flushed: u64,
    pub files_written: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub job_type: String,
    pub status: JobStatus,
    pub namespace: String,
    pub table_name: String,
    pub table_id: u32,
    pub trigger: JobTrigger,
    /// Microseconds since the Unix epoch.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    #[serde(flatten)]
    pub metrics: FlushMetrics,
    /// A compaction's own figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionMetrics>,
    /// Scopes done / scopes to do (0.0–1.0).
    pub progress: f64,
    /// The `_seq` watermark the flush moved rows up to.
    pub watermark: Option<u64>,
    pub error_message: Option<String>,
}

impl JobRecord {
    pub fn key(&self) -> String {
        format!("{JOB_PREFIX}{}", self.job_id)
    }

    pub fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.finished_at) {
            (Some(start), Some(end)) => Some((end - start) / 1000),
            _ => None,
        }
    }

    /// The `result` column: every metric of a finished job as one JSON object.
    pub fn result_json(&self) -> Option<String> {
        if !self.status.is_finished() {
            return None;
        }
        if let Some(c) = &self.compaction {
            return Some(
                serde_json::json!({
                    "status": self.status.as_str(),
                    "users_compacted": self.metrics.users_flushed,
                    "segments_in": c.segments_in,
                    "segments_out": self.metrics.files_written,
                    "bytes_in": c.bytes_in,
                    "bytes_out": self.metrics.bytes_written,
                    "rows_kept": c.rows_kept,
                    "rows_dropped": c.rows_dropped,
                    "duration_ms": self.duration_ms(),
                    "error": self.error_message,
                })
                .to_string(),
            );
        }
        Some(
            serde_json::json!({
                "status": self.status.as_str(),
                "rows_flushed": self.metrics.rows_flushed,
                "users_flushed": self.metrics.users_flushed,
                "files_written": self.metrics.files_written,
                "bytes_written": self.metrics.bytes_written,
                "duration_ms": self.duration_ms(),
                "watermark": self.watermark,
                "error": self.error_message,
            })
            .to_string(),
        )
    }
}
