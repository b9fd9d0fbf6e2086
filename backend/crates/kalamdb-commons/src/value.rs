//! Typed cell values and their conversions from literals.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

use crate::error::{KalamError, KalamResult};
use crate::types::KalamType;

/// One cell. Every non-null variant matches exactly one [`KalamType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    SmallInt(i16),
    Int(i32),
    BigInt(i64),
    Float(f32),
    Double(f64),
    /// `unscaled * 10^-scale`.
    Decimal {
        unscaled: i128,
        precision: u8,
        scale: u8,
    },
    Text(String),
    Bytes(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// Valid JSON text.
    Json(String),
    Uuid([u8; 16]),
}

/// A value as it arrives in SQL text or JSON parameters, before it meets a column type.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Literal {
    Null,
    Boolean(bool),
    /// The exact digits as written, so DECIMAL columns lose nothing.
    Number(String),
    String(String),
    /// A JSON array or object from request parameters.
    Json(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as the server prints it in messages (not for SQL round-trips).
    pub fn display(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Boolean(b) => b.to_string(),
            Value::SmallInt(v) => v.to_string(),
            Value::Int(v) => v.to_string(),
            Value::BigInt(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Double(v) => v.to_string(),
            Value::Decimal { unscaled, scale, .. } => format_decimal(*unscaled, *scale),
            Value::Text(s) | Value::Json(s) => s.clone(),
            Value::Bytes(b) => format!("\\x{}", hex(b)),
            Value::Date(d) => format_date(*d),
            Value::Timestamp(t) => format_timestamp(*t),
            Value::Uuid(u) => uuid::Uuid::from_bytes(*u).hyphenated().to_string(),
        }
    }
}

impl Literal {
    /// A JSON value as the literal it stands for (request parameters, NDJSON rows):
    /// numbers keep their text, arrays and objects become JSON text.
    pub fn from_json(value: serde_json::Value) -> Literal {
        match value {
            serde_json::Value::Null => Literal::Null,
            serde_json::Value::Bool(b) => Literal::Boolean(b),
            serde_json::Value::Number(n) => Literal::Number(n.to_string()),
            serde_json::Value::String(s) => Literal::String(s),
            other => Literal::Json(other.to_string()),
        }
    }

    /// Converts the literal to a value of the column type, or says why it cannot.
    pub fn to_value(&self, ty: &KalamType) -> KalamResult<Value> {
        match self {
            Literal::Null => Ok(Value::Null),
            Literal::Boolean(b) => match ty {
                KalamType::Boolean => Ok(Value::Boolean(*b)),
                KalamType::Text => Ok(Value::Text(b.to_string())),
                KalamType::Json => Ok(Value::Json(b.to_string())),
                _ => Err(mismatch(&b.to_string(), ty)),
            },
            Literal::Number(n) => number_to_value(n, ty),
            Literal::String(s) => parse_text(s, ty),
            Literal::Json(s) => match ty {
                KalamType::Json | KalamType::Text => parse_text(s, ty),
                _ => Err(mismatch(s, ty)),
            },
        }
    }
}

fn mismatch(text: &str, ty: &KalamType) -> KalamError {
    let shown: String = text.chars().take(64).collect();
    KalamError::type_mismatch(format!("value '{shown}' is not a valid {ty}"))
}

fn number_to_value(n: &str, ty: &KalamType) -> KalamResult<Value> {
    let int = || n.parse::<i64>().map_err(|_| mismatch(n, ty));
    match ty {
        KalamType::SmallInt => i16::try_from(int()?)
            .map(Value::SmallInt)
            .map_err(|_| mismatch(n, ty)),
        KalamType::Int => i32::try_from(int()?).map(Value::Int).map_err(|_| mismatch(n, ty)),
        KalamType::BigInt => int().map(Value::BigInt),
        KalamType::Float => n.parse::<f32>().map(Value::Float).map_err(|_| mismatch(n, ty)),
        KalamType::Double => n.parse::<f64>().map(Value::Double).map_err(|_| mismatch(n, ty)),
        KalamType::Decimal { precision, scale } => parse_decimal(n, *precision, *scale)
            .map(|unscaled| Value::Decimal {
                unscaled,
                precision: *precision,
                scale: *scale,
            })
            .ok_or_else(|| mismatch(n, ty)),
        KalamType::Text => Ok(Value::Text(n.to_string())),
        KalamType::Json => parse_text(n, ty),
        KalamType::Timestamp => int().map(Value::Timestamp),
        _ => Err(mismatch(n, ty)),
    }
}

