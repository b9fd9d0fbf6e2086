//! Fuzzing the front door: random SQL (generated from the grammar, and mutated from
//! the repository's own `.slt` statements) and random HTTP bodies (JSON shapes,
//! encodings, content types, sizes) against the real binary. Every input must get
//! an answer below 500 (a 500 must carry a request id and no panic text; the goal
//! is none at all), in bounded time, and the server must keep serving.
//!
//! Runs for `KALAMDB_FUZZ_SECONDS` (default 60) with the seed `KALAMDB_FUZZ_SEED`
//! (default fixed, so a failure reproduces); `docs/FUZZING.md` has the figures.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Rng, ServerProcess};

const PW: &str = "pw";

/// One input: how it is sent, and what it is (for the failure report).
enum Input {
    Sql {
        user: &'static str,
        sql: String,
        /// Well-formed and well-typed: must succeed.
        valid: bool,
    },
    Body {
        content_type: Option<&'static str>,
        body: Vec<u8>,
    },
    /// A bulk load: `POST /ingest/<table>`.
    Ingest {
        user: &'static str,
        table: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A WebSocket session: these messages sent, the answers read (or not).
    Socket { frames: Vec<String>, read: bool },
}

impl Input {
    fn describe(&self) -> String {
        let clip = |s: &str| s.chars().take(300).collect::<String>();
        match self {
            Input::Sql { user, sql, .. } => format!("SQL as {user}: {}", clip(sql)),
            Input::Body { content_type, body } => format!(
                "body ({content_type:?}, {} bytes): {}",
                body.len(),
                clip(&String::from_utf8_lossy(body))
            ),
            Input::Ingest {
                user,
                table,
                content_type,
                body,
            } => format!(
                "ingest as {user} into {table} ({content_type}, {} bytes): {}",
                body.len(),
                clip(&String::from_utf8_lossy(body))
            ),
            Input::Socket { frames, read } => {
                format!("websocket (read: {read}): {}", clip(&frames.join(" | ")))
            }
        }
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.below(100) < percent
}

/// Grammar-aware SQL: every statement family, every type, random nesting,
/// identifiers and literals.
struct SqlGen<'a> {
    rng: &'a mut Rng,
}

const TABLES: &[&str] = &[
    "app.u",
    "app.s",
    "app.n",
    "app.z",
    "u",
    "nope.t",
    "app.missing",
    "system.jobs",
    "system.users",
    "system.tables",
    "system.columns",
    "system.namespaces",
];
const COLUMNS: &[&str] = &[
    "id", "a", "b", "t", "d", "ts", "j", "m", "x", "_seq", "_deleted", "_id", "nope", "\"A\"",
];
const TYPES: &[&str] = &[
    "BOOLEAN",
    "SMALLINT",
    "INT",
    "BIGINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL(10,2)",
    "DECIMAL(38,0)",
    "TEXT",
    "VARCHAR",
    "BYTES",
    "BYTEA",
    "DATE",
    "TIMESTAMP",
    "JSON",
    "UUID",
    "INT[]",
    "WHATEVER",
];
const FUNCTIONS: &[&str] = &[
    "abs",
    "upper",
    "lower",
    "length",
    "coalesce",
    "concat",
    "round",
    "sqrt",
    "now",
    "date_trunc",
    "to_timestamp",
    "make_array",
    "unnest",
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "current_user",
    "nullif",
    "md5",
    "decode",
    "encode",
    "substr",
    "strpos",
    "array_length",
];
const OPERATORS: &[&str] = &[
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "<>",
    "<",
    ">=",
    "AND",
    "OR",
    "||",
    "LIKE",
    "IS DISTINCT FROM",
];

impl SqlGen<'_> {
    fn ident(&mut self) -> String {
        match self.rng.below(10) {
            0 => "\"Quoted Name\"".into(),
            1 => "ünï".into(),
            2 => "x".repeat(1 + self.rng.below(80) as usize),
            3 => "select".into(),
            4 => "1abc".into(),
            _ => format!("n{}", self.rng.below(6)),
        }
    }

