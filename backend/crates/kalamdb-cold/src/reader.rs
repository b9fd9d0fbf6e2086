//! Reads of segments: one row version (pk lookups of cold rows), or every row (the
//! build of a UNIQUE index).

use std::collections::HashMap;
use std::sync::Mutex;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use datafusion::parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use datafusion::parquet::file::page_index::column_index::ColumnIndexMetaData;
use datafusion::parquet::file::statistics::Statistics;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use bytes::Bytes;

use crate::layout::ScopeDir;
use crate::{ColdError, SEQ_FIELD, Segment};

/// Parsed footers (with page indexes) of recently read segments, so that a point
/// read does not fetch and parse a large segment's metadata again. Keyed by storage,
/// path and the segment's creation time (a re-created table's file may reuse a
/// path); segments never change once written. Bounded: when full, it is emptied.
#[derive(Default)]
pub struct SegmentMetadataCache {
    entries: Mutex<HashMap<(String, i64), ArrowReaderMetadata>>,
}

/// Segments whose metadata [`SegmentMetadataCache`] keeps at most.
const CACHED_SEGMENTS: usize = 64;

impl SegmentMetadataCache {
    async fn metadata(&self, file: &SegmentFile<'_>) -> Result<ArrowReaderMetadata, ColdError> {
        let key = (file.describe(), file.segment.created_at);
        if let Some(metadata) = self.entries.lock().expect("not poisoned").get(&key) {
            return Ok(metadata.clone());
        }
        // A file without a page index would be read by whole row groups.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let metadata = ArrowReaderMetadata::load_async(&mut file.reader(), options)
            .await
            .map_err(|e| file.error(e))?;
        let mut entries = self.entries.lock().expect("not poisoned");
        if entries.len() >= CACHED_SEGMENTS {
            entries.clear();
        }
        entries.insert(key, metadata.clone());
        Ok(metadata)
    }
}

/// One segment of a scope, read with ranged requests.
struct SegmentFile<'a> {
    dir: &'a ScopeDir,
    segment: &'a Segment,
}

impl SegmentFile<'_> {
    fn reader(&self) -> ObjectReader {
        ObjectReader {
            store: self.dir.storage.object_store(),
            path: self.dir.file(&self.segment.file),
            size: self.segment.size_bytes,
        }
    }

    fn describe(&self) -> String {
        self.dir.describe(&self.segment.file)
    }

    fn error(&self, source: datafusion::parquet::errors::ParquetError) -> ColdError {
        ColdError::Parquet {
            path: self.describe(),
            source,
        }
    }

    fn no_seq(&self) -> ColdError {
        ColdError::Manifest {
            path: self.describe(),
            reason: format!("segment has no {SEQ_FIELD} column"),
        }
    }
}

/// The row with `_seq = seq` in `segment` of `dir`, as a one-row batch of the
/// file's schema. Row groups whose `_seq` statistics exclude `seq` are not read,
/// nor, within the others, pages whose `_seq` range in the page index does: only
/// the byte ranges of the selected pages are fetched.
pub fn read_seq(
    cache: &SegmentMetadataCache,
    dir: &ScopeDir,
    segment: &Segment,
    seq: u64,
) -> Result<Option<RecordBatch>, ColdError> {
    // `_seq` is stored as a non-negative BIGINT: a larger value is in no segment.
    let Ok(target) = i64::try_from(seq) else {
        return Ok(None);
    };
    let file = SegmentFile { dir, segment };
    dir.storage.block(async {
        let metadata = cache.metadata(&file).await?;
        let seq_index = metadata.schema().index_of(SEQ_FIELD).map_err(|_| file.no_seq())?;
        let row_groups = row_groups_where(metadata.metadata(), seq_index, |min, max| {
            min <= target && target <= max
        });
        if row_groups.is_empty() {
            return Ok(None);
        }
        let selection = page_selection(metadata.metadata(), &row_groups, seq_index, target);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(file.reader(), metadata)
            .with_row_groups(row_groups);
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        let mut stream = builder.build().map_err(|e| file.error(e))?;
        while let Some(batch) = stream.try_next().await.map_err(|e| file.error(e))? {
            let seqs = batch.column(seq_index).as_primitive::<Int64Type>();
            if let Some(i) = (0..seqs.len()).find(|&i| seqs.is_valid(i) && seqs.value(i) == target) {
                return Ok(Some(batch.slice(i, 1)));
            }
        }
        Ok(None)
    })
}

