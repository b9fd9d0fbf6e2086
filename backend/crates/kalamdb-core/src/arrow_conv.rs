//! Conversions between KalamDB values and Arrow arrays, and from Arrow to JSON results.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use kalamdb_commons::value::{format_date, format_decimal, format_timestamp, hex, parse_text};
use kalamdb_commons::{KalamError, KalamResult, KalamType, Value};
use kalamdb_store::row_codec::CellRef;

/// Field metadata key that carries the KalamDB type through DataFusion plans, so
/// results can name JSON and UUID columns (stored as Utf8) by their real type.
pub const TYPE_METADATA_KEY: &str = "kalamdb.type";

pub fn arrow_type(ty: &KalamType) -> DataType {
    match ty {
        KalamType::Boolean => DataType::Boolean,
        KalamType::SmallInt => DataType::Int16,
        KalamType::Int => DataType::Int32,
        KalamType::BigInt => DataType::Int64,
        KalamType::Float => DataType::Float32,
        KalamType::Double => DataType::Float64,
        KalamType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale as i8),
        KalamType::Text | KalamType::Json | KalamType::Uuid => DataType::Utf8,
        KalamType::Bytes => DataType::Binary,
        KalamType::Date => DataType::Date32,
        KalamType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
    }
}

pub fn field(name: &str, ty: &KalamType, nullable: bool) -> Field {
    Field::new(name, arrow_type(ty), nullable)
        .with_metadata(HashMap::from([(TYPE_METADATA_KEY.to_string(), ty.api_name())]))
}

/// Builds one Arrow array of the column type from values already of that type
/// (anything else becomes NULL, which the caller's validation rules out).
pub fn values_to_array(ty: &KalamType, values: &[Value]) -> ArrayRef {
    let mut builder = ColumnBuilder::new(ty, values.len());
    for value in values {
        builder.append(CellRef::of(value));
    }
    builder.finish()
}

/// Builds one Arrow array of a column type from stored cells, without going
/// through [`Value`]. A cell of another type becomes NULL (as in [`values_to_array`];
/// the writer's validation rules it out).
pub enum ColumnBuilder {
    Boolean(BooleanBuilder),
    SmallInt(Int16Builder),
    Int(Int32Builder),
    BigInt(Int64Builder),
    Float(Float32Builder),
    Double(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    pub fn new(ty: &KalamType, capacity: usize) -> Self {
        match ty {
            KalamType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(capacity)),
            KalamType::SmallInt => ColumnBuilder::SmallInt(Int16Builder::with_capacity(capacity)),
            KalamType::Int => ColumnBuilder::Int(Int32Builder::with_capacity(capacity)),
            KalamType::BigInt => ColumnBuilder::BigInt(Int64Builder::with_capacity(capacity)),
            KalamType::Float => ColumnBuilder::Float(Float32Builder::with_capacity(capacity)),
            KalamType::Double => ColumnBuilder::Double(Float64Builder::with_capacity(capacity)),
            KalamType::Decimal { precision, scale } => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(capacity),
                *precision,
                *scale as i8,
            ),
            KalamType::Text | KalamType::Json | KalamType::Uuid => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            KalamType::Bytes => ColumnBuilder::Bytes(BinaryBuilder::with_capacity(capacity, capacity * 16)),
            KalamType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            KalamType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
        }
    }

    pub fn append(&mut self, cell: CellRef<'_>) {
        macro_rules! put {
            ($b:expr, $variant:pat => $v:expr) => {
                match cell {
                    $variant => $b.append_value($v),
                    _ => $b.append_null(),
                }
            };
        }
        match self {
            ColumnBuilder::Boolean(b) => put!(b, CellRef::Boolean(v) => v),
            ColumnBuilder::SmallInt(b) => put!(b, CellRef::SmallInt(v) => v),
            ColumnBuilder::Int(b) => put!(b, CellRef::Int(v) => v),
            ColumnBuilder::BigInt(b) => put!(b, CellRef::BigInt(v) => v),
            ColumnBuilder::Float(b) => put!(b, CellRef::Float(v) => v),
            ColumnBuilder::Double(b) => put!(b, CellRef::Double(v) => v),
            ColumnBuilder::Decimal(b, _, _) => put!(b, CellRef::Decimal { unscaled, .. } => unscaled),
            ColumnBuilder::Text(b) => match cell {
                CellRef::Text(s) | CellRef::Json(s) => b.append_value(s),
                CellRef::Uuid(u) => b.append_value(Value::Uuid(u).display()),
                _ => b.append_null(),
            },
            ColumnBuilder::Bytes(b) => put!(b, CellRef::Bytes(v) => v),
            ColumnBuilder::Date(b) => put!(b, CellRef::Date(v) => v),
            ColumnBuilder::Timestamp(b) => put!(b, CellRef::Timestamp(v) => v),
        }
    }

    /// The values appended so far, as an array; the builder starts over.
    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::SmallInt(b) => Arc::new(b.finish()),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::BigInt(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Double(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, precision, scale) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale)
                    .expect("catalog validated decimal precision and scale"),
            ),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytes(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// Reads row `i` of an array that DataFusion produced for a column of type `ty`.
/// Data of another Arrow type (a `CAST(... AS TIMESTAMP)` yields nanoseconds, a
/// string function may yield `Utf8View`, `NOW()` carries a time zone) is converted
/// to [`arrow_type`] by a strict cast: a value that does not fit is a
/// `TYPE_MISMATCH`, never a silent NULL.
pub fn array_value(array: &ArrayRef, i: usize, ty: &KalamType) -> KalamResult<Value> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    match native_value(array, i, ty) {
        Some(value) => value,
        None => {
            let target = arrow_type(ty);
            let options = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            let cast = cast_with_options(&array.slice(i, 1), &target, &options).map_err(|e| {
                KalamError::type_mismatch(format!(
                    "a {} value does not fit a {ty} column: {e}",
                    array.data_type()
                ))
            })?;
            native_value(&cast, 0, ty).unwrap_or_else(|| {
                Err(KalamError::internal(format!(
                    "cast to {target} for a {ty} column yielded {}",
                    cast.data_type()
                )))
            })
        }
    }
}

