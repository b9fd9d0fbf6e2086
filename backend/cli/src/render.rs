//! Printing results: aligned tables for people, JSON / NDJSON / CSV for programs.

use std::io::Write;
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Attribute, Cell, CellAlignment, ContentArrangement, Table};
use serde_json::Value;

use crate::client::StatementResult;

/// How results are printed (`--format`, `\format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
    Ndjson,
    Csv,
}

impl OutputFormat {
    pub fn parse(name: &str) -> Result<OutputFormat, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "table" => Ok(OutputFormat::Table),
            "json" => Ok(OutputFormat::Json),
            "ndjson" => Ok(OutputFormat::Ndjson),
            "csv" => Ok(OutputFormat::Csv),
            other => Err(format!(
                "unknown format '{other}': use table, json, ndjson or csv"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Table => "table",
            OutputFormat::Json => "json",
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Csv => "csv",
        }
    }
}

/// What NULL looks like in a table.
const NULL: &str = "NULL";

/// Prints one statement's result. Rows go to `out`; in the formats for programs, a
/// statement's message (no rows) goes to `notes` so that `out` stays parseable.
pub fn print_result(
    result: &StatementResult,
    format: OutputFormat,
    elapsed: Option<Duration>,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> std::io::Result<()> {
    if !result.has_rows() {
        let message = result.message.as_deref().unwrap_or("OK");
        let target: &mut dyn Write = if format == OutputFormat::Table { out } else { notes };
        return match elapsed {
            Some(t) => writeln!(target, "{message} ({})", duration(t)),
            None => writeln!(target, "{message}"),
        };
    }
    let names: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", table(result))?;
            let count = match result.rows.len() {
                1 => "1 row".to_string(),
                n => format!("{n} rows"),
            };
            match elapsed {
                Some(t) => writeln!(out, "({count}, {})", duration(t)),
                None => writeln!(out, "({count})"),
            }
        }
        OutputFormat::Json => {
            let objects: Vec<Value> = result.rows.iter().map(|row| object(&names, row)).collect();
            writeln!(out, "{}", Value::Array(objects))
        }
        OutputFormat::Ndjson => {
            for row in &result.rows {
                writeln!(out, "{}", object(&names, row))?;
            }
            Ok(())
        }
        OutputFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(&names)?;
            for row in &result.rows {
                writer.write_record(row.iter().map(|v| match v {
                    Value::Null => String::new(),
                    other => text(other),
                }))?;
            }
            writer.flush()
        }
    }
}

/// The result as an aligned table, as wide as the terminal allows.
fn table(result: &StatementResult) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(
            result
                .columns
                .iter()
                .map(|c| Cell::new(&c.name).add_attribute(Attribute::Bold)),
        );
    let numeric: Vec<bool> = result
        .columns
        .iter()
        .map(|c| {
            matches!(
                c.data_type.as_str(),
                "SmallInt" | "Int" | "BigInt" | "Float" | "Double"
            ) || c.data_type.starts_with("Decimal")
        })
        .collect();
    // A terminal that reports no usable width (a fresh pseudo-terminal says 0):
    // columns as wide as their contents.
    if table.width().is_none_or(|w| w < 20) {
        table.set_content_arrangement(ContentArrangement::Disabled);
    }
    for row in &result.rows {
        table.add_row(row.iter().enumerate().map(|(i, value)| {
            let cell = match value {
                Value::Null => Cell::new(NULL).add_attribute(Attribute::Dim),
                other => Cell::new(text(other)),
            };
            if numeric.get(i).copied().unwrap_or(false) {
                cell.set_alignment(CellAlignment::Right)
            } else {
                cell
            }
        }));
    }
    table
}

/// A value as text: strings as they are, everything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn object(names: &[&str], row: &[Value]) -> Value {
    Value::Object(
        names
            .iter()
            .zip(row)
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect(),
    )
}

/// `0.84 ms`, `12.3 ms`, `2.41 s`.
pub fn duration(t: Duration) -> String {
    let ms = t.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Column;
    use serde_json::json;

    fn result() -> StatementResult {
        StatementResult {
            columns: vec![
                Column {
                    name: "id".into(),
                    data_type: "BigInt".into(),
                },
                Column {
                    name: "note".into(),
                    data_type: "Text".into(),
                },
            ],
            rows: vec![vec![json!(1), json!("a, \"b\"")], vec![json!(2), Value::Null]],
            message: None,
        }
    }

    fn printed(format: OutputFormat) -> (String, String) {
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        print_result(&result(), format, None, &mut out, &mut notes).unwrap();
        (String::from_utf8(out).unwrap(), String::from_utf8(notes).unwrap())
    }

    #[test]
    fn every_format_prints_rows_and_nulls() {
        let (csv, _) = printed(OutputFormat::Csv);
        assert_eq!(csv, "id,note\n1,\"a, \"\"b\"\"\"\n2,\n");
        let (ndjson, _) = printed(OutputFormat::Ndjson);
        assert_eq!(
            ndjson,
            "{\"id\":1,\"note\":\"a, \\\"b\\\"\"}\n{\"id\":2,\"note\":null}\n"
        );
        let (json, _) = printed(OutputFormat::Json);
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            json!([{"id": 1, "note": "a, \"b\""}, {"id": 2, "note": null}])
        );
        let (table, _) = printed(OutputFormat::Table);
        assert!(table.contains("NULL"), "{table}");
        assert!(table.ends_with("(2 rows)\n"), "{table}");
    }

    #[test]
    fn messages_leave_program_output_clean() {
        let message = StatementResult {
            message: Some("Inserted 1 row(s)".into()),
            ..Default::default()
        };
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        print_result(&message, OutputFormat::Csv, None, &mut out, &mut notes).unwrap();
        assert!(out.is_empty());
        assert_eq!(String::from_utf8(notes).unwrap(), "Inserted 1 row(s)\n");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(Duration::from_micros(840)), "0.84 ms");
        assert_eq!(duration(Duration::from_millis(2410)), "2.41 s");
    }
}
