//! Conversions between KalamDB values and Arrow arrays.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType,
};
use kalamdb_commons::value::parse_text;
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

/// The rows of one statement as Arrow record batches, read as the stream is
/// polled (`KalamDb::execute_rows`). Errors inside the stream are [`KalamError`]s
/// wrapped as `DataFusionError::External`.
pub struct RowStream {
    pub schema: datafusion::arrow::datatypes::SchemaRef,
    pub batches: datafusion::execution::SendableRecordBatchStream,
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
}