/// Parses text into a value of `ty` (the form used for quoted SQL literals).
pub fn parse_text(s: &str, ty: &KalamType) -> KalamResult<Value> {
    let t = s.trim();
    match ty {
        KalamType::Text => Ok(Value::Text(s.to_string())),
        KalamType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
            "false" | "f" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(mismatch(s, ty)),
        },
        KalamType::SmallInt
        | KalamType::Int
        | KalamType::BigInt
        | KalamType::Float
        | KalamType::Double
        | KalamType::Decimal { .. } => number_to_value(t, ty),
        KalamType::Bytes => Ok(Value::Bytes(parse_bytes(s))),
        KalamType::Date => parse_date(t).map(Value::Date).ok_or_else(|| mismatch(s, ty)),
        KalamType::Timestamp => parse_timestamp(t)
            .map(Value::Timestamp)
            .ok_or_else(|| mismatch(s, ty)),
        KalamType::Json => serde_json::from_str::<serde_json::Value>(s)
            .map(|_| Value::Json(s.to_string()))
            .map_err(|e| KalamError::type_mismatch(format!("invalid JSON value: {e}"))),
        KalamType::Uuid => uuid::Uuid::parse_str(t)
            .map(|u| Value::Uuid(*u.as_bytes()))
            .map_err(|_| mismatch(s, ty)),
    }
}

/// `\x0a0b` (PostgreSQL hex form) or the UTF-8 bytes of the text.
fn parse_bytes(s: &str) -> Vec<u8> {
    if let Some(h) = s.strip_prefix("\\x")
        && h.len() % 2 == 0
        && let Some(bytes) = (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
    {
        return bytes;
    }
    s.as_bytes().to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `[-]digits[.digits]` into an unscaled integer with `scale` fraction digits;
/// `None` when it does not fit `precision` digits or drops non-zero fraction digits.
pub fn parse_decimal(text: &str, precision: u8, scale: u8) -> Option<i128> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let scale = scale as usize;
    if frac_part.len() > scale && frac_part[scale..].bytes().any(|b| b != b'0') {
        return None;
    }
    let mut frac = frac_part[..frac_part.len().min(scale)].to_string();
    while frac.len() < scale {
        frac.push('0');
    }
    let int_trimmed = int_part.trim_start_matches('0');
    if int_trimmed.len() + scale > precision as usize {
        return None;
    }
    let all = format!("{int_trimmed}{frac}");
    let unscaled: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
    Some(if negative { -unscaled } else { unscaled })
}

pub fn format_decimal(unscaled: i128, scale: u8) -> String {
    if scale == 0 {
        return unscaled.to_string();
    }
    let negative = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    format!("{}{int_part}.{frac_part}", if negative { "-" } else { "" })
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

pub fn parse_date(s: &str) -> Option<i32> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

pub fn format_date(days: i32) -> String {
    NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

/// Accepts RFC 3339 (`2024-05-01T10:00:00Z`, with offset), `2024-05-01 10:00:00[.ffffff]`
/// (read as UTC) and a bare date (midnight UTC).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(t.timestamp_micros());
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// RFC 3339 in UTC with as many fraction digits as needed: `2024-05-01T10:00:00.5Z`.
pub fn format_timestamp(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip() {
        let check = |text: &str, p: u8, s: u8, expected: Option<i128>, shown: &str| {
            let parsed = parse_decimal(text, p, s);
            assert_eq!(parsed, expected, "{text}");
            if let Some(v) = parsed {
                assert_eq!(format_decimal(v, s), shown);
            }
        };
        check("12.5", 10, 2, Some(1250), "12.50");
        check("-0.05", 10, 2, Some(-5), "-0.05");
        check("7", 5, 0, Some(7), "7");
        check("1.234", 10, 2, None, "");
        check("1.230", 10, 2, Some(123), "1.23");
        check("123456", 5, 2, None, "");
        check("abc", 5, 2, None, "");
    }

    #[test]
    fn timestamps_and_dates() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_timestamp("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_timestamp("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_timestamp("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(format_timestamp(1_500_000), "1970-01-01T00:00:01.500Z");
        assert_eq!(parse_date("1970-01-11"), Some(10));
        assert_eq!(format_date(10), "1970-01-11");
    }

    #[test]
    fn literals_meet_types() {
        let n = Literal::Number("42".into());
        assert_eq!(n.to_value(&KalamType::Int).unwrap(), Value::Int(42));
        assert_eq!(
            Literal::Number("70000".into())
                .to_value(&KalamType::SmallInt)
                .unwrap_err()
                .code,
            crate::ErrorCode::TypeMismatch
        );
        assert!(Literal::String("x".into()).to_value(&KalamType::BigInt).is_err());
        assert_eq!(
            Literal::String("{\"a\":1}".into())
                .to_value(&KalamType::Json)
                .unwrap(),
            Value::Json("{\"a\":1}".into())
        );
        assert!(Literal::String("{".into()).to_value(&KalamType::Json).is_err());
        assert_eq!(
            Literal::String("\\x0aff".into())
                .to_value(&KalamType::Bytes)
                .unwrap(),
            Value::Bytes(vec![0x0a, 0xff])
        );
    }
}