    fn literal(&mut self) -> String {
        let r = self.rng.below(24);
        match r {
            0 => "NULL".into(),
            1 => "true".into(),
            2 => "9223372036854775807".into(),
            3 => "-9223372036854775808".into(),
            4 => "99999999999999999999999999999999999999999".into(),
            5 => "1e308".into(),
            6 => "-0.0".into(),
            7 => "'NaN'".into(),
            8 => "'2024-02-29'".into(),
            9 => "'2024-02-30 25:61:61'".into(),
            10 => "'0191f2a3-4b5c-7d6e-8f90-a1b2c3d4e5f6'".into(),
            11 => "'{\"a\": [1, {\"b\": null}]}'".into(),
            12 => "'\\x0aff'".into(),
            13 => "'it''s'".into(),
            14 => "''".into(),
            15 => "'💥'".into(),
            16 => format!("${}", self.rng.below(4)),
            17 => "CURRENT_USER".into(),
            18 => "NOW()".into(),
            19 => "INTERVAL '1 day'".into(),
            20 => format!("'{}'", "y".repeat(self.rng.below(5000) as usize)),
            _ => (self.rng.below(2000) as i64 - 1000).to_string(),
        }
    }

    fn expr(&mut self, depth: u32) -> String {
        if depth == 0 {
            return if chance(self.rng, 50) {
                self.literal()
            } else {
                pick(self.rng, COLUMNS).to_string()
            };
        }
        match self.rng.below(12) {
            0..=2 => format!(
                "{} {} {}",
                self.expr(depth - 1),
                pick(self.rng, OPERATORS),
                self.expr(depth - 1)
            ),
            3 => format!("({})", self.expr(depth - 1)),
            4 => {
                let f = pick(self.rng, FUNCTIONS).to_string();
                let n = self.rng.below(3);
                let args: Vec<String> = (0..n).map(|_| self.expr(depth - 1)).collect();
                format!("{f}({})", args.join(", "))
            }
            5 => format!("CAST({} AS {})", self.expr(depth - 1), pick(self.rng, TYPES)),
            6 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                self.expr(depth - 1),
                self.expr(depth - 1),
                self.expr(depth - 1)
            ),
            7 => format!("({})", self.select(depth - 1)),
            8 => format!(
                "{} IN ({}, {})",
                self.expr(depth - 1),
                self.literal(),
                self.literal()
            ),
            9 => format!("EXISTS ({})", self.select(depth - 1)),
            10 => format!("NOT {}", self.expr(depth - 1)),
            _ => format!("{} IS NULL", self.expr(depth - 1)),
        }
    }

    fn select(&mut self, depth: u32) -> String {
        let mut sql = String::from("SELECT ");
        if chance(self.rng, 10) {
            sql.push_str("DISTINCT ");
        }
        let n = 1 + self.rng.below(3);
        let items: Vec<String> = (0..n)
            .map(|_| match self.rng.below(5) {
                0 => "*".to_string(),
                1 => format!("{} AS {}", self.expr(depth), self.ident()),
                _ => self.expr(depth),
            })
            .collect();
        sql.push_str(&items.join(", "));
        if chance(self.rng, 80) {
            sql.push_str(&format!(" FROM {}", pick(self.rng, TABLES)));
            if chance(self.rng, 20) {
                sql.push_str(&format!(
                    " {} JOIN {} AS j ON {}",
                    pick(self.rng, &["", "LEFT", "INNER", "CROSS"]),
                    pick(self.rng, TABLES),
                    self.expr(depth.min(1))
                ));
            }
        }
        if chance(self.rng, 50) {
            sql.push_str(&format!(" WHERE {}", self.expr(depth)));
        }
        if chance(self.rng, 20) {
            sql.push_str(&format!(" GROUP BY {}", pick(self.rng, COLUMNS)));
        }
        if chance(self.rng, 20) {
            sql.push_str(&format!(" ORDER BY {} DESC", self.expr(depth.min(1))));
        }
        if chance(self.rng, 20) {
            sql.push_str(&format!(" LIMIT {}", self.literal()));
        }
        if chance(self.rng, 5) {
            sql = format!("WITH c AS ({sql}) SELECT * FROM c");
        }
        if chance(self.rng, 5) {
            sql = format!("{sql} UNION ALL {}", self.select(depth.saturating_sub(1)));
        }
        sql
    }

    fn column_defs(&mut self) -> String {
        let n = 1 + self.rng.below(5);
        let mut defs: Vec<String> = (0..n)
            .map(|i| {
                let mut d = format!("c{i} {}", pick(self.rng, TYPES));
                if chance(self.rng, 20) {
                    d.push_str(" NOT NULL");
                }
                if chance(self.rng, 20) {
                    d.push_str(&format!(
                        " DEFAULT {}",
                        pick(
                            self.rng,
                            &[
                                "NOW()",
                                "SNOWFLAKE_ID()",
                                "UUID_V7()",
                                "CURRENT_USER()",
                                "0",
                                "'x'",
                                "NULL"
                            ]
                        )
                    ));
                }
                if i == 0 && chance(self.rng, 60) {
                    d.push_str(" PRIMARY KEY");
                }
                d
            })
            .collect();
        if chance(self.rng, 10) {
            defs.push(format!("{} INT", pick(self.rng, COLUMNS)));
        }
        defs.join(", ")
    }

    fn statement(&mut self) -> String {
        let depth = self.rng.below(4) as u32;
        let table = pick(self.rng, TABLES).to_string();
        match self.rng.below(22) {
            0..=5 => self.select(depth),
            6 | 7 => {
                let rows: Vec<String> = (0..1 + self.rng.below(4))
                    .map(|_| {
                        let n = 1 + self.rng.below(4);
                        let v: Vec<String> = (0..n).map(|_| self.expr(depth.min(1))).collect();
                        format!("({})", v.join(", "))
                    })
                    .collect();
                let mut sql = format!("INSERT INTO {table} VALUES {}", rows.join(", "));
                match self.rng.below(4) {
                    0 => sql.push_str(" ON CONFLICT (id) DO NOTHING"),
                    1 => sql.push_str(&format!(
                        " ON CONFLICT (id) DO UPDATE SET a = EXCLUDED.a + {}",
                        self.expr(depth.min(1))
                    )),
                    _ => {}
                }
                sql
            }
            8 => format!("INSERT INTO {table} {}", self.select(depth)),
            9 | 10 => format!(
                "UPDATE {table} SET {} = {} WHERE {}",
                pick(self.rng, COLUMNS),
                self.expr(depth),
                self.expr(depth)
            ),
            11 => format!("DELETE FROM {table} WHERE {}", self.expr(depth)),
            12 => format!(
                "CREATE {} TABLE {}app.{} ({}){}",
                pick(self.rng, &["", "USER", "SHARED", "STREAM"]),
                if chance(self.rng, 30) {
                    "IF NOT EXISTS "
                } else {
                    ""
                },
                self.ident(),
                self.column_defs(),
                pick(
                    self.rng,
                    &[
                        "",
                        " WITH (FLUSH_POLICY = 'rows:5')",
                        " WITH (FLUSH_POLICY = 'rows:0')",
                        " WITH (ACCESS_LEVEL = 'PUBLIC')",
                        " WITH (TTL_SECONDS = 10)",
                        " WITH (NOPE = 1)",
                    ]
                )
            ),
            13 => format!(
                "DROP TABLE {}{table}",
                if chance(self.rng, 50) { "IF EXISTS " } else { "" }
            ),
            14 => format!(
                "ALTER TABLE {table} {} COLUMN {} {}",
                pick(self.rng, &["ADD", "DROP", "ADD IF NOT EXISTS", "DROP IF EXISTS"]),
                self.ident(),
                pick(
                    self.rng,
                    &[
                        "INT",
                        "DATE NOT NULL DEFAULT NOW()",
                        "TEXT DEFAULT 'x'",
                        "TIMESTAMP DEFAULT NOW()",
                        ""
                    ]
                )
            ),
            15 => format!(
                "{} NAMESPACE {}",
                pick(
                    self.rng,
                    &[
                        "CREATE",
                        "DROP",
                        "CREATE NAMESPACE IF NOT EXISTS",
                        "DROP NAMESPACE IF EXISTS"
                    ]
                ),
                self.ident()
            ),
            16 => format!(
                "{} USER '{}' {}",
                pick(self.rng, &["CREATE", "ALTER", "DROP"]),
                self.ident(),
                pick(
                    self.rng,
                    &[
                        "WITH PASSWORD 'p' ROLE user",
                        "SET ROLE dba",
                        "SET PASSWORD ''",
                        "",
                        "ROLE nope"
                    ]
                )
            ),
            17 => pick(
                self.rng,
                &[
                    "SHOW NAMESPACES",
                    "SHOW TABLES",
                    "SHOW TABLES IN app",
                    "DESCRIBE TABLE app.u",
                    "SHOW STATS FOR TABLE app.u",
                    "SHOW STATS FOR TABLE app.s",
                    "DESC app.nope",
                ],
            )
            .to_string(),
            18 => format!(
                "STORAGE FLUSH {}",
                pick(
                    self.rng,
                    &[
                        "TABLE app.u",
                        "TABLE app.s",
                        "ALL",
                        "ALL IN app",
                        "ALL IN NAMESPACE nope",
                        "TABLE"
                    ]
                )
            ),
            19 => format!("KILL JOB '{}'", self.ident()),
            20 => format!(
                "EXECUTE AS USER '{}' ({})",
                pick(self.rng, &["alice", "root", "nobody"]),
                self.select(depth)
            ),
            _ => format!("EXPLAIN {}", self.select(depth)),
        }
    }
}

