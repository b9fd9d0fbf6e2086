//! Column types of KalamDB tables.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The type of a table column. The catalog stores it; the row codec, the Arrow
/// schema and the API's `data_type` names all derive from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum KalamType {
    Boolean,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    Decimal { precision: u8, scale: u8 },
    Text,
    Bytes,
    Date,
    Timestamp,
    Json,
    Uuid,
}

/// The largest DECIMAL precision (Arrow's Decimal128).
pub const MAX_DECIMAL_PRECISION: u8 = 38;

impl KalamType {
    /// The name used in the API's `columns[].data_type` and in `DESCRIBE TABLE`.
    pub fn api_name(&self) -> String {
        match self {
            KalamType::Boolean => "Boolean".into(),
            KalamType::SmallInt => "SmallInt".into(),
            KalamType::Int => "Int".into(),
            KalamType::BigInt => "BigInt".into(),
            KalamType::Float => "Float".into(),
            KalamType::Double => "Double".into(),
            KalamType::Decimal { precision, scale } => format!("Decimal({precision},{scale})"),
            KalamType::Text => "Text".into(),
            KalamType::Bytes => "Bytes".into(),
            KalamType::Date => "Date".into(),
            KalamType::Timestamp => "Timestamp".into(),
            KalamType::Json => "Json".into(),
            KalamType::Uuid => "Uuid".into(),
        }
    }

    /// The type an [`api_name`](Self::api_name) names (`None` for names of no
    /// column type, such as DataFusion's own `Null`).
    pub fn from_api_name(name: &str) -> Option<KalamType> {
        Some(match name {
            "Boolean" => KalamType::Boolean,
            "SmallInt" => KalamType::SmallInt,
            "Int" => KalamType::Int,
            "BigInt" => KalamType::BigInt,
            "Float" => KalamType::Float,
            "Double" => KalamType::Double,
            "Text" => KalamType::Text,
            "Bytes" => KalamType::Bytes,
            "Date" => KalamType::Date,
            "Timestamp" => KalamType::Timestamp,
            "Json" => KalamType::Json,
            "Uuid" => KalamType::Uuid,
            other => {
                let inner = other.strip_prefix("Decimal(")?.strip_suffix(')')?;
                let (precision, scale) = inner.split_once(',')?;
                KalamType::Decimal {
                    precision: precision.trim().parse().ok()?,
                    scale: scale.trim().parse().ok()?,
                }
            }
        })
    }

    /// The SQL spelling DataFusion understands in a `CAST(... AS <type>)`.
    pub fn cast_sql(&self) -> String {
        match self {
            KalamType::Boolean => "BOOLEAN".into(),
            KalamType::SmallInt => "SMALLINT".into(),
            KalamType::Int => "INT".into(),
            KalamType::BigInt => "BIGINT".into(),
            KalamType::Float => "REAL".into(),
            KalamType::Double => "DOUBLE".into(),
            KalamType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            KalamType::Text | KalamType::Json | KalamType::Uuid => "VARCHAR".into(),
            KalamType::Bytes => "BYTEA".into(),
            KalamType::Date => "DATE".into(),
            KalamType::Timestamp => "TIMESTAMP".into(),
        }
    }

    /// The SQL name of the type as written in `CREATE TABLE` (for `DESCRIBE` and docs).
    pub fn sql_name(&self) -> String {
        match self {
            KalamType::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
            other => other.api_name().to_ascii_uppercase(),
        }
    }
}

impl fmt::Display for KalamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql_name())
    }
}

/// What a column gets when an INSERT does not name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DefaultValue {
    /// A constant, converted to the column type when the table is created.
    Literal { value: crate::value::Literal },
    /// `NOW()`: the statement's timestamp.
    Now,
    /// `SNOWFLAKE_ID()`: a unique, time-ordered BIGINT.
    SnowflakeId,
    /// `UUID_V7()`: a time-ordered UUID.
    UuidV7,
    /// `CURRENT_USER()`: the caller's user name.
    CurrentUser,
    /// An identity column (`SERIAL`, `GENERATED ALWAYS | BY DEFAULT AS IDENTITY`): the
    /// next value of the column's sequence (1, 2, 3, …; never handed out twice, gaps
    /// after a restart). `always`: an INSERT may not give a value.
    Identity { always: bool },
}

