//! Reads of segments: one row version (pk lookups of cold rows), or every row (the
//! build of a UNIQUE index).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
use datafusion::parquet::file::statistics::Statistics;

use crate::{ColdError, SEQ_FIELD};

/// Parsed footers (with page indexes) of recently read segments, so that a point
/// read does not parse a large segment's metadata again. Keyed by path and the
/// segment's creation time (a re-created table's file may reuse a path); segments
/// never change once written. Bounded: when full, it is emptied.
#[derive(Default)]
pub struct SegmentMetadataCache {
    entries: Mutex<HashMap<(PathBuf, i64), ArrowReaderMetadata>>,
}

/// Segments whose metadata [`SegmentMetadataCache`] keeps at most.
const CACHED_SEGMENTS: usize = 64;

impl SegmentMetadataCache {
    fn metadata(&self, file: &File, path: &Path, created_at: i64) -> Result<ArrowReaderMetadata, ColdError> {
        let key = (path.to_path_buf(), created_at);
        if let Some(metadata) = self.entries.lock().expect("not poisoned").get(&key) {
            return Ok(metadata.clone());
        }
        // A file without a page index would be read by whole row groups.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::load(file, options).map_err(|e| ColdError::parquet(path, e))?;
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CACHED_SEGMENTS {
            entries.clear();
        }
        entries.insert(key, metadata.clone());
        Ok(metadata)
    }
}

/// The row with `_seq = seq` in the segment at `path` (created at `created_at`), as
/// a one-row batch of the file's schema. Row groups whose `_seq` statistics exclude
/// `seq` are not read, nor, within the others, pages whose `_seq` range in the page
/// index does.
pub fn read_seq(
    cache: &SegmentMetadataCache,
    path: &Path,
    created_at: i64,
    seq: u64,
) -> Result<Option<RecordBatch>, ColdError> {
    let file = File::open(path).map_err(|e| ColdError::io("open", path, e))?;
    let metadata = cache.metadata(&file, path, created_at)?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
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
    let selection = page_selection(builder.metadata(), &row_groups, seq_index, target);
    let mut builder = builder.with_row_groups(row_groups);
    if let Some(selection) = selection {
        builder = builder.with_row_selection(selection);
    }
    let reader = builder.build().map_err(|e| ColdError::parquet(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| ColdError::parquet(path, e.into()))?;
        let seqs = batch.column(seq_index).as_primitive::<Int64Type>();
        if let Some(i) = (0..seqs.len()).find(|&i| seqs.is_valid(i) && seqs.value(i) == target) {
            return Ok(Some(batch.slice(i, 1)));
        }
    }
    Ok(None)
}

/// The rows of `row_groups` on the pages of the `_seq` column whose min/max hold
/// `target` (`None`: the file has no page index for `_seq`; read whole row groups).
/// Pages start on row boundaries in every column, so skipping a `_seq` page's rows
/// skips the other columns' pages over the same rows.
fn page_selection(
    metadata: &ParquetMetaData,
    row_groups: &[usize],
    seq_index: usize,
    target: i64,
) -> Option<RowSelection> {
    let (columns, offsets) = (metadata.column_index()?, metadata.offset_index()?);
    let mut selectors = Vec::new();
    for &rg in row_groups {
        let ColumnIndexMetaData::INT64(index) = columns.get(rg)?.get(seq_index)? else {
            return None;
        };
        let pages = offsets.get(rg)?.get(seq_index)?.page_locations();
        let rows = metadata.row_group(rg).num_rows();
        for (i, page) in pages.iter().enumerate() {
            let end = pages.get(i + 1).map_or(rows, |next| next.first_row_index);
            let count = usize::try_from(end - page.first_row_index).ok()?;
            let holds = match (index.min_value(i), index.max_value(i)) {
                (Some(min), Some(max)) => *min <= target && target <= *max,
                _ => true,
            };
            selectors.push(if holds {
                RowSelector::select(count)
            } else {
                RowSelector::skip(count)
            });
        }
    }
    Some(RowSelection::from(selectors))
}

/// The rows with `_seq` in `seqs` (ascending) of the segment at `path`, in
/// batches of the file's schema, in file order: one pass over the `_seq` column of
/// the row groups whose statistics may hold one of them, then one over the selected
/// rows of every column (a scan of the segment, not a point read per version).
pub fn read_seqs(
    cache: &SegmentMetadataCache,
    path: &Path,
    created_at: i64,
    seqs: &[i64],
) -> Result<Vec<RecordBatch>, ColdError> {
    use datafusion::parquet::arrow::ProjectionMask;
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let file = File::open(path).map_err(|e| ColdError::io("open", path, e))?;
    let metadata = cache.metadata(&file, path, created_at)?;
    let Some(seq_index) = metadata.schema().index_of(SEQ_FIELD).ok() else {
        return Err(ColdError::Manifest {
            path: path.display().to_string(),
            reason: format!("segment has no {SEQ_FIELD} column"),
        });
    };
    // Row groups whose `_seq` range holds a wanted one.
    let row_groups: Vec<usize> = (metadata.metadata().row_groups().iter().enumerate())
        .filter(|(_, rg)| match rg.column(seq_index).statistics() {
            Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(min), Some(max)) => {
                    let first = seqs.partition_point(|s| s < min);
                    seqs.get(first).is_some_and(|s| s <= max)
                }
                _ => true,
            },
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    if row_groups.is_empty() {
        return Ok(Vec::new());
    }
    let reopen = || File::open(path).map_err(|e| ColdError::io("open", path, e));
    let mask = ProjectionMask::roots(metadata.parquet_schema(), [seq_index]);
    let positions = ParquetRecordBatchReaderBuilder::new_with_metadata(reopen()?, metadata.clone())
        .with_row_groups(row_groups.clone())
        .with_projection(mask)
        .build()
        .map_err(|e| ColdError::parquet(path, e))?;
    let mut selectors: Vec<RowSelector> = Vec::new();
    let mut push = |select: bool| match selectors.last_mut() {
        Some(last) if last.skip != select => last.row_count += 1,
        _ => selectors.push(if select {
            RowSelector::select(1)
        } else {
            RowSelector::skip(1)
        }),
    };
    let mut found = 0usize;
    for batch in positions {
        let batch = batch.map_err(|e| ColdError::parquet(path, e.into()))?;
        let column = batch.column(0).as_primitive::<Int64Type>();
        for i in 0..column.len() {
            let wanted = column.is_valid(i) && seqs.binary_search(&column.value(i)).is_ok();
            found += usize::from(wanted);
            push(wanted);
        }
    }
    if found == 0 {
        return Ok(Vec::new());
    }
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(reopen()?, metadata)
        .with_row_groups(row_groups)
        .with_row_selection(RowSelection::from(selectors))
        .build()
        .map_err(|e| ColdError::parquet(path, e))?;
    reader
        .map(|batch| batch.map_err(|e| ColdError::parquet(path, e.into())))
        .collect()
}