/// Statements of the repository's `.slt` files.
/// Well-typed statements over the `fz` namespace (which no other generator names)
/// that a working server answers with success: a share of them must succeed, so a
/// server that refused everything would fail the fuzzer.
struct ValidGen<'a> {
    rng: &'a mut Rng,
}

const VALID_SETUP: &str = "CREATE NAMESPACE fz; \
    CREATE SHARED TABLE fz.v (id INT PRIMARY KEY, a INT, b TEXT, x DOUBLE); \
    CREATE SHARED TABLE fz.w (id INT PRIMARY KEY, t TEXT); \
    INSERT INTO fz.v VALUES (1, 1, 'row 1', 0.5), (2, NULL, 'row 2', -3.0), (3, -4, 'r', 7.25); \
    INSERT INTO fz.w VALUES (1, 'one'), (3, 'three')";

impl ValidGen<'_> {
    fn int(&mut self) -> i64 {
        self.rng.below(200) as i64 - 100
    }

    fn predicate(&mut self, depth: u32) -> String {
        match self.rng.below(if depth == 0 { 5 } else { 6 }) {
            0 => {
                let op = *pick(self.rng, &["=", "<>", "<", "<=", ">", ">="]);
                format!("a {op} {}", self.int())
            }
            1 => format!(
                "id IN ({}, {}, {})",
                self.rng.below(60),
                self.rng.below(60),
                self.rng.below(60)
            ),
            2 => format!("b LIKE '{}%'", pick(self.rng, &["r", "row 1", "", "x"])),
            3 => format!("a IS {}NULL", if chance(self.rng, 50) { "NOT " } else { "" }),
            4 => {
                let low = self.int();
                format!("x BETWEEN {low} AND {}", low + 100)
            }
            _ => {
                let (left, right) = (self.predicate(depth - 1), self.predicate(depth - 1));
                format!("({left}) {} ({right})", pick(self.rng, &["AND", "OR"]))
            }
        }
    }

    fn statement(&mut self) -> String {
        let id = 100 + self.rng.below(100_000);
        let (p, k) = (self.predicate(2), self.int());
        match self.rng.below(8) {
            0 | 1 => {
                let item = *pick(
                    self.rng,
                    &[
                        "a + 1",
                        "coalesce(a, 0)",
                        "length(b)",
                        "upper(b)",
                        "x * 2",
                        "CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END",
                    ],
                );
                format!(
                    "SELECT id, {item} FROM fz.v WHERE {p} ORDER BY id LIMIT {}",
                    1 + self.rng.below(20)
                )
            }
            2 => format!(
                "SELECT a % 5 AS g, count(*), sum(x), max(b) FROM fz.v WHERE {p} GROUP BY a % 5 ORDER BY g"
            ),
            3 => format!(
                "INSERT INTO fz.v (id, a, b, x) VALUES ({id}, {k}, 'row {id}', {k}.5) \
                 ON CONFLICT (id) DO UPDATE SET a = EXCLUDED.a"
            ),
            4 => {
                let value = *pick(self.rng, &["a + 1", "a - 1", "coalesce(a, 0)", "7"]);
                format!("UPDATE fz.v SET a = {value} WHERE {p}")
            }
            5 => format!("DELETE FROM fz.v WHERE id = {id}"),
            6 => format!(
                "SELECT v.id, w.t FROM fz.v AS v JOIN fz.w AS w ON v.id = w.id WHERE {p} ORDER BY v.id"
            ),
            _ => pick(
                self.rng,
                &[
                    "SHOW TABLES IN fz",
                    "DESCRIBE TABLE fz.v",
                    "SELECT count(*) FROM system.tables",
                    "EXPLAIN SELECT id FROM fz.v WHERE id = 3",
                ],
            )
            .to_string(),
        }
    }
}