/// The values of a whole array DataFusion produced for a column of type `ty`. An
/// array of another Arrow type is cast once, strictly (as in [`array_value`]): a
/// value that does not fit is a `TYPE_MISMATCH` naming `column`.
pub fn column_values(array: &ArrayRef, ty: &KalamType, column: &str) -> KalamResult<Vec<Value>> {
    let target = arrow_type(ty);
    let native = match (ty, array.data_type()) {
        (KalamType::Text | KalamType::Json | KalamType::Uuid, DataType::Utf8View) => true,
        (KalamType::Bytes, DataType::BinaryView) => true,
        (_, actual) => *actual == target,
    };
    let cast;
    let array = if native || array.null_count() == array.len() {
        array
    } else {
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        cast = cast_with_options(array, &target, &options).map_err(|e| {
            KalamError::type_mismatch(format!(
                "column '{column}': a {} value does not fit a {ty} column: {e}",
                array.data_type()
            ))
        })?;
        &cast
    };
    (0..array.len())
        .map(|i| {
            array_value(array, i, ty)
                .map_err(|e| KalamError::new(e.code, format!("column '{column}': {}", e.message)))
        })
        .collect()
}

/// Row `i` (not null) when the array already has the column's own Arrow type.
fn native_value(array: &ArrayRef, i: usize, ty: &KalamType) -> Option<KalamResult<Value>> {
    Some(Ok(match (ty, array.data_type()) {
        (KalamType::Boolean, DataType::Boolean) => Value::Boolean(array.as_boolean().value(i)),
        (KalamType::SmallInt, DataType::Int16) => Value::SmallInt(array.as_primitive::<Int16Type>().value(i)),
        (KalamType::Int, DataType::Int32) => Value::Int(array.as_primitive::<Int32Type>().value(i)),
        (KalamType::BigInt, DataType::Int64) => Value::BigInt(array.as_primitive::<Int64Type>().value(i)),
        (KalamType::Float, DataType::Float32) => Value::Float(array.as_primitive::<Float32Type>().value(i)),
        (KalamType::Double, DataType::Float64) => Value::Double(array.as_primitive::<Float64Type>().value(i)),
        (KalamType::Decimal { precision, scale }, DataType::Decimal128(_, _)) => Value::Decimal {
            unscaled: array.as_primitive::<Decimal128Type>().value(i),
            precision: *precision,
            scale: *scale,
        },
        (KalamType::Text | KalamType::Json | KalamType::Uuid, DataType::Utf8) => {
            return Some(parse_text(array.as_string::<i32>().value(i), ty));
        }
        (KalamType::Text | KalamType::Json | KalamType::Uuid, DataType::Utf8View) => {
            return Some(parse_text(array.as_string_view().value(i), ty));
        }
        (KalamType::Bytes, DataType::Binary) => Value::Bytes(array.as_binary::<i32>().value(i).to_vec()),
        (KalamType::Bytes, DataType::BinaryView) => Value::Bytes(array.as_binary_view().value(i).to_vec()),
        (KalamType::Date, DataType::Date32) => Value::Date(array.as_primitive::<Date32Type>().value(i)),
        (KalamType::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, None)) => {
            Value::Timestamp(array.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        _ => return None,
    }))
}

/// The API's name for a result column's type.
pub fn api_type_name(field: &Field) -> String {
    if let Some(name) = field.metadata().get(TYPE_METADATA_KEY) {
        return name.clone();
    }
    match field.data_type() {
        DataType::Null => "Null".into(),
        DataType::Boolean => "Boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SmallInt".into(),
        DataType::Int32 | DataType::UInt16 => "Int".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "BigInt".into(),
        DataType::Float16 | DataType::Float32 => "Float".into(),
        DataType::Float64 => "Double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("Decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "Text".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "Bytes".into(),
        DataType::Date32 | DataType::Date64 => "Date".into(),
        DataType::Timestamp(_, _) => "Timestamp".into(),
        other => other.to_string(),
    }
}

/// Converts one column of a result batch to JSON values.
pub fn column_to_json(field: &Field, array: &ArrayRef) -> Vec<serde_json::Value> {
    use serde_json::Value as J;
    let is_json = field.metadata().get(TYPE_METADATA_KEY).map(String::as_str) == Some("Json");
    let n = array.len();
    let each = |f: &dyn Fn(usize) -> J| -> Vec<J> {
        (0..n)
            .map(|i| if array.is_null(i) { J::Null } else { f(i) })
            .collect()
    };
    macro_rules! num {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            each(&|i| J::from(a.value(i)))
        }};
    }
    let float = |v: f64| serde_json::Number::from_f64(v).map_or(J::Null, J::Number);
    match array.data_type() {
        DataType::Null => vec![J::Null; n],
        DataType::Boolean => {
            let a = array.as_boolean();
            each(&|i| J::Bool(a.value(i)))
        }
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            each(&|i| float(a.value(i) as f64))
        }
        DataType::Float64 => {
            let a = array.as_primitive::<Float64Type>();
            each(&|i| float(a.value(i)))
        }
        DataType::Decimal128(_, scale) => {
            let a = array.as_primitive::<Decimal128Type>();
            let scale = (*scale).max(0) as u8;
            each(&|i| J::String(format_decimal(a.value(i), scale)))
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = |i: usize| -> &str {
                match array.data_type() {
                    DataType::Utf8 => array.as_string::<i32>().value(i),
                    DataType::LargeUtf8 => array.as_string::<i64>().value(i),
                    _ => array.as_string_view().value(i),
                }
            };
            each(&|i| {
                let s = text(i);
                if is_json {
                    serde_json::from_str(s).unwrap_or_else(|_| J::String(s.to_string()))
                } else {
                    J::String(s.to_string())
                }
            })
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            each(&|i| J::String(format!("\\x{}", hex(a.value(i)))))
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            each(&|i| J::String(format!("\\x{}", hex(a.value(i)))))
        }
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            each(&|i| J::String(format_date(a.value(i))))
        }
        DataType::Timestamp(unit, _) => {
            let micros = |i: usize| -> i64 {
                match unit {
                    TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(i) * 1_000_000,
                    TimeUnit::Millisecond => {
                        array.as_primitive::<TimestampMillisecondType>().value(i) * 1_000
                    }
                    TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(i),
                    TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(i) / 1_000,
                }
            };
            each(&|i| J::String(format_timestamp(micros(i))))
        }
        _ => {
            let options = FormatOptions::default();
            match ArrayFormatter::try_new(array.as_ref(), &options) {
                Ok(formatter) => each(&|i| J::String(formatter.value(i).to_string())),
                Err(_) => vec![J::Null; n],
            }
        }
    }
}