/// Every row of the segment at `path`, in batches of the file's schema.
pub fn read_all(path: &Path) -> Result<Vec<RecordBatch>, ColdError> {
    read_batches(path, 8192)?.collect()
}

/// The rows of the segment at `path` as they are read, in batches of at most
/// `batch_rows` rows of the file's schema (one row group in memory at a time).
pub fn read_batches(
    path: &Path,
    batch_rows: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch, ColdError>> + use<>, ColdError> {
    let file = File::open(path).map_err(|e| ColdError::io("open", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| ColdError::parquet(path, e))?
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(|e| ColdError::parquet(path, e))?;
    let path = path.to_path_buf();
    Ok(reader.map(move |batch| batch.map_err(|e| ColdError::parquet(&path, e.into()))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use datafusion::parquet::file::properties::WriterProperties;

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
        let cache = SegmentMetadataCache::default();
        let row = read_seq(&cache, &path, 0, 21).unwrap().unwrap();
        assert_eq!(row.num_rows(), 1);
        assert_eq!(row.column(0).as_string::<i32>().value(0), "r21");
        assert!(read_seq(&cache, &path, 0, 25).unwrap().is_none());
        assert!(read_seq(&cache, &path, 0, 99).unwrap().is_none());
    }

    #[test]
    fn a_point_read_selects_only_the_page_that_holds_the_version() {
        let dir = tempfile::tempdir().unwrap();
        // One row group of 10,000 rows in pages of 1,024, `_seq` = 0, 2, 4, ...
        let path = dir.path().join("paged.parquet");
        let props = WriterProperties::builder()
            .set_data_page_row_count_limit(1024)
            .build();
        write_named_rows(&path, 2, props);
        let file = File::open(&path).unwrap();
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).unwrap();
        let selection = page_selection(builder.metadata(), &[0], 1, 5000).unwrap();
        let selected: usize = selection.iter().filter(|s| !s.skip).map(|s| s.row_count).sum();
        assert_eq!(selected, 1024, "one page of 10 read");
        let cache = SegmentMetadataCache::default();
        for seq in [0u64, 2046, 2048, 5000, 19_998] {
            let row = read_seq(&cache, &path, 0, seq).unwrap().unwrap();
            assert_eq!(row.column(0).as_string::<i32>().value(0), format!("row {seq}"));
        }
        assert!(read_seq(&cache, &path, 0, 5001).unwrap().is_none());
        assert!(read_seq(&cache, &path, 0, 20_000).unwrap().is_none());
        assert_eq!(cache.entries.lock().unwrap().len(), 1, "one parse for all reads");
    }

    /// 10,000 rows `("row <seq>", seq)` with `_seq` = 0, `step`, 2 `step`, ...
    fn write_named_rows(path: &Path, step: i64, props: WriterProperties) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new(SEQ_FIELD, DataType::Int64, false),
        ]));
        let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
            File::create(path).unwrap(),
            schema.clone(),
            Some(props),
        )
        .unwrap();
        let seqs: Vec<i64> = (0..10_000).map(|i| step * i).collect();
        let names: Vec<String> = seqs.iter().map(|s| format!("row {s}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(names)),
                Arc::new(Int64Array::from(seqs)),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn many_versions_are_read_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.parquet");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(3000))
            .build();
        write_named_rows(&path, 3, props);
        let cache = SegmentMetadataCache::default();
        // Some in each row group, some absent (not multiples of 3), the last row.
        let wanted = [0i64, 3, 4, 8997, 9000, 15_000, 29_997, 30_000];
        let rows: Vec<String> = read_seqs(&cache, &path, 0, &wanted)
            .unwrap()
            .iter()
            .flat_map(|b| {
                let names = b.column(0).as_string::<i32>().clone();
                (0..names.len()).map(move |i| names.value(i).to_string())
            })
            .collect();
        assert_eq!(
            rows,
            ["row 0", "row 3", "row 8997", "row 9000", "row 15000", "row 29997"]
        );
        assert!(read_seqs(&cache, &path, 0, &[1, 2, 40_000]).unwrap().is_empty());
        assert!(read_seqs(&cache, &path, 0, &[]).unwrap().is_empty());
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