/// Where the fuzzer's bulk loads go (`POST /ingest/<ns>/<table>`).
const LOAD_TABLES: [&str; 5] = ["app/u", "app/s", "app/n", "app/nope", "system/users"];

/// A bulk-load body: rows of the fuzz tables' shapes in every format, valid or
/// broken (truncated, a byte flipped, wrong types, huge values, compressed Arrow).
fn ingest_body(rng: &mut Rng) -> (&'static str, Vec<u8>) {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    let rows = 1 + rng.below(100) as i64;
    let first = rng.below(1000) as i64;
    let text = |rng: &mut Rng| -> String {
        match rng.below(5) {
            0 => "x".repeat(rng.below(5_000) as usize),
            1 => "\u{0}\"'\n,;".to_string(),
            2 => "emoji 😀".to_string(),
            _ => format!("t{}", rng.below(100)),
        }
    };
    let batch = |rng: &mut Rng| -> RecordBatch {
        let (id_name, value_name) = (
            *pick(rng, &["id", "id", "a", "nope"]),
            *pick(rng, &["a", "b", "t", "x"]),
        );
        let texts: Vec<String> = (0..rows).map(|_| text(rng)).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new(id_name, DataType::Int64, true),
            Field::new(value_name, DataType::Utf8, true),
        ]));
        let ids: Vec<Option<i64>> = (0..rows)
            .map(|i| (rng.below(50) != 0).then_some(first + i % (1 + rng.below(rows as u64)) as i64))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(texts)),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    };
    let (content_type, mut body) = match rng.below(4) {
        0 => {
            let lines: Vec<String> = (0..rows)
                .map(|i| match rng.below(8) {
                    0 => "{\"id\": \"x\"}".to_string(),
                    1 => "not json".to_string(),
                    2 => String::new(),
                    3 => format!("{{\"id\": {}, \"a\": 1e400}}", first + i),
                    _ => format!(
                        "{{\"id\": {}, \"a\": {}, \"b\": {}}}",
                        first + i,
                        rng.below(100),
                        serde_json::to_string(&text(rng)).unwrap()
                    ),
                })
                .collect();
            ("application/x-ndjson", lines.join("\n").into_bytes())
        }
        1 => {
            let header = *pick(rng, &["id,a,b", "a,id", "id,nope", "", "id,a,b,b"]);
            let lines: Vec<String> = (0..rows)
                .map(|i| match rng.below(6) {
                    0 => format!("{},\"{}\"", first + i, text(rng).replace('"', "\"\"")),
                    1 => "1,2,3,4,5".to_string(),
                    _ => format!(
                        "{},{},{}",
                        first + i,
                        rng.below(100),
                        text(rng).replace([',', '\n', '"'], "")
                    ),
                })
                .collect();
            ("text/csv", format!("{header}\n{}", lines.join("\n")).into_bytes())
        }
        2 => {
            let batch = batch(rng);
            let mut options = datafusion::arrow::ipc::writer::IpcWriteOptions::default();
            if chance(rng, 50) {
                options = options
                    .try_with_compression(Some(datafusion::arrow::ipc::CompressionType::ZSTD))
                    .unwrap();
            }
            let mut out = Vec::new();
            let mut writer = datafusion::arrow::ipc::writer::StreamWriter::try_new_with_options(
                &mut out,
                &batch.schema(),
                options,
            )
            .unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            drop(writer);
            ("application/vnd.apache.arrow.stream", out)
        }
        _ => {
            let batch = batch(rng);
            let mut out = Vec::new();
            let mut writer =
                datafusion::parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            ("application/vnd.apache.parquet", out)
        }
    };
    match rng.below(6) {
        0 if !body.is_empty() => {
            let at = rng.below(body.len() as u64) as usize;
            body.truncate(at);
        }
        1 if !body.is_empty() => {
            let at = rng.below(body.len() as u64) as usize;
            body[at] ^= 1 << rng.below(8);
        }
        _ => {}
    }
    (content_type, body)
}