/// About what the values of `array` take once converted to [`Value`]s: a cell each,
/// and the bytes of every text or binary value (a dictionary's value counted once
/// per row that uses it, as the conversion copies it). Reads no value.
pub(crate) fn materialized_bytes(array: &dyn Array) -> usize {
    let cells = array.len() * std::mem::size_of::<Value>();
    let heap = match array.data_type() {
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let values = dictionary.values();
            if values.is_empty() {
                // All NULL (a dictionary of no values).
                0
            } else {
                let lengths = value_lengths(values.as_ref());
                (dictionary.normalized_keys().into_iter().enumerate())
                    .filter(|(row, _)| array.is_valid(*row))
                    .map(|(_, key)| lengths.get(key).copied().unwrap_or(0))
                    .sum()
            }
        }
        DataType::Boolean | DataType::Null => 0,
        t if t.is_primitive() => 0,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
            value_lengths(array).into_iter().sum()
        }
        DataType::Utf8View | DataType::BinaryView => value_lengths(array).into_iter().sum(),
        _ => array.get_array_memory_size(),
    };
    cells + heap
}

/// The byte length of each value of a text or binary array (from its offsets or
/// views, reading no value); of another type, its memory size spread evenly.
fn value_lengths(array: &dyn Array) -> Vec<usize> {
    fn from_offsets<O: Copy + Into<i64>>(offsets: &[O]) -> Vec<usize> {
        offsets
            .windows(2)
            .map(|w| (w[1].into() - w[0].into()).max(0) as usize)
            .collect()
    }
    match array.data_type() {
        DataType::Utf8 => from_offsets(array.as_string::<i32>().value_offsets()),
        DataType::LargeUtf8 => from_offsets(array.as_string::<i64>().value_offsets()),
        DataType::Binary => from_offsets(array.as_binary::<i32>().value_offsets()),
        DataType::LargeBinary => from_offsets(array.as_binary::<i64>().value_offsets()),
        DataType::Utf8View => (array.as_string_view().views().iter())
            .map(|v| *v as u32 as usize)
            .collect(),
        DataType::BinaryView => (array.as_binary_view().views().iter())
            .map(|v| *v as u32 as usize)
            .collect(),
        _ => {
            let each = array.get_array_memory_size() / array.len().max(1);
            vec![each; array.len()]
        }
    }
}

