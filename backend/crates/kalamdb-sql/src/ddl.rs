//! CREATE TABLE / ALTER TABLE: column specs, types, defaults and table options.

use datafusion::sql::sqlparser::ast::{
    self, ColumnDef, ColumnOption, DataType, ExactNumberInfo, Expr, SqlOption, TableConstraint, UnaryOperator,
};
use kalamdb_commons::types::MAX_DECIMAL_PRECISION;
use kalamdb_commons::{DefaultValue, KalamError, KalamResult, KalamType, Literal, TableType};

use crate::statement::{TableRef, ident_name, object_name_to_table};

/// `CREATE [USER|SHARED|STREAM] TABLE`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub table: TableRef,
    pub table_type: TableType,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnSpec>,
    /// The primary-key column, when there is one.
    pub primary_key: Option<String>,
    /// `UNIQUE` constraints, inline (`email TEXT UNIQUE`) and of the table
    /// (`UNIQUE (a, b)`), in the order written.
    pub unique: Vec<UniqueSpec>,
    pub options: TableOptions,
}

/// One `UNIQUE` constraint: its columns, and its name when written
/// (`CONSTRAINT name UNIQUE …`).
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueSpec {
    pub name: Option<String>,
    pub columns: Vec<String>,
}

/// One column as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpec {
    pub name: String,
    pub data_type: KalamType,
    pub not_null: bool,
    pub default: Option<DefaultValue>,
    pub primary_key: bool,
    /// Declared `UNIQUE` (with its constraint name, if given).
    pub unique: Option<Option<String>>,
    /// `VARCHAR(n)` / `CHAR(n)`: the most characters a value may have.
    pub max_chars: Option<u32>,
}

/// The `WITH (...)` options of CREATE TABLE, as written (validated by the executor).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableOptions {
    pub flush_policy: Option<String>,
    pub compact_policy: Option<String>,
    /// `STORAGE = 'name'`: the storage of the table's Parquet segments.
    pub storage: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub access_level: Option<String>,
}

