//! The row codec: how one row version is stored as a RocksDB value.
//!
//! ```text
//! row   : format u8 (= 1) | flags u8 (bit 0: _deleted) | cell_count varint | cell*
//! cell  : column_id varint | tag u8 | payload
//! ```
//! Column ids are stable (never reused after `DROP COLUMN`), so a row stays readable
//! whatever `ALTER TABLE` did after it was written: a cell whose column is gone is
//! skipped, a column without a cell (added later) reads as its default. Column id 0 is
//! the hidden `_id` of tables without a primary key. The tags make every row readable
//! without its schema. Integers are little-endian, lengths are LEB128 varints.

use kalamdb_commons::Value;

pub const ROW_FORMAT_V1: u8 = 1;
const FLAG_DELETED: u8 = 1;

const TAG_NULL: u8 = 0;
const TAG_BOOLEAN: u8 = 1;
const TAG_SMALLINT: u8 = 2;
const TAG_INT: u8 = 3;
const TAG_BIGINT: u8 = 4;
const TAG_FLOAT: u8 = 5;
const TAG_DOUBLE: u8 = 6;
const TAG_DECIMAL: u8 = 7;
const TAG_TEXT: u8 = 8;
const TAG_BYTES: u8 = 9;
const TAG_DATE: u8 = 10;
const TAG_TIMESTAMP: u8 = 11;
const TAG_JSON: u8 = 12;
const TAG_UUID: u8 = 13;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowCodecError {
    #[error("row value is truncated")]
    Truncated,
    #[error("unknown row format version {0}")]
    UnknownFormat(u8),
    #[error("unknown cell tag {0}")]
    UnknownTag(u8),
    #[error("text cell is not valid UTF-8")]
    InvalidUtf8,
    #[error("{0} bytes after the end of a cell")]
    TrailingBytes(usize),
}

/// One decoded row version.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedRow {
    pub deleted: bool,
    /// `(column_id, value)` in the order they were written.
    pub cells: Vec<(u32, Value)>,
}

impl DecodedRow {
    pub fn get(&self, column_id: u32) -> Option<&Value> {
        self.cells.iter().find(|(id, _)| *id == column_id).map(|(_, v)| v)
    }
}

pub fn encode_row<'a>(
    deleted: bool,
    cells: impl ExactSizeIterator<Item = (u32, &'a Value)>,
    out: &mut Vec<u8>,
) {
    out.push(ROW_FORMAT_V1);
    out.push(if deleted { FLAG_DELETED } else { 0 });
    put_varint(out, cells.len() as u64);
    for (column_id, value) in cells {
        put_varint(out, column_id as u64);
        encode_value(value, out);
    }
}

/// The `_deleted` flag of an encoded row, without decoding its cells.
pub fn is_tombstone(bytes: &[u8]) -> Result<bool, RowCodecError> {
    match bytes {
        [ROW_FORMAT_V1, flags, ..] => Ok(flags & FLAG_DELETED != 0),
        [format, _, ..] => Err(RowCodecError::UnknownFormat(*format)),
        _ => Err(RowCodecError::Truncated),
    }
}

pub fn decode_row(bytes: &[u8]) -> Result<DecodedRow, RowCodecError> {
    let mut r = Reader { bytes, pos: 0 };
    let format = r.u8()?;
    if format != ROW_FORMAT_V1 {
        return Err(RowCodecError::UnknownFormat(format));
    }
    let deleted = r.u8()? & FLAG_DELETED != 0;
    let count = r.varint()? as usize;
    let mut cells = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let column_id = r.varint()? as u32;
        cells.push((column_id, r.value()?));
    }
    Ok(DecodedRow { deleted, cells })
}

