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