#[cfg(test)]
mod materialized_tests {
    use datafusion::arrow::array::{DictionaryArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    use super::*;

    #[test]
    fn dictionaries_count_each_row_and_all_null_ones_nothing() {
        let cell = std::mem::size_of::<Value>();
        let values = Arc::new(StringArray::from(vec!["x".repeat(100), String::new()]));
        let keys = Int32Array::from(vec![Some(0), Some(0), None, Some(1)]);
        let dictionary = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        assert_eq!(materialized_bytes(&dictionary), 4 * cell + 200);
        // A column of NULLs only: a dictionary of no values.
        let empty = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(vec![None, None]),
            Arc::new(StringArray::from(Vec::<String>::new())),
        )
        .unwrap();
        assert_eq!(materialized_bytes(&empty), 2 * cell);
        let sliced = StringArray::from(vec!["ab", "cde", "f"]).slice(1, 2);
        assert_eq!(materialized_bytes(&sliced), 2 * cell + 4);
    }
}

/// A statement's JSON result as one record batch of its column types (for the
/// streamed formats of statements that do not run as a query: SHOW STATS, FLUSH,
/// `... RETURNING`). A column of no KalamDB type stays text.
pub(crate) fn result_rows(result: &crate::StatementResult) -> KalamResult<crate::RowStream> {
    let rows = result.rows.cells()?;
    let mut fields = Vec::with_capacity(result.columns.len());
    let mut arrays = Vec::with_capacity(result.columns.len());
    for (i, column) in result.columns.iter().enumerate() {
        let ty = KalamType::from_api_name(&column.data_type).unwrap_or(KalamType::Text);
        let values = rows
            .iter()
            .map(|row| {
                let Some(cell) = row.get(i).map(|c| c.get()).filter(|c| *c != "null") else {
                    return Ok(Value::Null);
                };
                // The JSON document itself, whatever its depth (a JSON string stays
                // a JSON string); the other columns hold scalars.
                if ty == KalamType::Json {
                    return Ok(Value::Json(cell.to_string()));
                }
                let scalar: serde_json::Value = serde_json::from_str(cell)
                    .map_err(|e| KalamError::internal(format!("a result cell is not JSON: {e}")))?;
                kalamdb_commons::Literal::from_json(scalar).to_value(&ty)
            })
            .collect::<KalamResult<Vec<Value>>>()?;
        fields.push(field(&column.name, &ty, true));
        arrays.push(values_to_array(&ty, &values));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| KalamError::internal(format!("result batch: {e}")))?;
    let stream = futures::stream::iter([Ok(batch)]);
    Ok(crate::RowStream {
        schema: schema.clone(),
        batches: Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema, stream,
        )),
    })
}

