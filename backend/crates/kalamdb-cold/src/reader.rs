//! Reads of segments: one row version (pk lookups of cold rows), or every row (the
//! build of a UNIQUE index).

use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::statistics::Statistics;

use crate::{ColdError, SEQ_FIELD};

/// The row with `_seq = seq` in the segment at `path`, as a one-row batch of the
/// file's schema. Row groups whose `_seq` statistics exclude `seq` are not read.
pub fn read_seq(path: &Path, seq: u64) -> Result<Option<RecordBatch>, ColdError> {
    let file = File::open(path).map_err(|e| ColdError::io("open", path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| ColdError::parquet(path, e))?;
    // `_seq` is stored as a non-negative BIGINT: a larger value is in no segment.
    let Ok(target) = i64::try_from(seq) else {
        return Ok(None);
    };
    let Some(seq_index) = builder.schema().index_of(SEQ_FIELD).ok() else {
        return Err(ColdError::Manifest {
            path: path.display().to_string(),
            reason: format!("segment has no {SEQ_FIELD} column"),
        });
    };
    let row_groups: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| match rg.column(seq_index).statistics() {
            Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(min), Some(max)) => *min <= target && target <= *max,
                _ => true,
            },
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    if row_groups.is_empty() {
        return Ok(None);
    }
    let reader = builder
        .with_row_groups(row_groups)
        .build()
        .map_err(|e| ColdError::parquet(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| ColdError::parquet(path, e.into()))?;
        let seqs = batch.column(seq_index).as_primitive::<Int64Type>();
        if let Some(i) = (0..seqs.len()).find(|&i| seqs.is_valid(i) && seqs.value(i) == target) {
            return Ok(Some(batch.slice(i, 1)));
        }
    }
    Ok(None)
}

/// Every row of the segment at `path`, in batches of the file's schema.
pub fn read_all(path: &Path) -> Result<Vec<RecordBatch>, ColdError> {
    let file = File::open(path).map_err(|e| ColdError::io("open", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| ColdError::parquet(path, e))?
        .build()
        .map_err(|e| ColdError::parquet(path, e))?;
    reader
        .map(|batch| batch.map_err(|e| ColdError::parquet(path, e.into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::{DELETED_FIELD, SegmentWriter};

    #[test]
    fn write_then_point_read() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new(SEQ_FIELD, DataType::Int64, false),
            Field::new(DELETED_FIELD, DataType::Boolean, false),
        ]));
        let mut writer = SegmentWriter::create(dir.path(), 1, schema.clone(), 2).unwrap();
        for start in [10i64, 20, 30] {
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(vec![
                        format!("r{start}"),
                        format!("r{}", start + 1),
                    ])),
                    Arc::new(Int64Array::from(vec![start, start + 1])),
                    Arc::new(BooleanArray::from(vec![false, true])),
                ],
            )
            .unwrap();
            writer.write(&batch).unwrap();
        }
        let tmp = writer.tmp_path().to_path_buf();
        assert!(tmp.exists());
        let written = writer.finish().unwrap();
        assert!(!tmp.exists());
        assert_eq!(written.file, "batch-1.parquet");
        let path = dir.path().join(&written.file);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), written.size_bytes);
        let row = read_seq(&path, 21).unwrap().unwrap();
        assert_eq!(row.num_rows(), 1);
        assert_eq!(row.column(0).as_string::<i32>().value(0), "r21");
        assert!(read_seq(&path, 25).unwrap().is_none());
        assert!(read_seq(&path, 99).unwrap().is_none());
    }

    #[test]
    fn aborted_segments_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new(SEQ_FIELD, DataType::Int64, false)]));
        let writer = SegmentWriter::create(dir.path(), 4, schema, 10).unwrap();
        writer.abort();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
