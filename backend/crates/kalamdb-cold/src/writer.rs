//! Writing one Parquet segment: stream batches into `batch-<n>.parquet.tmp`, then
//! fsync and rename it into place.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::ColdError;
use crate::fsutil::{sync_dir, temp_path};
use crate::layout::segment_file_name;

/// A segment being written. Memory is bounded by one row group: rows are encoded
/// and written as batches arrive.
pub struct SegmentWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    writer: Option<ArrowWriter<File>>,
}

/// A segment that is complete, durable and in its final place.
#[derive(Debug, Clone)]
pub struct WrittenSegment {
    pub file: String,
    pub size_bytes: u64,
}

impl SegmentWriter {
    /// Starts `dir/batch-<batch>.parquet` (as a `.tmp` file), creating `dir`.
    pub fn create(
        dir: &Path,
        batch: u64,
        schema: SchemaRef,
        row_group_rows: usize,
    ) -> Result<Self, ColdError> {
        fs::create_dir_all(dir).map_err(|e| ColdError::io("create directory", dir, e))?;
        let final_path = dir.join(segment_file_name(batch));
        let tmp_path = temp_path(&final_path);
        let file = File::create(&tmp_path).map_err(|e| ColdError::io("create", &tmp_path, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(1).expect("level 1 is valid"),
            ))
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .build();
        let writer =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| ColdError::parquet(&tmp_path, e))?;
        Ok(SegmentWriter {
            final_path,
            tmp_path,
            writer: Some(writer),
        })
    }

    /// Bytes of the file so far, with the row group being encoded.
    pub fn bytes_written(&self) -> u64 {
        let writer = self.writer.as_ref().expect("writer open until finish or abort");
        (writer.bytes_written() + writer.in_progress_size()) as u64
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ColdError> {
        let writer = self.writer.as_mut().expect("writer open until finish or abort");
        writer
            .write(batch)
            .map_err(|e| ColdError::parquet(&self.tmp_path, e))
    }

    /// Writes the footer, fsyncs the file, renames it into place and fsyncs the
    /// directory. After this returns the file is durable under its final name
    /// (but not yet in the manifest, so readers do not see it).
    pub fn finish(mut self) -> Result<WrittenSegment, ColdError> {
        let writer = self.writer.take().expect("writer open until finish or abort");
        let result = (|| {
            writer
                .close()
                .map_err(|e| ColdError::parquet(&self.tmp_path, e))?;
            File::open(&self.tmp_path)
                .and_then(|f| f.sync_all())
                .map_err(|e| ColdError::io("fsync", &self.tmp_path, e))?;
            let size_bytes = fs::metadata(&self.tmp_path)
                .map_err(|e| ColdError::io("stat", &self.tmp_path, e))?
                .len();
            fs::rename(&self.tmp_path, &self.final_path)
                .map_err(|e| ColdError::io("rename", &self.tmp_path, e))?;
            sync_dir(self.final_path.parent().expect("segment has a directory"))?;
            Ok(WrittenSegment {
                file: self
                    .final_path
                    .file_name()
                    .expect("segment has a name")
                    .to_string_lossy()
                    .into_owned(),
                size_bytes,
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp_path);
        }
        result
    }

    /// Abandons the segment: the `.tmp` file is removed.
    pub fn abort(mut self) {
        self.writer.take();
        let _ = fs::remove_file(&self.tmp_path);
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}
