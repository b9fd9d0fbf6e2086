//! The Parquet segment format, in one place: what a segment's columns are
//! ([`segment_schema`]), the schema a reader asks for ([`read_schema`]), how a
//! segment's batches are assembled from stored rows ([`assembler`]) and how one of
//! its rows is read back ([`decode_row`], [`seq_column`]). The flush writes
//! segments with it; scans, point reads, version reads, UNIQUE builds and the change
//! log read them with it (docs/storage-format.md, "Segments").
//!
//! A segment holds every column of the table as it was at the flush, all nullable
//! (a tombstone carries only its key), then `_id` (tables without a primary key),
//! `_seq` and `_deleted`. Columns are found by name in the file and matched to the
//! table by id through the segment's manifest entry: a column added later reads as
//! its backfill value, a dropped one is ignored.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use kalamdb_cold::Segment;
use kalamdb_commons::{KalamError, KalamResult, KalamType, Value};
use kalamdb_store::row_codec::DecodedRow;

use crate::arrow_conv::{array_value, field};
use crate::assemble::{RowAssembler, ScanColumn};
use crate::catalog::{DELETED_COLUMN, ID_COLUMN, ID_COLUMN_ID, SEQ_COLUMN, TableDef};

/// The Arrow schema of the segments a flush of `table` writes now.
pub(crate) fn segment_schema(table: &TableDef) -> SchemaRef {
    let mut ids: Vec<u32> = table.columns.iter().map(|c| c.id).collect();
    if table.primary_key.is_none() {
        ids.push(ID_COLUMN_ID);
    }
    read_schema(table, &ids)
}

/// The schema a reader asks of segments that hold the columns `ids`: the table's
/// current columns among them (under their current names: a column id never
/// changes name), `_id` when listed, then `_seq` and `_deleted`.
pub(crate) fn read_schema(table: &TableDef, ids: &[u32]) -> SchemaRef {
    let mut fields: Vec<Field> = (table.columns.iter())
        .filter(|c| ids.contains(&c.id))
        .map(|c| field(&c.name, &c.data_type, true))
        .collect();
    if ids.contains(&ID_COLUMN_ID) {
        fields.push(Field::new(ID_COLUMN, DataType::Int64, true));
    }
    fields.push(Field::new(SEQ_COLUMN, DataType::Int64, false));
    fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

/// An assembler of segment batches of `table` ([`segment_schema`]), `batch_rows`
/// rows each, with the statistics the manifest keeps.
pub(crate) fn assembler(table: &TableDef, batch_rows: usize) -> RowAssembler {
    let mut columns: Vec<ScanColumn> = table.columns.iter().cloned().map(ScanColumn::Column).collect();
    if table.primary_key.is_none() {
        columns.push(ScanColumn::Id);
    }
    columns.push(ScanColumn::Seq);
    columns.push(ScanColumn::Deleted);
    RowAssembler::with_schema(columns, segment_schema(table), batch_rows).with_statistics()
}

/// The `_seq` column of a batch read from `segment`.
pub(crate) fn seq_column<'a>(segment: &Segment, batch: &'a RecordBatch) -> KalamResult<&'a Int64Array> {
    batch
        .column_by_name(SEQ_COLUMN)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| KalamError::internal(format!("segment {} has no _seq column", segment.file)))
}