impl DefaultValue {
    /// The SQL spelling, for `DESCRIBE TABLE` and `system.columns`.
    pub fn sql(&self) -> String {
        use crate::value::Literal;
        match self {
            DefaultValue::Literal { value } => match value {
                Literal::Null => "NULL".into(),
                Literal::Boolean(b) => b.to_string().to_ascii_uppercase(),
                Literal::Number(n) => n.clone(),
                Literal::String(s) | Literal::Json(s) => format!("'{}'", s.replace('\'', "''")),
            },
            DefaultValue::Now => "NOW()".into(),
            DefaultValue::SnowflakeId => "SNOWFLAKE_ID()".into(),
            DefaultValue::UuidV7 => "UUID_V7()".into(),
            DefaultValue::CurrentUser => "CURRENT_USER()".into(),
            DefaultValue::Identity { always: true } => "GENERATED ALWAYS AS IDENTITY".into(),
            DefaultValue::Identity { always: false } => "GENERATED BY DEFAULT AS IDENTITY".into(),
        }
    }
}

/// When a table's hot rows are flushed automatically: after `rows` hot rows, after
/// `interval_seconds`, or whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushPolicy {
    pub rows: Option<u64>,
    pub interval_seconds: Option<u64>,
}

impl FlushPolicy {
    /// Parses `rows:N`, `interval:S` or `rows:N,interval:S` (N, S > 0).
    pub fn parse(text: &str) -> Result<FlushPolicy, String> {
        let mut policy = FlushPolicy {
            rows: None,
            interval_seconds: None,
        };
        for part in text.split(',') {
            let (key, value) = part
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("FLUSH_POLICY part '{part}' is not key:value"))?;
            let n: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("FLUSH_POLICY value '{value}' must be a whole number > 0"))?;
            let slot = match key.trim().to_ascii_lowercase().as_str() {
                "rows" => &mut policy.rows,
                "interval" => &mut policy.interval_seconds,
                other => return Err(format!("FLUSH_POLICY key '{other}' is not rows or interval")),
            };
            if slot.replace(n).is_some() {
                return Err(format!("FLUSH_POLICY names '{key}' twice"));
            }
        }
        Ok(policy)
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.rows, self.interval_seconds) {
            (Some(r), Some(s)) => write!(f, "rows:{r},interval:{s}"),
            (Some(r), None) => write!(f, "rows:{r}"),
            (None, Some(s)) => write!(f, "interval:{s}"),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FlushPolicy, KalamType};

    #[test]
    fn api_names_round_trip() {
        let types = [
            KalamType::Boolean,
            KalamType::SmallInt,
            KalamType::Int,
            KalamType::BigInt,
            KalamType::Float,
            KalamType::Double,
            KalamType::Decimal {
                precision: 12,
                scale: 3,
            },
            KalamType::Text,
            KalamType::Bytes,
            KalamType::Date,
            KalamType::Timestamp,
            KalamType::Json,
            KalamType::Uuid,
        ];
        for ty in types {
            assert_eq!(KalamType::from_api_name(&ty.api_name()), Some(ty), "{ty}");
        }
        for other in ["Null", "Decimal(x,1)", "Decimal(3", "text"] {
            assert_eq!(KalamType::from_api_name(other), None, "{other}");
        }
    }

    #[test]
    fn flush_policies() {
        let p = FlushPolicy::parse("rows:100, interval:30").unwrap();
        assert_eq!((p.rows, p.interval_seconds), (Some(100), Some(30)));
        assert_eq!(p.to_string(), "rows:100,interval:30");
        for bad in ["rows", "rows:0", "rows:x", "size:5", "rows:1,rows:2", ""] {
            assert!(FlushPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