pub(crate) fn create_table(table_type: TableType, create: ast::CreateTable) -> KalamResult<CreateTable> {
    if create.query.is_some() || create.like.is_some() || create.clone.is_some() {
        return Err(KalamError::unsupported(
            "CREATE TABLE ... AS / LIKE / CLONE is not supported; declare the columns",
        ));
    }
    if create.columns.is_empty() {
        return Err(KalamError::invalid_sql("a table needs at least one column"));
    }
    let mut columns = create
        .columns
        .iter()
        .map(column_spec)
        .collect::<KalamResult<Vec<_>>>()?;
    let mut unique: Vec<UniqueSpec> = (columns.iter())
        .filter_map(|c| {
            c.unique.clone().map(|name| UniqueSpec {
                name,
                columns: vec![c.name.clone()],
            })
        })
        .collect();
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::Unique(u) => {
                refuse_unique_extras(u)?;
                let mut names = Vec::with_capacity(u.columns.len());
                for column in &u.columns {
                    let Expr::Identifier(ident) = &column.column.expr else {
                        return Err(KalamError::invalid_sql("UNIQUE names columns"));
                    };
                    let name = ident_name(ident);
                    if !columns.iter().any(|c| c.name == name) {
                        return Err(KalamError::invalid_sql(format!(
                            "UNIQUE names unknown column '{name}'"
                        )));
                    }
                    if names.contains(&name) {
                        return Err(KalamError::invalid_sql(format!(
                            "column '{name}' is named twice in UNIQUE"
                        )));
                    }
                    names.push(name);
                }
                unique.push(UniqueSpec {
                    name: u.name.as_ref().map(ident_name),
                    columns: names,
                });
            }
            TableConstraint::PrimaryKey(pk) => {
                if pk.columns.len() != 1 {
                    return Err(KalamError::unsupported("a PRIMARY KEY has exactly one column"));
                }
                let Expr::Identifier(ident) = &pk.columns[0].column.expr else {
                    return Err(KalamError::invalid_sql("PRIMARY KEY names a column"));
                };
                let name = ident_name(ident);
                let column = columns.iter_mut().find(|c| c.name == name).ok_or_else(|| {
                    KalamError::invalid_sql(format!("PRIMARY KEY names unknown column '{name}'"))
                })?;
                column.primary_key = true;
            }
            other => {
                return Err(KalamError::unsupported(format!(
                    "table constraint not supported: {other}"
                )));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for column in &columns {
        if !seen.insert(column.name.as_str()) {
            return Err(KalamError::invalid_sql(format!(
                "column '{}' is declared twice",
                column.name
            )));
        }
    }
    let pk_columns: Vec<&ColumnSpec> = columns.iter().filter(|c| c.primary_key).collect();
    if pk_columns.len() > 1 {
        return Err(KalamError::unsupported(
            "a table has at most one PRIMARY KEY column",
        ));
    }
    let primary_key = pk_columns.first().map(|c| c.name.clone());
    for column in columns.iter_mut().filter(|c| c.primary_key) {
        column.not_null = true;
    }
    Ok(CreateTable {
        table: object_name_to_table(&create.name)?,
        table_type,
        if_not_exists: create.if_not_exists,
        columns,
        primary_key,
        unique,
        options: table_options(&create.table_options)?,
    })
}

pub(crate) fn column_spec(def: &ColumnDef) -> KalamResult<ColumnSpec> {
    let name = ident_name(&def.name);
    // PostgreSQL's SERIAL types: an integer column, NOT NULL, with an identity default.
    let serial = match &def.data_type {
        DataType::Custom(type_name, args) if args.is_empty() => {
            match type_name.to_string().to_ascii_lowercase().as_str() {
                "smallserial" | "serial2" => Some(KalamType::SmallInt),
                "serial" | "serial4" => Some(KalamType::Int),
                "bigserial" | "serial8" => Some(KalamType::BigInt),
                _ => None,
            }
        }
        _ => None,
    };
    let mut spec = ColumnSpec {
        data_type: match serial {
            Some(ty) => ty,
            None => kalam_type(&def.data_type)?,
        },
        name,
        not_null: serial.is_some(),
        default: serial.map(|_| DefaultValue::Identity { always: false }),
        primary_key: false,
        unique: None,
        max_chars: char_limit(&def.data_type)?,
    };
    for option in &def.options {
        match &option.option {
            ColumnOption::Unique(u) => {
                refuse_unique_extras(u)?;
                spec.unique = Some(option.name.as_ref().or(u.name.as_ref()).map(ident_name));
            }
            ColumnOption::NotNull => spec.not_null = true,
            ColumnOption::Null => spec.not_null = false,
            ColumnOption::Default(expr) => spec.default = Some(default_value(expr)?),
            ColumnOption::Generated {
                generated_as,
                generation_expr: None,
                ..
            } if *generated_as != ast::GeneratedAs::ExpStored => {
                // `… AS IDENTITY [(sequence options)]`: the options (START, INCREMENT)
                // are not kept; the sequence starts at 1 and counts by 1.
                spec.default = Some(DefaultValue::Identity {
                    always: *generated_as == ast::GeneratedAs::Always,
                });
                spec.not_null = true;
            }
            ColumnOption::PrimaryKey(_) => spec.primary_key = true,
            other => {
                return Err(KalamError::unsupported(format!(
                    "column option not supported on '{}': {other}",
                    spec.name
                )));
            }
        }
    }
    Ok(spec)
}

/// The parts of a UNIQUE constraint KalamDB does not implement are refused, not
/// ignored: `NULLS NOT DISTINCT` (a weaker constraint would be silent), index names,
/// types and options (`UNIQUE KEY k USING …`), `DEFERRABLE`, a column's ASC/DESC.
fn refuse_unique_extras(u: &ast::UniqueConstraint) -> KalamResult<()> {
    let extra = if u.nulls_distinct == ast::NullsDistinctOption::NotDistinct {
        Some("NULLS NOT DISTINCT")
    } else if u.index_name.is_some() || u.index_type.is_some() || !u.index_options.is_empty() {
        Some("an index name, type or option")
    } else if u.characteristics.is_some() {
        Some("DEFERRABLE / INITIALLY")
    } else if (u.columns.iter())
        .any(|c| c.column.options.asc.is_some() || c.column.options.nulls_first.is_some())
    {
        Some("ASC / DESC / NULLS FIRST")
    } else {
        None
    };
    match extra {
        Some(what) => Err(KalamError::unsupported(format!(
            "UNIQUE with {what} is not supported"
        ))),
        None => Ok(()),
    }
}

/// The length `VARCHAR(n)`, `CHARACTER VARYING(n)` and `CHAR(n)` declare (a TEXT
/// column whose values may have at most `n` characters).
fn char_limit(data_type: &DataType) -> KalamResult<Option<u32>> {
    let length = match data_type {
        DataType::Varchar(Some(l))
        | DataType::CharacterVarying(Some(l))
        | DataType::CharVarying(Some(l))
        | DataType::Char(Some(l))
        | DataType::Character(Some(l)) => l,
        // PostgreSQL's CHAR alone is CHAR(1).
        DataType::Char(None) | DataType::Character(None) => return Ok(Some(1)),
        _ => return Ok(None),
    };
    match length {
        datafusion::sql::sqlparser::ast::CharacterLength::IntegerLength { length, .. }
            if (1..=10_485_760).contains(length) =>
        {
            Ok(Some(*length as u32))
        }
        datafusion::sql::sqlparser::ast::CharacterLength::Max => Ok(None),
        _ => Err(KalamError::invalid_sql(format!(
            "length for type {data_type} must be between 1 and 10485760"
        ))),
    }
}

/// Maps a SQL type name to a KalamDB column type.
pub(crate) fn kalam_type(data_type: &DataType) -> KalamResult<KalamType> {
    Ok(match data_type {
        DataType::Bool | DataType::Boolean => KalamType::Boolean,
        DataType::SmallInt(_) | DataType::Int2(_) | DataType::Int16 => KalamType::SmallInt,
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) | DataType::Int32 => KalamType::Int,
        DataType::BigInt(_) | DataType::Int8(_) | DataType::Int64 => KalamType::BigInt,
        DataType::Float(_) | DataType::Float4 | DataType::Float32 | DataType::Real => KalamType::Float,
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 | DataType::Float64 => {
            KalamType::Double
        }
        DataType::Decimal(info) | DataType::Numeric(info) | DataType::Dec(info) => decimal(info)?,
        DataType::Text
        | DataType::String(_)
        | DataType::Varchar(_)
        | DataType::CharacterVarying(_)
        | DataType::CharVarying(_)
        | DataType::Char(_)
        | DataType::Character(_) => KalamType::Text,
        DataType::Bytea
        | DataType::Bytes(_)
        | DataType::Blob(_)
        | DataType::Binary(_)
        | DataType::Varbinary(_) => KalamType::Bytes,
        DataType::Date => KalamType::Date,
        DataType::Timestamp(_, _) | DataType::Datetime(_) => KalamType::Timestamp,
        DataType::JSON | DataType::JSONB => KalamType::Json,
        DataType::Uuid => KalamType::Uuid,
        DataType::Custom(name, _) if name.to_string().eq_ignore_ascii_case("bytes") => KalamType::Bytes,
        other => {
            return Err(KalamError::unsupported(format!(
                "column type {other} is not supported; use BOOLEAN, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, DECIMAL(p,s), TEXT, BYTES, DATE, TIMESTAMP, JSON or UUID"
            )));
        }
    })
}

