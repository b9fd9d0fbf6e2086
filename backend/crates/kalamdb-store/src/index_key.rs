//! Keys of the `idx` column family: secondary-index entries of hot rows.
//!
//! ```text
//! index prefix : table_id u32 BE | index_id u32 BE
//! scope prefix : index prefix | scope_len u8 | scope bytes
//! entry key    : scope prefix | value* | pk cell (the row codec's tag | payload)
//! entry value  : _seq u64 BE of the row version the entry was made from
//! ```
//! Each indexed value is encoded so that byte order is value order (a range of
//! values is a range of keys): `0x00` for NULL (first), else `0x01` and
//! - BOOLEAN: one byte 0/1;
//! - SMALLINT, INT, BIGINT, DATE, TIMESTAMP: the value as i64, big-endian, sign bit
//!   flipped;
//! - FLOAT, DOUBLE: the value as f64 bits, big-endian, all bits flipped for negative
//!   numbers and the sign bit flipped otherwise (-0.0 is stored as 0.0; NaN last);
//! - DECIMAL: the unscaled i128, big-endian, sign bit flipped (one scale per column);
//! - TEXT: the UTF-8 bytes with `0x00` written as `0x00 0xff`, ended by `0x00 0x00`
//!   (so no value's encoding is a prefix of a greater one's); BYTES and JSON alike;
//! - UUID: the 16 bytes.
//!
//! BYTES and JSON columns are not indexable; the same encoding is the `pk` column
//! family's key (see [`crate::keys`]), where any key type may appear.

use kalamdb_commons::Value;

use crate::keys::MAX_SCOPE_LEN;

/// `table_id | index_id`: every entry of one index.
pub fn index_prefix(table_id: u32, index_id: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(8);
    key.extend_from_slice(&table_id.to_be_bytes());
    key.extend_from_slice(&index_id.to_be_bytes());
    key
}

/// `table_id | index_id | scope_len | scope`: one scope's entries of one index.
pub fn index_scope_prefix(table_id: u32, index_id: u32, scope: &str) -> Vec<u8> {
    assert!(
        scope.len() <= MAX_SCOPE_LEN,
        "scope longer than {MAX_SCOPE_LEN} bytes"
    );
    let mut key = index_prefix(table_id, index_id);
    key.push(scope.len() as u8);
    key.extend_from_slice(scope.as_bytes());
    key
}

/// Whether values of this kind can be indexed.
pub fn indexable(value: &Value) -> bool {
    !matches!(value, Value::Bytes(_) | Value::Json(_))
}

/// Appends the order-preserving encoding of `value` (see the module documentation).
pub fn encode_ordered(value: &Value, out: &mut Vec<u8>) {
    let int = |n: i64, out: &mut Vec<u8>| {
        out.push(1);
        out.extend_from_slice(&((n as u64) ^ (1 << 63)).to_be_bytes());
    };
    let bytes = |b: &[u8], out: &mut Vec<u8>| {
        out.push(1);
        for &byte in b {
            out.push(byte);
            if byte == 0 {
                out.push(0xff);
            }
        }
        out.extend_from_slice(&[0, 0]);
    };
    match value {
        Value::Null => out.push(0),
        Value::Boolean(b) => {
            out.push(1);
            out.push(*b as u8);
        }
        Value::SmallInt(n) => int(*n as i64, out),
        Value::Int(n) => int(*n as i64, out),
        Value::BigInt(n) => int(*n, out),
        Value::Date(n) => int(*n as i64, out),
        Value::Timestamp(n) => int(*n, out),
        Value::Float(f) => float(*f as f64, out),
        Value::Double(f) => float(*f, out),
        Value::Decimal { unscaled, .. } => {
            out.push(1);
            out.extend_from_slice(&((*unscaled as u128) ^ (1 << 127)).to_be_bytes());
        }
        Value::Text(s) | Value::Json(s) => bytes(s.as_bytes(), out),
        Value::Bytes(b) => bytes(b, out),
        Value::Uuid(bytes) => {
            out.push(1);
            out.extend_from_slice(bytes);
        }
    }
}

fn float(f: f64, out: &mut Vec<u8>) {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let ordered = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
    out.push(1);
    out.extend_from_slice(&ordered.to_be_bytes());
}

/// The key of one entry: `values` in index-column order, then the row's key cell.
pub fn index_entry_key(table_id: u32, index_id: u32, scope: &str, values: &[&Value], pk: &Value) -> Vec<u8> {
    let mut key = index_scope_prefix(table_id, index_id, scope);
    for value in values {
        encode_ordered(value, &mut key);
    }
    crate::row_codec::encode_value(pk, &mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_ordered(value, &mut out);
        out
    }

    #[test]
    fn byte_order_is_value_order() {
        let ordered = [
            vec![
                Value::Null,
                Value::BigInt(i64::MIN),
                Value::BigInt(-1),
                Value::BigInt(0),
                Value::BigInt(7),
                Value::BigInt(i64::MAX),
            ],
            vec![
                Value::Null,
                Value::Double(f64::NEG_INFINITY),
                Value::Double(-2.5),
                Value::Double(-0.0),
                Value::Double(1e-9),
                Value::Double(3.0),
                Value::Double(f64::INFINITY),
            ],
            vec![
                Value::Null,
                Value::Text(String::new()),
                Value::Text("a".into()),
                Value::Text("a\0".into()),
                Value::Text("a\0b".into()),
                Value::Text("ab".into()),
                Value::Text("b".into()),
            ],
            vec![
                Value::Decimal {
                    unscaled: -500,
                    precision: 10,
                    scale: 2,
                },
                Value::Decimal {
                    unscaled: 3,
                    precision: 10,
                    scale: 2,
                },
                Value::Decimal {
                    unscaled: 500,
                    precision: 10,
                    scale: 2,
                },
            ],
            vec![Value::Boolean(false), Value::Boolean(true)],
        ];
        for values in ordered {
            for pair in values.windows(2) {
                assert!(
                    encoded(&pair[0]) < encoded(&pair[1]),
                    "{:?} < {:?}",
                    pair[0],
                    pair[1]
                );
            }
        }
        assert_eq!(encoded(&Value::Double(-0.0)), encoded(&Value::Double(0.0)));
        // Mixed integer widths of one value encode alike.
        assert_eq!(encoded(&Value::Int(5)), encoded(&Value::BigInt(5)));
    }

    #[test]
    fn a_text_value_never_prefixes_a_greater_one_with_what_follows() {
        // "a" followed by the pk cell must sort before "a\0..." entries' keys.
        let mut a = encoded(&Value::Text("a".into()));
        a.extend_from_slice(&[0xff, 0xff]);
        let b = encoded(&Value::Text("a\0".into()));
        assert!(a < b);
    }
}