/// Appends one batch's rows to a JSON array under construction (`out` holds
/// `[` and the rows so far): each row as an array of its values, written directly
/// from the Arrow columns.
/// With `int64_as_string`, 64-bit integers (`BigInt` columns) are JSON strings.
pub fn write_json_rows(fields: &[Arc<Field>], batch: &RecordBatch, int64_as_string: bool, out: &mut Vec<u8>) {
    let writers: Vec<JsonColumn> = fields
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| JsonColumn::new(field, array, int64_as_string))
        .collect();
    for row in 0..batch.num_rows() {
        if out.len() > 1 {
            out.push(b',');
        }
        out.push(b'[');
        for (i, writer) in writers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            writer.write(row, out);
        }
        out.push(b']');
    }
}

/// Writes one batch's rows as JSON objects (`{"column": value, ...}`), one per line
/// (NDJSON), with the values [`write_json_rows`] writes. With `int64_as_string`,
/// 64-bit integers (`BigInt` columns) are written as strings, for readers whose
/// numbers are doubles (JavaScript).
pub fn write_json_objects(
    fields: &[Arc<Field>],
    batch: &RecordBatch,
    int64_as_string: bool,
    out: &mut Vec<u8>,
) {
    write_objects(fields, batch, int64_as_string, out, |out, _| out.push(b'\n'));
}

/// Writes one batch's rows as a JSON array of objects (`[{...},{...}]`), with the
/// values of [`write_json_objects`] (the rows of live-query messages).
pub(crate) fn write_json_object_array(
    fields: &[Arc<Field>],
    batch: &RecordBatch,
    int64_as_string: bool,
    out: &mut Vec<u8>,
) {
    out.push(b'[');
    let last = batch.num_rows().saturating_sub(1);
    write_objects(fields, batch, int64_as_string, out, |out, row| {
        if row < last {
            out.push(b',');
        }
    });
    out.push(b']');
}

fn write_objects(
    fields: &[Arc<Field>],
    batch: &RecordBatch,
    int64_as_string: bool,
    out: &mut Vec<u8>,
    after_row: impl Fn(&mut Vec<u8>, usize),
) {
    let writers: Vec<JsonColumn> = fields
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| JsonColumn::new(field, array, int64_as_string))
        .collect();
    let keys: Vec<String> = fields
        .iter()
        .map(|f| serde_json::to_string(f.name()).expect("a string serializes"))
        .collect();
    for row in 0..batch.num_rows() {
        out.push(b'{');
        for (i, writer) in writers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(keys[i].as_bytes());
            out.push(b':');
            writer.write(row, out);
        }
        out.push(b'}');
        after_row(out, row);
    }
}