/// A WebSocket session's messages: subscriptions (generated SQL), unsubscribes,
/// pings, authentication again, malformed and oversized messages.
fn socket_frames(rng: &mut Rng) -> Vec<String> {
    let mut frames = Vec::new();
    for _ in 0..1 + rng.below(12) {
        let id = match *pick(rng, &["a", "b", "", "long"]) {
            "long" => "0123456789".repeat(20),
            short => short.to_string(),
        };
        let id = id.as_str();
        let frame = match rng.below(9) {
            0 | 1 => {
                let sql = SqlGen { rng: &mut *rng }.select(1);
                let options = *pick(
                    rng,
                    &[
                        "{}",
                        "{\"from_seq\": 0}",
                        "{\"from_seq\": \"99999999999999999999\"}",
                        "{\"last_rows\": 3, \"batch_size\": 1}",
                        "{\"batch_size\": 0}",
                        "{\"int64_as_string\": \"yes\"}",
                        "[]",
                    ],
                );
                format!(
                    "{{\"type\": \"subscribe\", \"id\": {}, \"sql\": {}, \"options\": {options}}}",
                    serde_json::to_string(id).unwrap(),
                    serde_json::to_string(&sql).unwrap()
                )
            }
            2 => format!(
                "{{\"type\": \"subscribe\", \"id\": {}, \"sql\": \"SELECT * FROM app.u WHERE a > 0\"}}",
                serde_json::to_string(id).unwrap()
            ),
            3 => format!(
                "{{\"type\": \"unsubscribe\", \"id\": {}}}",
                serde_json::to_string(id).unwrap()
            ),
            4 => "{\"type\": \"ping\"}".to_string(),
            5 => "{\"type\": \"authenticate\", \"username\": \"root\", \"password\": \"\"}".to_string(),
            6 => format!("{{\"type\": \"{}\"}}", "z".repeat(rng.below(100_000) as usize)),
            7 => pick(rng, &["", "[]", "null", "{", "{\"type\": 7}", "\u{0}"]).to_string(),
            _ => "{\"type\": \"ping\"}".repeat(1 + rng.below(3) as usize),
        };
        frames.push(frame);
    }
    frames
}