/// One stored cell, borrowed from the encoded row (no allocation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellRef<'a> {
    Null,
    Boolean(bool),
    SmallInt(i16),
    Int(i32),
    BigInt(i64),
    Float(f32),
    Double(f64),
    Decimal {
        unscaled: i128,
        precision: u8,
        scale: u8,
    },
    Text(&'a str),
    Bytes(&'a [u8]),
    Date(i32),
    Timestamp(i64),
    Json(&'a str),
    Uuid([u8; 16]),
}

impl<'a> CellRef<'a> {
    /// The cell of a decoded value.
    pub fn of(value: &'a Value) -> CellRef<'a> {
        match value {
            Value::Null => CellRef::Null,
            Value::Boolean(v) => CellRef::Boolean(*v),
            Value::SmallInt(v) => CellRef::SmallInt(*v),
            Value::Int(v) => CellRef::Int(*v),
            Value::BigInt(v) => CellRef::BigInt(*v),
            Value::Float(v) => CellRef::Float(*v),
            Value::Double(v) => CellRef::Double(*v),
            Value::Decimal {
                unscaled,
                precision,
                scale,
            } => CellRef::Decimal {
                unscaled: *unscaled,
                precision: *precision,
                scale: *scale,
            },
            Value::Text(s) => CellRef::Text(s),
            Value::Bytes(b) => CellRef::Bytes(b),
            Value::Date(v) => CellRef::Date(*v),
            Value::Timestamp(v) => CellRef::Timestamp(*v),
            Value::Json(s) => CellRef::Json(s),
            Value::Uuid(u) => CellRef::Uuid(*u),
        }
    }
}

impl CellRef<'_> {
    /// The cell as an owned value.
    pub fn to_value(self) -> Value {
        match self {
            CellRef::Null => Value::Null,
            CellRef::Boolean(v) => Value::Boolean(v),
            CellRef::SmallInt(v) => Value::SmallInt(v),
            CellRef::Int(v) => Value::Int(v),
            CellRef::BigInt(v) => Value::BigInt(v),
            CellRef::Float(v) => Value::Float(v),
            CellRef::Double(v) => Value::Double(v),
            CellRef::Decimal {
                unscaled,
                precision,
                scale,
            } => Value::Decimal {
                unscaled,
                precision,
                scale,
            },
            CellRef::Text(s) => Value::Text(s.to_string()),
            CellRef::Bytes(b) => Value::Bytes(b.to_vec()),
            CellRef::Date(v) => Value::Date(v),
            CellRef::Timestamp(v) => Value::Timestamp(v),
            CellRef::Json(s) => Value::Json(s.to_string()),
            CellRef::Uuid(u) => Value::Uuid(u),
        }
    }
}

/// Visits the cells of an encoded row without allocating: `visit(column_id, cell)`
/// in the order they were written. Returns the row's `_deleted` flag.
pub fn visit_cells<'a>(
    bytes: &'a [u8],
    mut visit: impl FnMut(u32, CellRef<'a>),
) -> Result<bool, RowCodecError> {
    let mut r = Reader { bytes, pos: 0 };
    let format = r.u8()?;
    if format != ROW_FORMAT_V1 {
        return Err(RowCodecError::UnknownFormat(format));
    }
    let deleted = r.u8()? & FLAG_DELETED != 0;
    let count = r.varint()?;
    for _ in 0..count {
        let column_id = r.varint()? as u32;
        visit(column_id, r.cell()?);
    }
    Ok(deleted)
}

/// Decodes one value written by [`encode_value`]; the bytes must hold exactly it.
pub fn decode_value(bytes: &[u8]) -> Result<Value, RowCodecError> {
    let mut r = Reader { bytes, pos: 0 };
    let value = r.value()?;
    if r.pos != bytes.len() {
        return Err(RowCodecError::TrailingBytes(bytes.len() - r.pos));
    }
    Ok(value)
}

/// Encodes one value as `tag | payload` (a row's cell; also the key cell that
/// ends a secondary-index entry, and the `pk` keys of format version 1).
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Boolean(b) => {
            out.push(TAG_BOOLEAN);
            out.push(*b as u8);
        }
        Value::SmallInt(v) => {
            out.push(TAG_SMALLINT);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Int(v) => {
            out.push(TAG_INT);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::BigInt(v) => {
            out.push(TAG_BIGINT);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Float(v) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Double(v) => {
            out.push(TAG_DOUBLE);
            out.extend_from_slice(&v.to_le_bytes());
        }
        Value::Decimal {
            unscaled,
            precision,
            scale,
        } => {
            out.push(TAG_DECIMAL);
            out.push(*precision);
            out.push(*scale);
            out.extend_from_slice(&unscaled.to_le_bytes());
        }
        Value::Text(s) => put_bytes(out, TAG_TEXT, s.as_bytes()),
        Value::Bytes(b) => put_bytes(out, TAG_BYTES, b),
        Value::Date(d) => {
            out.push(TAG_DATE);
            out.extend_from_slice(&d.to_le_bytes());
        }
        Value::Timestamp(t) => {
            out.push(TAG_TIMESTAMP);
            out.extend_from_slice(&t.to_le_bytes());
        }
        Value::Json(s) => put_bytes(out, TAG_JSON, s.as_bytes()),
        Value::Uuid(u) => {
            out.push(TAG_UUID);
            out.extend_from_slice(u);
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RowCodecError> {
        let end = self.pos.checked_add(n).ok_or(RowCodecError::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(RowCodecError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RowCodecError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self) -> Result<u8, RowCodecError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, RowCodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RowCodecError::Truncated)
    }

    fn var_bytes(&mut self) -> Result<&'a [u8], RowCodecError> {
        let len = self.varint()? as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str, RowCodecError> {
        std::str::from_utf8(self.var_bytes()?).map_err(|_| RowCodecError::InvalidUtf8)
    }

    fn cell(&mut self) -> Result<CellRef<'a>, RowCodecError> {
        let tag = self.u8()?;
        Ok(match tag {
            TAG_NULL => CellRef::Null,
            TAG_BOOLEAN => CellRef::Boolean(self.u8()? != 0),
            TAG_SMALLINT => CellRef::SmallInt(i16::from_le_bytes(self.array()?)),
            TAG_INT => CellRef::Int(i32::from_le_bytes(self.array()?)),
            TAG_BIGINT => CellRef::BigInt(i64::from_le_bytes(self.array()?)),
            TAG_FLOAT => CellRef::Float(f32::from_le_bytes(self.array()?)),
            TAG_DOUBLE => CellRef::Double(f64::from_le_bytes(self.array()?)),
            TAG_DECIMAL => {
                let precision = self.u8()?;
                let scale = self.u8()?;
                CellRef::Decimal {
                    unscaled: i128::from_le_bytes(self.array()?),
                    precision,
                    scale,
                }
            }
            TAG_TEXT => CellRef::Text(self.str()?),
            TAG_BYTES => CellRef::Bytes(self.var_bytes()?),
            TAG_DATE => CellRef::Date(i32::from_le_bytes(self.array()?)),
            TAG_TIMESTAMP => CellRef::Timestamp(i64::from_le_bytes(self.array()?)),
            TAG_JSON => CellRef::Json(self.str()?),
            TAG_UUID => CellRef::Uuid(self.array()?),
            other => return Err(RowCodecError::UnknownTag(other)),
        })
    }

    fn value(&mut self) -> Result<Value, RowCodecError> {
        Ok(self.cell()?.to_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_values() -> Vec<Value> {
        vec![
            Value::Null,
            Value::Boolean(true),
            Value::SmallInt(-3),
            Value::Int(1 << 20),
            Value::BigInt(-1),
            Value::Float(1.5),
            Value::Double(-2.25),
            Value::Decimal {
                unscaled: -12345,
                precision: 10,
                scale: 2,
            },
            Value::Text("héllo".into()),
            Value::Bytes(vec![0, 255, 7]),
            Value::Date(19000),
            Value::Timestamp(1_700_000_000_000_000),
            Value::Json("{\"a\":[1,2]}".into()),
            Value::Uuid([9; 16]),
        ]
    }

    #[test]
    fn visiting_cells_agrees_with_decoding() {
        let values = all_values();
        let mut bytes = Vec::new();
        encode_row(
            true,
            values.iter().enumerate().map(|(i, v)| (i as u32 + 1, v)),
            &mut bytes,
        );
        let mut seen = Vec::new();
        let deleted = visit_cells(&bytes, |id, cell| seen.push((id, format!("{cell:?}")))).unwrap();
        assert!(deleted);
        let expected: Vec<(u32, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32 + 1, format!("{:?}", CellRef::of(v))))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(
            visit_cells(&bytes[..bytes.len() - 1], |_, _| ()),
            Err(RowCodecError::Truncated)
        );
    }

    #[test]
    fn every_type_round_trips() {
        let values = all_values();
        let mut out = Vec::new();
        encode_row(
            false,
            values.iter().enumerate().map(|(i, v)| (i as u32 + 300, v)),
            &mut out,
        );
        let row = decode_row(&out).unwrap();
        assert!(!row.deleted);
        assert_eq!(row.cells.len(), values.len());
        for (i, v) in values.iter().enumerate() {
            assert_eq!(row.get(i as u32 + 300), Some(v));
        }
    }

    #[test]
    fn tombstone_flag_and_corrupt_input() {
        let mut out = Vec::new();
        encode_row(true, std::iter::empty(), &mut out);
        assert!(decode_row(&out).unwrap().deleted);
        assert_eq!(is_tombstone(&out), Ok(true));
        let mut full = Vec::new();
        encode_row(false, [(1u32, &Value::Text("abc".into()))].into_iter(), &mut full);
        for cut in 0..full.len() {
            assert!(decode_row(&full[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_row(&[9, 0, 0]), Err(RowCodecError::UnknownFormat(9)));
        assert_eq!(decode_row(&[1, 0, 1, 1, 99]), Err(RowCodecError::UnknownTag(99)));
    }
}