/// The row groups whose `_seq` statistics `(min, max)` may hold a wanted version
/// (`holds`); a row group without statistics may hold any.
fn row_groups_where(
    metadata: &ParquetMetaData,
    seq_index: usize,
    holds: impl Fn(i64, i64) -> bool,
) -> Vec<usize> {
    (metadata.row_groups().iter().enumerate())
        .filter(|(_, rg)| match rg.column(seq_index).statistics() {
            Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(min), Some(max)) => holds(*min, *max),
                _ => true,
            },
            _ => true,
        })
        .map(|(i, _)| i)
        .collect()
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

/// The rows with `_seq` in `seqs` (ascending) of `segment`, in batches of the
/// file's schema, in file order: one pass over the `_seq` column of the row groups
/// whose statistics may hold one of them, then one over the selected rows of every
/// column (a scan of the segment, not a point read per version).
pub fn read_seqs(
    cache: &SegmentMetadataCache,
    dir: &ScopeDir,
    segment: &Segment,
    seqs: &[i64],
) -> Result<Vec<RecordBatch>, ColdError> {
    use datafusion::parquet::arrow::ProjectionMask;
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let file = SegmentFile { dir, segment };
    dir.storage.block(async {
        let metadata = cache.metadata(&file).await?;
        let seq_index = metadata.schema().index_of(SEQ_FIELD).map_err(|_| file.no_seq())?;
        // Row groups whose `_seq` range holds a wanted one.
        let row_groups = row_groups_where(metadata.metadata(), seq_index, |min, max| {
            let first = seqs.partition_point(|s| *s < min);
            seqs.get(first).is_some_and(|s| *s <= max)
        });
        if row_groups.is_empty() {
            return Ok(Vec::new());
        }
        let mask = ProjectionMask::roots(metadata.parquet_schema(), [seq_index]);
        let mut positions =
            ParquetRecordBatchStreamBuilder::new_with_metadata(file.reader(), metadata.clone())
                .with_row_groups(row_groups.clone())
                .with_projection(mask)
                .build()
                .map_err(|e| file.error(e))?;
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
        while let Some(batch) = positions.try_next().await.map_err(|e| file.error(e))? {
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
        ParquetRecordBatchStreamBuilder::new_with_metadata(file.reader(), metadata)
            .with_row_groups(row_groups)
            .with_row_selection(RowSelection::from(selectors))
            .build()
            .map_err(|e| file.error(e))?
            .try_collect()
            .await
            .map_err(|e| file.error(e))
    })
}

/// Every row of `segment`, in batches of the file's schema.
pub fn read_all(dir: &ScopeDir, segment: &Segment) -> Result<Vec<RecordBatch>, ColdError> {
    read_batches(dir, segment, 8192)?.collect()
}

/// The rows of `segment` as they are read, in batches of at most `batch_rows` rows
/// of the file's schema (one row group in memory at a time).
pub fn read_batches(
    dir: &ScopeDir,
    segment: &Segment,
    batch_rows: usize,
) -> Result<impl Iterator<Item = Result<RecordBatch, ColdError>> + use<>, ColdError> {
    let file = SegmentFile { dir, segment };
    let stream = dir.storage.block(async {
        ParquetRecordBatchStreamBuilder::new(file.reader())
            .await
            .map_err(|e| file.error(e))?
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| file.error(e))
    })?;
    Ok(BatchIter {
        dir: dir.clone(),
        describe: file.describe(),
        stream,
    })
}

struct BatchIter {
    dir: ScopeDir,
    describe: String,
    stream: ParquetRecordBatchStream<ObjectReader>,
}

/// A segment as the Parquet reader reads it: ranged requests to the storage (one
/// per column chunk or page range it selects; the footer with one request of its
/// tail when the size is known, as the manifest tells).
struct ObjectReader {
    store: std::sync::Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: u64,
}