/// Runs one WebSocket session as alice; the JSON messages it got back (none when
/// it does not read).
async fn socket_session(
    base_url: &str,
    frames: &[String],
    read: bool,
) -> Result<Vec<serde_json::Value>, String> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/ws", base_url.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "authorization",
        crate::common::live::basic("alice", PW).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("no socket: {e}"))?;
    for frame in frames {
        if ws.send(Message::Text(frame.clone().into())).await.is_err() {
            break;
        }
    }
    let mut answers = Vec::new();
    if read {
        while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(40), ws.next()).await {
            if let Message::Text(text) = message {
                answers.push(
                    serde_json::from_str(text.as_str()).map_err(|e| format!("not JSON ({e}): {text}"))?,
                );
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(answers)
}

fn slt_statements() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/slt");
    let mut statements = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.starts_with("statement ") || line.starts_with("query ") {
                current = Some(String::new());
            } else if line.is_empty() || line == "----" {
                if let Some(sql) = current.take().filter(|s| !s.trim().is_empty()) {
                    statements.push(sql);
                }
            } else if let Some(sql) = current.as_mut() {
                sql.push_str(line);
                sql.push('\n');
            }
        }
    }
    assert!(
        statements.len() > 100,
        "slt statements found: {}",
        statements.len()
    );
    statements
}

/// A statement with a few random edits: tokens dropped, doubled, swapped or
/// replaced, literals changed, the text cut, bytes inserted.
fn mutate(rng: &mut Rng, sql: &str) -> String {
    let mut tokens: Vec<String> = sql.split_whitespace().map(str::to_string).collect();
    if tokens.is_empty() {
        return sql.to_string();
    }
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(tokens.len() as u64) as usize;
        match rng.below(9) {
            0 if tokens.len() > 1 => {
                tokens.remove(i);
            }
            1 => tokens.insert(i, tokens[i].clone()),
            2 => {
                let j = rng.below(tokens.len() as u64) as usize;
                tokens.swap(i, j);
            }
            3 => {
                tokens[i] = pick(
                    rng,
                    &[
                        "(",
                        ")",
                        ",",
                        "'",
                        "\"",
                        ";",
                        "NULL",
                        "SELECT",
                        "*",
                        "--",
                        "/*",
                        "$1",
                        "ON",
                        "AS",
                        "-1",
                        "0",
                        "99999999999999999999",
                    ],
                )
                .to_string()
            }
            4 => tokens[i] = SqlGen { rng }.literal(),
            5 => tokens[i] = SqlGen { rng }.expr(2),
            6 => {
                let keep = rng.below(tokens.len() as u64 + 1) as usize;
                tokens.truncate(keep.max(1));
            }
            7 => tokens.insert(
                i,
                pick(rng, &["\u{0}", "\u{feff}", "é", "\\", "`", "[", "]", "{", "}"]).to_string(),
            ),
            _ => tokens[i] = tokens[i].to_uppercase(),
        }
    }
    tokens.join(" ")
}