/// `DECIMAL` alone is `DECIMAL(38,10)`; `DECIMAL(p)` is `DECIMAL(p,0)`.
fn decimal(info: &ExactNumberInfo) -> KalamResult<KalamType> {
    let (precision, scale) = match info {
        ExactNumberInfo::None => (38, 10),
        ExactNumberInfo::Precision(p) => (*p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (*p, (*s).max(-1) as u64),
    };
    if precision == 0 || precision > MAX_DECIMAL_PRECISION as u64 || scale > precision {
        return Err(KalamError::invalid_sql(format!(
            "DECIMAL({precision},{scale}) is out of range: precision 1..=38, 0 <= scale <= precision"
        )));
    }
    Ok(KalamType::Decimal {
        precision: precision as u8,
        scale: scale as u8,
    })
}

fn default_value(expr: &Expr) -> KalamResult<DefaultValue> {
    if let Some(literal) = literal(expr) {
        return Ok(DefaultValue::Literal { value: literal });
    }
    let function_name = match expr {
        Expr::Function(f)
            if f.args
                .to_string()
                .trim_matches(|c| c == '(' || c == ')')
                .is_empty() =>
        {
            Some(f.name.to_string())
        }
        Expr::Identifier(ident) => Some(ident.value.clone()),
        _ => None,
    };
    match function_name.map(|n| n.to_ascii_lowercase()).as_deref() {
        Some("now" | "current_timestamp") => Ok(DefaultValue::Now),
        Some("snowflake_id") => Ok(DefaultValue::SnowflakeId),
        Some("uuid_v7") => Ok(DefaultValue::UuidV7),
        Some("current_user") => Ok(DefaultValue::CurrentUser),
        _ => Err(KalamError::unsupported(format!(
            "DEFAULT {expr} is not supported; use a literal, NOW(), SNOWFLAKE_ID(), UUID_V7() or CURRENT_USER()"
        ))),
    }
}

/// A constant SQL expression as a literal: numbers (with sign), strings, booleans, NULL.
pub fn literal(expr: &Expr) -> Option<Literal> {
    match expr {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => Some(Literal::Number(n.clone())),
            ast::Value::SingleQuotedString(s)
            | ast::Value::EscapedStringLiteral(s)
            | ast::Value::DoubleQuotedString(s) => Some(Literal::String(s.clone())),
            ast::Value::DollarQuotedString(s) => Some(Literal::String(s.value.clone())),
            ast::Value::Boolean(b) => Some(Literal::Boolean(*b)),
            ast::Value::Null => Some(Literal::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal(expr)? {
            Literal::Number(n) if !n.starts_with('-') => Some(Literal::Number(format!("-{n}"))),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => match literal(expr)? {
            n @ Literal::Number(_) => Some(n),
            _ => None,
        },
        Expr::Nested(inner) => literal(inner),
        _ => None,
    }
}

fn table_options(options: &ast::CreateTableOptions) -> KalamResult<TableOptions> {
    let list: &[SqlOption] = match options {
        ast::CreateTableOptions::None => &[],
        ast::CreateTableOptions::With(list) => list,
        _ => {
            return Err(KalamError::unsupported(
                "table options are written WITH (FLUSH_POLICY='...', COMPACT_POLICY='segments:N', STORAGE='name', TTL_SECONDS=n, ACCESS_LEVEL='PUBLIC'|'PRIVATE')",
            ));
        }
    };
    let mut out = TableOptions::default();
    for option in list {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(KalamError::invalid_sql(format!(
                "table option not understood: {option}"
            )));
        };
        let key_name = key.value.to_ascii_uppercase();
        let text = match literal(value) {
            Some(Literal::String(s) | Literal::Number(s)) => s,
            _ => match value {
                Expr::Identifier(ident) => ident.value.clone(),
                _ => {
                    return Err(KalamError::invalid_sql(format!(
                        "table option {key_name} needs a constant value"
                    )));
                }
            },
        };
        match key_name.as_str() {
            "FLUSH_POLICY" => out.flush_policy = Some(text),
            "COMPACT_POLICY" => out.compact_policy = Some(text),
            "STORAGE" => out.storage = Some(text),
            "TTL_SECONDS" => {
                out.ttl_seconds = Some(text.parse().map_err(|_| {
                    KalamError::invalid_sql(format!("TTL_SECONDS must be a whole number, not '{text}'"))
                })?)
            }
            "ACCESS_LEVEL" => out.access_level = Some(text.to_ascii_uppercase()),
            other => {
                return Err(KalamError::invalid_sql(format!(
                    "unknown table option {other}; known: FLUSH_POLICY, COMPACT_POLICY, STORAGE, TTL_SECONDS, ACCESS_LEVEL"
                )));
            }
        }
    }
    Ok(out)
}
