//! Writing one Parquet segment: batches are encoded as they arrive and streamed to
//! the storage as a multipart upload of `batch-<n>.parquet`, which becomes an object
//! only when the upload completes (a local storage writes a staging file and renames
//! it; S3 assembles the parts). No reader and no crash ever sees half a segment.

use std::io::Write;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use object_store::path::Path as ObjPath;
use object_store::{MultipartUpload, PutPayload};

use crate::ColdError;
use crate::layout::{ScopeDir, segment_file_name};
use crate::storage::Storage;

/// Bytes sent per part of an upload (S3 wants at least 5 MiB but for the last).
const PART_BYTES: usize = 8 << 20;

/// A segment being written. Memory is bounded by one row group and one part: rows
/// are encoded and sent as batches arrive.
pub struct SegmentWriter {
    file: String,
    describe: String,
    writer: Option<ArrowWriter<UploadSink>>,
}

/// A segment that is complete and durable under its final name.
#[derive(Debug, Clone)]
pub struct WrittenSegment {
    pub file: String,
    pub size_bytes: u64,
}

impl SegmentWriter {
    /// Starts `batch-<batch>.parquet` in `dir`.
    pub fn create(
        dir: &ScopeDir,
        batch: u64,
        schema: SchemaRef,
        row_group_rows: usize,
    ) -> Result<Self, ColdError> {
        let file = segment_file_name(batch);
        let path = dir.file(&file);
        let describe = dir.describe(&file);
        let upload = dir.storage.upload(&path)?;
        let sink = UploadSink {
            storage: dir.storage.clone(),
            path,
            upload: Some(upload),
            buffer: Vec::new(),
            sent: 0,
        };
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(1).expect("level 1 is valid"),
            ))
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .build();
        let writer = ArrowWriter::try_new(sink, schema, Some(props)).map_err(|e| ColdError::Parquet {
            path: describe.clone(),
            source: e,
        })?;
        Ok(SegmentWriter {
            file,
            describe,
            writer: Some(writer),
        })
    }

    /// A Parquet error, or the storage's failure it carries (a part that could not be
    /// sent reaches the writer as an I/O error holding the [`ColdError`]).
    fn parquet_error(&self, e: datafusion::parquet::errors::ParquetError) -> ColdError {
        use datafusion::parquet::errors::ParquetError;
        let source = match e {
            ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
                Ok(io) => match io.downcast::<ColdError>() {
                    Ok(cold) => return cold,
                    Err(io) => ParquetError::External(Box::new(io)),
                },
                Err(inner) => ParquetError::External(inner),
            },
            e => e,
        };
        ColdError::Parquet {
            path: self.describe.clone(),
            source,
        }
    }

    /// Bytes of the file so far, with the row group being encoded.
    pub fn bytes_written(&self) -> u64 {
        let writer = self.writer.as_ref().expect("writer open until finish or abort");
        (writer.bytes_written() + writer.in_progress_size()) as u64
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ColdError> {
        let writer = self.writer.as_mut().expect("writer open until finish or abort");
        let written = writer.write(batch);
        written.map_err(|e| self.parquet_error(e))
    }

    /// Writes the footer and completes the upload: the object is durable under its
    /// final name when this returns (but not yet in a manifest, so readers do not
    /// see it).
    pub fn finish(mut self) -> Result<WrittenSegment, ColdError> {
        let writer = self.writer.take().expect("writer open until finish or abort");
        let mut sink = writer.into_inner().map_err(|e| self.parquet_error(e))?;
        let size_bytes = sink.complete()?;
        Ok(WrittenSegment {
            file: std::mem::take(&mut self.file),
            size_bytes,
        })
    }

    /// Abandons the segment: the upload is aborted, nothing is left.
    /// (Dropping a writer that was not finished does the same.)
    pub fn abort(mut self) {
        // The sink aborts its upload when dropped.
        self.writer.take();
    }
}

/// The `Write` end of a multipart upload: bytes are buffered and sent a part at a
/// time.
struct UploadSink {
    storage: std::sync::Arc<Storage>,
    path: ObjPath,
    upload: Option<Box<dyn MultipartUpload>>,
    buffer: Vec<u8>,
    sent: u64,
}

impl UploadSink {
    fn send_part(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let part = PutPayload::from(std::mem::take(&mut self.buffer));
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| std::io::Error::other("upload ended"))?;
        let len = part.content_length() as u64;
        self.storage
            .block(upload.put_part(part))
            .map_err(|e| std::io::Error::other(ColdError::store(self.storage.name(), "write", e)))?;
        self.sent += len;
        Ok(())
    }

    /// Sends what is buffered and completes the upload; returns the object's size.
    fn complete(&mut self) -> Result<u64, ColdError> {
        let name = self.storage.name().to_string();
        let io_error = move |e: std::io::Error| match e.downcast::<ColdError>() {
            Ok(e) => e,
            Err(e) => ColdError::store(
                &name,
                "write",
                object_store::Error::Generic {
                    store: "upload",
                    source: Box::new(e),
                },
            ),
        };
        let result = (|| {
            self.send_part().map_err(io_error)?;
            let mut upload = self.upload.take().expect("completed once");
            self.storage
                .block(upload.complete())
                .map_err(|e| ColdError::store(self.storage.name(), "write", e))?;
            self.storage.sync_completed(&self.path)
        })();
        if result.is_err() {
            self.abort();
        }
        result.map(|()| self.sent)
    }

    fn abort(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            let _ = self.storage.block(upload.abort());
        }
    }
}

impl Write for UploadSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_BYTES {
            self.send_part()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadSink {
    fn drop(&mut self) {
        self.abort();
    }
}