/// Raw `/sql` bodies: JSON of every shape, wrong types, odd encodings and sizes.
fn raw_body(rng: &mut Rng, sql: &str) -> (Option<&'static str>, Vec<u8>) {
    let json = Some("application/json");
    let quoted = serde_json::to_string(sql).unwrap();
    match rng.below(16) {
        0 => (
            json,
            format!("{{\"sql\": {quoted}, \"params\": [1, \"x\", null, true, 1.5, [1], {{\"a\": 1}}]}}")
                .into_bytes(),
        ),
        1 => (
            json,
            format!("{{\"sql\": {quoted}, \"namespace\": \"app\"}}").into_bytes(),
        ),
        2 => (json, format!("[{quoted}]").into_bytes()),
        3 => (json, quoted.into_bytes()),
        4 => (
            json,
            pick(
                rng,
                &[
                    "42",
                    "null",
                    "true",
                    "{}",
                    "[]",
                    "{\"sql\": null}",
                    "{\"sql\": 1}",
                    "{\"sql\": \"\"}",
                    "{\"sql\": [\"SELECT 1\"]}",
                    "{\"params\": 5, \"sql\": \"SELECT $1\"}",
                    "{\"sql\": \"SELECT $1\", \"params\": [99999999999999999999999]}",
                    "{\"sql\": \"SELECT 1\", \"namespace\": 7}",
                    "{\"sql\": \"SELECT 1\", \"namespace\": \"../../etc\"}",
                ],
            )
            .as_bytes()
            .to_vec(),
        ),
        5 => (
            json,
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        ),
        6 => (json, format!("{{\"sql\": {quoted}").into_bytes()),
        7 => (json, b"\xef\xbb\xbf{\"sql\": \"SELECT 1\"}".to_vec()),
        8 => {
            // UTF-16
            let mut bytes = vec![0xff, 0xfe];
            for unit in sql.encode_utf16() {
                bytes.extend_from_slice(&unit.to_le_bytes());
            }
            (None, bytes)
        }
        9 => {
            let mut bytes = sql.as_bytes().to_vec();
            let at = rng.below(bytes.len() as u64 + 1) as usize;
            bytes.insert(at, 0xff);
            (Some("text/plain"), bytes)
        }
        10 => (Some("application/x-www-form-urlencoded"), sql.as_bytes().to_vec()),
        11 => (
            Some("application/json; charset=latin1"),
            format!("{{\"sql\": {quoted}}}").into_bytes(),
        ),
        12 => (None, Vec::new()),
        13 => (
            None,
            format!("{sql};").repeat(1 + rng.below(50) as usize).into_bytes(),
        ),
        14 => (None, (0..rng.below(2000)).map(|_| rng.below(256) as u8).collect()),
        _ => (Some("text/plain"), sql.as_bytes().to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_the_front_door() {
    let seconds: u64 = std::env::var("KALAMDB_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("KALAMDB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0f0f_1234_abcd);
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path());
    server
        .sql(&format!(
            "CREATE NAMESPACE app; \
             CREATE USER TABLE app.u (id INT PRIMARY KEY, a INT, b TEXT, d DATE, ts TIMESTAMP, j JSON, m DECIMAL(10,2), x DOUBLE); \
             CREATE SHARED TABLE app.s (id INT PRIMARY KEY, a INT, t TEXT) WITH (ACCESS_LEVEL = 'PUBLIC'); \
             CREATE TABLE app.n (a INT, b TEXT); \
             CREATE USER TABLE app.z (id BIGINT PRIMARY KEY, a BIGINT, ts TIMESTAMP) WITH (FLUSH_POLICY = 'rows:20'); \
             CREATE USER 'alice' WITH PASSWORD '{PW}' ROLE user; \
             CREATE USER 'svc' WITH PASSWORD '{PW}' ROLE service; \
             INSERT INTO app.u VALUES (1, 1, 'one', '2024-01-01', '2024-01-01 00:00:00', '{{}}', 1.5, -0.0), (2, 2, 'two', NULL, NULL, NULL, NULL, NULL); \
             INSERT INTO app.s VALUES (1, 1, 'x'); INSERT INTO app.n VALUES (1, 'a')"
        ))
        .await
        .expect_success();
    server.sql(VALID_SETUP).await.expect_success();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("{}/sql", server.base_url());
    let corpus = slt_statements();
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let (mut inputs, mut by_status) = (0u64, std::collections::BTreeMap::<u16, u64>::new());
    let mut errors_500 = Vec::new();
    let (mut valid_sent, mut valid_ok, mut valid_failures) = (0u64, 0u64, Vec::new());
    while started.elapsed() < Duration::from_secs(seconds) {
        let input = match rng.below(10) {
            0 => Input::Sql {
                user: "root",
                sql: ValidGen { rng: &mut rng }.statement(),
                valid: true,
            },
            1..=4 => Input::Sql {
                user: ["root", "root", "alice", "svc"][rng.below(4) as usize],
                sql: SqlGen { rng: &mut rng }.statement(),
                valid: false,
            },
            5..=7 => {
                let base = pick(&mut rng, &corpus).clone();
                Input::Sql {
                    user: ["root", "alice"][rng.below(2) as usize],
                    sql: mutate(&mut rng, &base),
                    valid: false,
                }
            }
            _ => match rng.below(8) {
                0 => Input::Socket {
                    frames: socket_frames(&mut rng),
                    read: chance(&mut rng, 70),
                },
                1 | 2 => {
                    let (content_type, body) = ingest_body(&mut rng);
                    Input::Ingest {
                        user: ["root", "alice"][rng.below(2) as usize],
                        table: LOAD_TABLES[rng.below(LOAD_TABLES.len() as u64) as usize],
                        content_type,
                        body,
                    }
                }
                _ => {
                    let sql = SqlGen { rng: &mut rng }.statement();
                    let (content_type, body) = raw_body(&mut rng, &sql);
                    Input::Body { content_type, body }
                }
            },
        };
        if let Input::Socket { frames, read } = &input {
            match socket_session(server.base_url(), frames, *read).await {
                Ok(answers) => {
                    for answer in &answers {
                        assert_ne!(
                            answer["code"],
                            "INTERNAL_ERROR",
                            "{answer} (seed {seed})\n{}",
                            input.describe()
                        );
                    }
                    *by_status.entry(101).or_default() += 1;
                }
                Err(e) => panic!("{e} (seed {seed}, input {inputs})\n{}", input.describe()),
            }
            inputs += 1;
            continue;
        }
        let request = match &input {
            Input::Sql { user, sql, .. } => client
                .post(&url)
                .basic_auth(user, Some(if *user == "root" { "" } else { PW }))
                .body(sql.clone()),
            Input::Body { content_type, body } => {
                let request = client.post(&url).basic_auth("root", Some("")).body(body.clone());
                match content_type {
                    Some(ct) => request.header("content-type", *ct),
                    None => request,
                }
            }
            Input::Ingest {
                user,
                table,
                content_type,
                body,
            } => client
                .post(format!("{}/ingest/{table}", server.base_url()))
                .basic_auth(user, Some(if *user == "root" { "" } else { PW }))
                .header("content-type", *content_type)
                .body(body.clone()),
            Input::Socket { .. } => unreachable!("sent above"),
        };
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "no answer (seed {seed}, input {inputs}): {e}\n{}",
                input.describe()
            )
        });
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        *by_status.entry(status).or_default() += 1;
        inputs += 1;
        if let Input::Sql { valid: true, sql, .. } = &input {
            valid_sent += 1;
            if status == 200 {
                valid_ok += 1;
            } else if valid_failures.len() < 10 {
                valid_failures.push(format!("{sql}\n  → {status} {body}"));
            }
        }
        if status >= 500 {
            assert!(
                body.contains("(request "),
                "500 without a request id: {body}\n{}",
                input.describe()
            );
            assert!(
                !body.to_lowercase().contains("panick"),
                "panic text in a 500: {body}\n{}",
                input.describe()
            );
            errors_500.push(format!("{}\n  → {body}", input.describe()));
        }
        if inputs % 200 == 0 {
            let alive = server.sql("SELECT 1").await;
            alive.expect_success();
        }
    }
    let alive = server.sql("SELECT 40 + 2").await;
    assert_eq!(alive.rows(), vec![vec![serde_json::json!(42)]], "still serving");
    let rate = inputs as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz: {inputs} inputs in {:.1} s ({rate:.0}/s), seed {seed}, answers by status {by_status:?}, 500s: {}",
        started.elapsed().as_secs_f64(),
        errors_500.len()
    );
    assert!(inputs > 0);
    assert!(valid_sent >= 50, "only {valid_sent} valid statements were sent");
    assert!(
        valid_ok * 100 >= valid_sent * 95,
        "{valid_ok} of {valid_sent} valid statements succeeded (seed {seed}):\n{}",
        valid_failures.join("\n")
    );
    assert!(
        errors_500.is_empty(),
        "{} internal errors (seed {seed}):\n{}",
        errors_500.len(),
        errors_500.join("\n")
    );
    server.kill_9();
}