/// Row `i` of a batch of `segment` (read with all of the segment's columns) as the
/// cells of the table's current columns, by column id.
pub(crate) fn decode_row(
    table: &TableDef,
    segment: &Segment,
    batch: &RecordBatch,
    i: usize,
) -> KalamResult<DecodedRow> {
    let schema = batch.schema();
    let mut cells = Vec::with_capacity(segment.columns.len());
    for column in &segment.columns {
        let ty = if column.id == ID_COLUMN_ID {
            KalamType::BigInt
        } else {
            match table.columns.iter().find(|c| c.id == column.id) {
                Some(c) => c.data_type,
                None => continue,
            }
        };
        let index = schema.index_of(&column.name).map_err(|_| {
            KalamError::internal(format!("segment {} lacks column {}", segment.file, column.name))
        })?;
        cells.push((column.id, array_value(batch.column(index), i, &ty)?));
    }
    let deleted = match schema.index_of(DELETED_COLUMN) {
        Ok(index) => matches!(
            array_value(batch.column(index), i, &KalamType::Boolean)?,
            Value::Boolean(true)
        ),
        Err(_) => false,
    };
    Ok(DecodedRow { deleted, cells })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, BooleanArray};
    use datafusion::arrow::datatypes::Int32Type;
    use kalamdb_commons::{Literal, TableType};
    use kalamdb_store::row_codec::encode_row;

    use super::*;
    use crate::catalog::ColumnDef;

    fn table() -> TableDef {
        let column = |id: u32, name: &str, data_type: KalamType, backfill: Option<Literal>| ColumnDef {
            id,
            name: name.into(),
            data_type,
            nullable: true,
            default: None,
            backfill,
            max_chars: None,
            comment: None,
        };
        TableDef {
            table_id: 1,
            namespace: "app".into(),
            name: "t".into(),
            table_type: TableType::Shared,
            columns: vec![
                column(1, "id", KalamType::BigInt, None),
                column(2, "name", KalamType::Text, None),
                // Added after the first rows were written, with a default.
                column(3, "n", KalamType::Int, Some(Literal::Number("7".into()))),
            ],
            primary_key: Some(1),
            next_column_id: 4,
            flush_policy: None,
            compact_segments: None,
            storage: None,
            ttl_seconds: None,
            access_level: None,
            created_at: 0,
            schema_version: 2,
            indexes: Vec::new(),
            next_index_id: 1,
            comment: None,
        }
    }

    fn encoded(deleted: bool, cells: &[(u32, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_row(deleted, cells.iter().map(|(id, v)| (*id, v)), &mut out);
        out
    }

    /// Stored rows → a segment batch (live rows, a row older than a column, a
    /// tombstone) → the same rows read back, with the manifest's figures.
    #[test]
    fn segment_rows_round_trip_with_their_statistics() {
        let table = table();
        let mut assembler = assembler(&table, 16);
        let rows = [
            (
                10,
                false,
                vec![
                    (1, Value::BigInt(1)),
                    (2, Value::Text("b".into())),
                    (3, Value::Int(5)),
                ],
            ),
            (
                11,
                false,
                vec![(1, Value::BigInt(2)), (2, Value::Text("a".into()))],
            ),
            (12, true, vec![(1, Value::BigInt(3))]),
        ];
        for (seq, deleted, cells) in &rows {
            assembler.push_encoded(*seq, &encoded(*deleted, cells)).unwrap();
        }
        let batch = assembler.finish().unwrap();
        assert_eq!(batch.schema(), segment_schema(&table));
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "n", "_seq", "_deleted"]);
        assert_eq!(
            batch.column(4).as_boolean(),
            &BooleanArray::from(vec![false, false, true])
        );
        assert_eq!(
            batch
                .column(2)
                .as_primitive::<Int32Type>()
                .iter()
                .collect::<Vec<_>>(),
            vec![Some(5), Some(7), None],
            "the backfill for a row older than the column, NULL in a tombstone"
        );
        let figures = assembler.statistics().unwrap();
        assert_eq!(
            (figures.rows, figures.deleted, figures.min_seq, figures.max_seq),
            (3, 1, 10, 12)
        );
        let stats = assembler.column_stats();
        assert_eq!(stats.len(), 3, "the table's columns, not _seq or _deleted");
        assert_eq!(
            (stats[0].min.as_deref(), stats[0].max.as_deref()),
            (Some("1"), Some("3"))
        );
        assert_eq!(
            (
                stats[1].min.as_deref(),
                stats[1].max.as_deref(),
                stats[1].null_count
            ),
            (Some("a"), Some("b"), 1)
        );

        let segment = Segment {
            file: "batch-0.parquet".into(),
            batch: 0,
            job_id: "j".into(),
            row_count: figures.rows,
            deleted_count: figures.deleted,
            size_bytes: 0,
            min_seq: figures.min_seq,
            max_seq: figures.max_seq,
            watermark: 12,
            created_at: 0,
            columns: stats,
        };
        let seqs = seq_column(&segment, &batch).unwrap();
        assert_eq!(
            seqs.iter().collect::<Vec<_>>(),
            vec![Some(10), Some(11), Some(12)]
        );
        let first = decode_row(&table, &segment, &batch, 0).unwrap();
        assert!(!first.deleted);
        assert_eq!(first.cells, rows[0].2);
        let second = decode_row(&table, &segment, &batch, 1).unwrap();
        assert_eq!(second.get(3), Some(&Value::Int(7)));
        assert!(decode_row(&table, &segment, &batch, 2).unwrap().deleted);
        // A column dropped since the flush is not read back.
        let mut dropped = table.clone();
        dropped.columns.remove(1);
        let row = decode_row(&dropped, &segment, &batch, 0).unwrap();
        assert_eq!(
            row.cells.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn a_reader_asks_for_the_columns_the_segments_hold() {
        let mut table = table();
        table.primary_key = None;
        let all = segment_schema(&table);
        let names: Vec<&str> = all.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "n", "_id", "_seq", "_deleted"]);
        assert!(all.fields()[..4].iter().all(|f| f.is_nullable()));
        let older = read_schema(&table, &[1, 2]);
        let names: Vec<&str> = older.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "_seq", "_deleted"]);
        let seq = older.field_with_name("_seq").unwrap();
        assert!(!seq.is_nullable());
    }
}