/// Bytes of a file's tail read with its footer: most footers (and page indexes) of
/// segments fit, so one request fetches them.
const FOOTER_HINT: usize = 64 << 10;

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        async move {
            (self.store.get_range(&self.path, range).await).map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        async move {
            (self.store.get_ranges(&self.path, &ranges).await)
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<std::sync::Arc<ParquetMetaData>, ParquetError>> {
        async move {
            let mut reader = ParquetMetaDataReader::new().with_prefetch_hint(Some(FOOTER_HINT));
            if let Some(options) = options {
                reader = reader
                    .with_column_index_policy(options.column_index_policy())
                    .with_offset_index_policy(options.offset_index_policy());
            }
            let size = self.size;
            Ok(std::sync::Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch, ColdError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.dir.storage.block(self.stream.try_next());
        next.map_err(|source| ColdError::Parquet {
            path: self.describe.clone(),
            source,
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::Path;
    use std::sync::Arc;

    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::file::properties::WriterProperties;

    use super::*;
    use crate::{DELETED_FIELD, SegmentWriter, Storage};

    fn scope(tmp: &tempfile::TempDir) -> ScopeDir {
        ScopeDir::new(
            Arc::new(Storage::local("local", tmp.path(), true).unwrap()),
            "ns",
            "t",
            "u",
        )
    }

    /// A manifest entry of the file `name` as it is on disk.
    fn segment_of(tmp: &tempfile::TempDir, name: &str) -> Segment {
        Segment {
            file: name.into(),
            batch: 1,
            job_id: "j".into(),
            row_count: 0,
            deleted_count: 0,
            size_bytes: std::fs::metadata(tmp.path().join("ns/t/u").join(name))
                .unwrap()
                .len(),
            min_seq: 0,
            max_seq: 0,
            watermark: 0,
            created_at: 0,
            columns: Vec::new(),
        }
    }

    #[test]
    fn write_then_point_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = scope(&tmp);
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new(SEQ_FIELD, DataType::Int64, false),
            Field::new(DELETED_FIELD, DataType::Boolean, false),
        ]));
        let mut writer = SegmentWriter::create(&dir, 1, schema.clone(), 2).unwrap();
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
        let final_path = tmp.path().join("ns/t/u/batch-1.parquet");
        assert!(!final_path.exists(), "not an object before it is complete");
        let written = writer.finish().unwrap();
        assert_eq!(written.file, "batch-1.parquet");
        assert_eq!(std::fs::metadata(&final_path).unwrap().len(), written.size_bytes);
        let segment = segment_of(&tmp, &written.file);
        let cache = SegmentMetadataCache::default();
        let row = read_seq(&cache, &dir, &segment, 21).unwrap().unwrap();
        assert_eq!(row.num_rows(), 1);
        assert_eq!(row.column(0).as_string::<i32>().value(0), "r21");
        assert!(read_seq(&cache, &dir, &segment, 25).unwrap().is_none());
        assert!(read_seq(&cache, &dir, &segment, 99).unwrap().is_none());
        let all: usize = read_all(&dir, &segment)
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(all, 6);
    }

    #[test]
    fn a_point_read_selects_only_the_page_that_holds_the_version() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = scope(&tmp);
        // One row group of 10,000 rows in pages of 1,024, `_seq` = 0, 2, 4, ...
        let path = tmp.path().join("ns/t/u/paged.parquet");
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
        let segment = segment_of(&tmp, "paged.parquet");
        let cache = SegmentMetadataCache::default();
        for seq in [0u64, 2046, 2048, 5000, 19_998] {
            let row = read_seq(&cache, &dir, &segment, seq).unwrap().unwrap();
            assert_eq!(row.column(0).as_string::<i32>().value(0), format!("row {seq}"));
        }
        assert!(read_seq(&cache, &dir, &segment, 5001).unwrap().is_none());
        assert!(read_seq(&cache, &dir, &segment, 20_000).unwrap().is_none());
        assert_eq!(cache.entries.lock().unwrap().len(), 1, "one parse for all reads");
    }

    /// 10,000 rows `("row <seq>", seq)` with `_seq` = 0, `step`, 2 `step`, ...
    fn write_named_rows(path: &Path, step: i64, props: WriterProperties) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
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
        let tmp = tempfile::tempdir().unwrap();
        let dir = scope(&tmp);
        let path = tmp.path().join("ns/t/u/many.parquet");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(3000))
            .build();
        write_named_rows(&path, 3, props);
        let segment = segment_of(&tmp, "many.parquet");
        let cache = SegmentMetadataCache::default();
        // Some in each row group, some absent (not multiples of 3), the last row.
        let wanted = [0i64, 3, 4, 8997, 9000, 15_000, 29_997, 30_000];
        let rows: Vec<String> = read_seqs(&cache, &dir, &segment, &wanted)
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
        assert!(
            read_seqs(&cache, &dir, &segment, &[1, 2, 40_000])
                .unwrap()
                .is_empty()
        );
        assert!(read_seqs(&cache, &dir, &segment, &[]).unwrap().is_empty());
    }

    #[test]
    fn aborted_segments_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = scope(&tmp);
        let schema = Arc::new(Schema::new(vec![Field::new(SEQ_FIELD, DataType::Int64, false)]));
        let writer = SegmentWriter::create(&dir, 4, schema.clone(), 10).unwrap();
        writer.abort();
        let dropped = SegmentWriter::create(&dir, 5, schema, 10).unwrap();
        drop(dropped);
        let left = std::fs::read_dir(tmp.path().join("ns/t/u")).map_or(0, |d| d.count());
        assert_eq!(left, 0);
    }
}