/// Writes the values of one result column as JSON text.
enum JsonColumn<'a> {
    Null,
    Bool(&'a datafusion::arrow::array::BooleanArray),
    /// The bool: written as a string (`int64_as_string`).
    Int(&'a ArrayRef, fn(&ArrayRef, usize) -> i64, bool),
    UInt(&'a datafusion::arrow::array::UInt64Array, bool),
    Float(&'a ArrayRef, fn(&ArrayRef, usize) -> f64),
    Text(&'a ArrayRef, bool),
    /// Formatted once per batch (decimals, dates, timestamps, bytes, the rest).
    Values(Vec<serde_json::Value>),
}

impl<'a> JsonColumn<'a> {
    fn new(field: &Field, array: &'a ArrayRef, int64_as_string: bool) -> JsonColumn<'a> {
        let quoted = int64_as_string && api_type_name(field) == "BigInt";
        macro_rules! int {
            ($t:ty) => {
                JsonColumn::Int(array, |a, i| a.as_primitive::<$t>().value(i) as i64, quoted)
            };
        }
        match array.data_type() {
            DataType::Null => JsonColumn::Null,
            DataType::Boolean => JsonColumn::Bool(array.as_boolean()),
            DataType::Int8 => int!(Int8Type),
            DataType::Int16 => int!(Int16Type),
            DataType::Int32 => int!(Int32Type),
            DataType::Int64 => int!(Int64Type),
            DataType::UInt8 => int!(UInt8Type),
            DataType::UInt16 => int!(UInt16Type),
            DataType::UInt32 => int!(UInt32Type),
            DataType::UInt64 => JsonColumn::UInt(array.as_primitive::<UInt64Type>(), quoted),
            DataType::Float32 => {
                JsonColumn::Float(array, |a, i| a.as_primitive::<Float32Type>().value(i) as f64)
            }
            DataType::Float64 => JsonColumn::Float(array, |a, i| a.as_primitive::<Float64Type>().value(i)),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let is_json = field.metadata().get(TYPE_METADATA_KEY).map(String::as_str) == Some("Json");
                JsonColumn::Text(array, is_json)
            }
            _ => JsonColumn::Values(column_to_json(field, array)),
        }
    }

    fn write(&self, i: usize, out: &mut Vec<u8>) {
        let array = match self {
            JsonColumn::Null => None,
            JsonColumn::Bool(a) => Some(*a as &dyn Array),
            JsonColumn::Int(a, _, _) | JsonColumn::Float(a, _) | JsonColumn::Text(a, _) => Some(a.as_ref()),
            JsonColumn::UInt(a, _) => Some(*a as &dyn Array),
            JsonColumn::Values(_) => None,
        };
        if array.is_none_or(|a| a.is_null(i)) && !matches!(self, JsonColumn::Values(_)) {
            out.extend_from_slice(b"null");
            return;
        }
        // Writing to a Vec<u8> cannot fail.
        let _ = match self {
            JsonColumn::Null => Ok(()),
            JsonColumn::Bool(a) => {
                out.extend_from_slice(if a.value(i) { b"true" } else { b"false" });
                Ok(())
            }
            JsonColumn::Int(a, get, false) => serde_json::to_writer(&mut *out, &get(a, i)),
            JsonColumn::Int(a, get, true) => serde_json::to_writer(&mut *out, &get(a, i).to_string()),
            JsonColumn::UInt(a, false) => serde_json::to_writer(&mut *out, &a.value(i)),
            JsonColumn::UInt(a, true) => serde_json::to_writer(&mut *out, &a.value(i).to_string()),
            JsonColumn::Float(a, get) => {
                let v = get(a, i);
                if v.is_finite() {
                    serde_json::to_writer(&mut *out, &v)
                } else {
                    out.extend_from_slice(b"null");
                    Ok(())
                }
            }
            JsonColumn::Text(a, is_json) => {
                let s = match a.data_type() {
                    DataType::Utf8 => a.as_string::<i32>().value(i),
                    DataType::LargeUtf8 => a.as_string::<i64>().value(i),
                    _ => a.as_string_view().value(i),
                };
                match is_json.then(|| serde_json::from_str::<&serde_json::value::RawValue>(s)) {
                    Some(Ok(raw)) => {
                        out.extend_from_slice(raw.get().trim().as_bytes());
                        Ok(())
                    }
                    _ => serde_json::to_writer(&mut *out, s),
                }
            }
            JsonColumn::Values(values) => serde_json::to_writer(&mut *out, &values[i]),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_arrow() {
        let cases = [
            (KalamType::Int, Value::Int(-5)),
            (KalamType::Text, Value::Text("x".into())),
            (KalamType::Json, Value::Json("[1]".into())),
            (
                KalamType::Decimal {
                    precision: 9,
                    scale: 2,
                },
                Value::Decimal {
                    unscaled: 1234,
                    precision: 9,
                    scale: 2,
                },
            ),
            (KalamType::Timestamp, Value::Timestamp(1_000_001)),
            (KalamType::Bytes, Value::Bytes(vec![1, 2])),
            (KalamType::Uuid, Value::Uuid([7; 16])),
        ];
        for (ty, value) in cases {
            let array = values_to_array(&ty, &[value.clone(), Value::Null]);
            assert_eq!(array_value(&array, 0, &ty).unwrap(), value, "{ty}");
            assert_eq!(array_value(&array, 1, &ty).unwrap(), Value::Null);
        }
    }

    #[test]
    fn column_builders_agree_with_values_to_array() {
        let cases = [
            (KalamType::Boolean, Value::Boolean(true)),
            (KalamType::SmallInt, Value::SmallInt(-3)),
            (KalamType::Int, Value::Int(7)),
            (KalamType::BigInt, Value::BigInt(-9)),
            (KalamType::Float, Value::Float(1.5)),
            (KalamType::Double, Value::Double(2.25)),
            (
                KalamType::Decimal {
                    precision: 9,
                    scale: 2,
                },
                Value::Decimal {
                    unscaled: 1234,
                    precision: 9,
                    scale: 2,
                },
            ),
            (KalamType::Text, Value::Text("x".into())),
            (KalamType::Json, Value::Json("[1]".into())),
            (KalamType::Uuid, Value::Uuid([7; 16])),
            (KalamType::Bytes, Value::Bytes(vec![1, 2])),
            (KalamType::Date, Value::Date(19000)),
            (KalamType::Timestamp, Value::Timestamp(1_000_001)),
        ];
        // `values_to_array` is built on `ColumnBuilder`: the arrays are checked by
        // reading them back with `array_value`, which reads Arrow on its own.
        for (ty, value) in cases {
            let other = match ty {
                KalamType::Boolean => Value::Int(1),
                _ => Value::Boolean(false),
            };
            let values = [value.clone(), Value::Null, other];
            let mut builder = ColumnBuilder::new(&ty, 3);
            for v in &values {
                builder.append(CellRef::of(v));
            }
            let built = builder.finish();
            assert_eq!(built.data_type(), &arrow_type(&ty), "{ty}");
            assert_eq!(array_value(&built, 0, &ty).unwrap(), value, "{ty}");
            assert_eq!(array_value(&built, 1, &ty).unwrap(), Value::Null, "{ty}");
            assert_eq!(
                array_value(&built, 2, &ty).unwrap(),
                Value::Null,
                "{ty}: a cell of another type is NULL"
            );
            assert_eq!(builder.finish().len(), 0, "{ty}: the builder starts over");
        }
    }

    #[test]
    fn json_output() {
        let f = field(
            "d",
            &KalamType::Decimal {
                precision: 9,
                scale: 2,
            },
            true,
        );
        let array = values_to_array(
            &KalamType::Decimal {
                precision: 9,
                scale: 2,
            },
            &[Value::Decimal {
                unscaled: -5,
                precision: 9,
                scale: 2,
            }],
        );
        assert_eq!(column_to_json(&f, &array), vec![serde_json::json!("-0.05")]);
        let f = field("j", &KalamType::Json, true);
        let array = values_to_array(&KalamType::Json, &[Value::Json("{\"a\":1}".into())]);
        assert_eq!(column_to_json(&f, &array), vec![serde_json::json!({"a": 1})]);
        assert_eq!(api_type_name(&f), "Json");
    }
}
