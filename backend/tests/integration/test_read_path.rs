//! The read path: streaming scans checked against a model (filters, limits,
//! projections, point reads; hot, cold and mixed rows; concurrent writers and
//! flushes), the statement budgets (time, memory, result size), table functions,
//! plan shapes and `SHOW STATS`' scope.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::common::{Rng, TestServer};

#[derive(Clone, Debug, PartialEq)]
struct Item {
    grp: i64,
    name: String,
    note: Option<String>,
    score: f64,
}

type Model = BTreeMap<i64, Item>;

fn item_json(id: i64, item: &Item) -> Vec<Value> {
    vec![
        json!(id),
        json!(item.grp),
        json!(item.name),
        item.note.as_ref().map_or(Value::Null, |n| json!(n)),
        json!(item.score),
    ]
}

fn sql_text(value: &Option<String>) -> String {
    value.as_ref().map_or("NULL".to_string(), |v| format!("'{v}'"))
}

/// Whether a model row `(id, item)` passes a filter.
type RowTest = Box<dyn Fn(i64, &Item) -> bool>;

/// A filter as SQL and as a predicate over the model.
struct Filter {
    sql: String,
    keep: RowTest,
}

fn random_filter(rng: &mut Rng) -> Filter {
    let a = rng.below(420) as i64;
    let b = a + rng.below(120) as i64;
    let g = rng.below(7) as i64;
    match rng.below(11) {
        0 => Filter {
            sql: "TRUE".into(),
            keep: Box::new(|_, _| true),
        },
        1 => Filter {
            sql: format!("id = {a}"),
            keep: Box::new(move |id, _| id == a),
        },
        2 => {
            let keys = [a, b, a + 7, 1000];
            Filter {
                sql: format!("id IN ({}, {}, {}, {})", keys[0], keys[1], keys[2], keys[3]),
                keep: Box::new(move |id, _| keys.contains(&id)),
            }
        }
        3 => Filter {
            sql: format!("id BETWEEN {a} AND {b}"),
            keep: Box::new(move |id, _| (a..=b).contains(&id)),
        },
        4 => Filter {
            sql: format!("id > {a} AND grp < {g}"),
            keep: Box::new(move |id, item| id > a && item.grp < g),
        },
        5 => {
            let prefix = format!("n{}", rng.below(4));
            Filter {
                sql: format!("name LIKE '{prefix}%'"),
                keep: Box::new(move |_, item| item.name.starts_with(&prefix)),
            }
        }
        6 => Filter {
            sql: "note IS NULL".into(),
            keep: Box::new(|_, item| item.note.is_none()),
        },
        7 => Filter {
            sql: format!("note IS NOT NULL AND grp = {g}"),
            keep: Box::new(move |_, item| item.note.is_some() && item.grp == g),
        },
        8 => Filter {
            sql: format!("grp IN ({g}, {})", (g + 3) % 7),
            keep: Box::new(move |_, item| item.grp == g || item.grp == (g + 3) % 7),
        },
        9 => Filter {
            sql: format!("score >= {}.5 OR id < {a}", g * 40),
            keep: Box::new(move |id, item| item.score >= (g * 40) as f64 + 0.5 || id < a),
        },
        _ => Filter {
            sql: format!("NOT (id <= {b}) AND note LIKE 'x%'"),
            keep: Box::new(move |id, item| {
                id > b && item.note.as_deref().is_some_and(|n| n.starts_with('x'))
            }),
        },
    }
}

/// Random writes to one scope of `table`, mirrored in `model`.
async fn random_writes(
    server: &TestServer,
    user: &str,
    table: &str,
    model: &mut Model,
    rng: &mut Rng,
    n: usize,
) {
    for _ in 0..n {
        let id = rng.below(400) as i64;
        let sql = match (rng.below(4), model.contains_key(&id)) {
            (0, true) => {
                model.remove(&id);
                format!("DELETE FROM {table} WHERE id = {id}")
            }
            (1, true) => {
                let grp = rng.below(7) as i64;
                let note = (rng.below(3) > 0).then(|| format!("x{}", rng.below(50)));
                let item = model.get_mut(&id).unwrap();
                item.grp = grp;
                item.note = note.clone();
                format!(
                    "UPDATE {table} SET grp = {grp}, note = {} WHERE id = {id}",
                    sql_text(&note)
                )
            }
            (_, true) => {
                // A range update: several rows, some of them maybe flushed.
                let upper = id + 15;
                for (_, item) in model.range_mut(id..=upper) {
                    item.score += 1.0;
                }
                format!("UPDATE {table} SET score = score + 1 WHERE id BETWEEN {id} AND {upper}")
            }
            (_, false) => {
                let item = Item {
                    grp: rng.below(7) as i64,
                    name: format!("n{}", id % 37),
                    note: (rng.below(2) == 0).then(|| format!("x{}", rng.below(50))),
                    score: (rng.below(600) as f64) / 2.0,
                };
                let sql = format!(
                    "INSERT INTO {table} (id, grp, name, note, score) VALUES ({id}, {}, '{}', {}, {})",
                    item.grp,
                    item.name,
                    sql_text(&item.note),
                    item.score
                );
                model.insert(id, item);
                sql
            }
        };
        server.execute_sql_as(user, "pw", &sql).await.expect_success();
    }
}

/// Runs random queries as `user` and compares each answer with `model`.
async fn check_queries(server: &TestServer, user: &str, table: &str, model: &Model, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let filter = random_filter(rng);
        let matching: Vec<(i64, &Item)> = model
            .iter()
            .filter(|(id, item)| (filter.keep)(**id, item))
            .map(|(id, item)| (*id, item))
            .collect();
        match rng.below(4) {
            0 | 1 => {
                let limit = (rng.below(2) == 0).then(|| rng.below(30) as usize);
                let sql = format!(
                    "SELECT id, grp, name, note, score FROM {table} WHERE {} ORDER BY id{}",
                    filter.sql,
                    limit.map_or(String::new(), |l| format!(" LIMIT {l}"))
                );
                let expected: Vec<Vec<Value>> = matching
                    .iter()
                    .take(limit.unwrap_or(usize::MAX))
                    .map(|(id, item)| item_json(*id, item))
                    .collect();
                let rows = server.execute_sql_as(user, "pw", &sql).await.rows();
                assert_eq!(rows, expected, "{user}: {sql}");
            }
            2 => {
                // LIMIT without ORDER BY: any `limit` matching rows, each once.
                let limit = 1 + rng.below(20) as usize;
                let sql = format!("SELECT name, id FROM {table} WHERE {} LIMIT {limit}", filter.sql);
                let rows = server.execute_sql_as(user, "pw", &sql).await.rows();
                assert_eq!(rows.len(), matching.len().min(limit), "{user}: {sql}");
                let mut seen = std::collections::HashSet::new();
                for row in rows {
                    let id = row[1].as_i64().unwrap();
                    assert!(seen.insert(id), "{user}: {sql}: id {id} twice");
                    let item = model
                        .get(&id)
                        .unwrap_or_else(|| panic!("{user}: {sql}: {id} is not a row"));
                    assert!((filter.keep)(id, item), "{user}: {sql}: {id} does not match");
                    assert_eq!(row[0], json!(item.name));
                }
            }
            _ => {
                let sql = format!(
                    "SELECT grp, count(*), sum(id), count(DISTINCT id) FROM {table} WHERE {} GROUP BY grp ORDER BY grp",
                    filter.sql
                );
                let mut groups: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
                for (id, item) in &matching {
                    let entry = groups.entry(item.grp).or_default();
                    entry.0 += 1;
                    entry.1 += id;
                }
                let expected: Vec<Vec<Value>> = groups
                    .iter()
                    .map(|(g, (count, sum))| vec![json!(g), json!(count), json!(sum), json!(count)])
                    .collect();
                let rows = server.execute_sql_as(user, "pw", &sql).await.rows();
                assert_eq!(rows, expected, "{user}: {sql}");
            }
        }
    }
}

/// Waits until no job is queued or running.
async fn wait_for_idle_jobs(server: &TestServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows = server
            .execute_sql("SELECT count(*) FROM system.jobs WHERE status IN ('queued', 'running')")
            .await
            .rows();
        if rows == vec![vec![json!(0)]] {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "jobs still running");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

const CREATE_ITEMS: &str =
    "(id BIGINT PRIMARY KEY, grp BIGINT NOT NULL, name TEXT NOT NULL, note TEXT, score DOUBLE NOT NULL)";

/// The plan lines of `EXPLAIN sql`, one string.
async fn explain(server: &TestServer, sql: &str) -> String {
    let rows = server.execute_sql(&format!("EXPLAIN {sql}")).await.rows();
    rows.iter()
        .map(|r| r[1].as_str().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Namespace `rp` with the USER table `rp.items`.
async fn create_items(server: &TestServer) {
    server.execute_sql("CREATE NAMESPACE rp").await.expect_success();
    server
        .execute_sql(&format!("CREATE USER TABLE rp.items {CREATE_ITEMS}"))
        .await
        .expect_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streaming_scans_match_a_model_across_tiers_and_concurrent_writes() {
    let server = Arc::new(TestServer::start().await);
    create_items(&server).await;
    server
        .execute_sql(&format!(
            "CREATE SHARED TABLE rp.board {CREATE_ITEMS} WITH (ACCESS_LEVEL = 'PUBLIC')"
        ))
        .await
        .expect_success();
    for user in ["alice", "bob"] {
        server.create_user(user, "pw", "user").await;
    }
    server.create_user("svc", "pw", "service").await;
    let seed = std::env::var("KALAMDB_READ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_u64);
    let mut rng = Rng(seed);
    let mut models: BTreeMap<&str, Model> = BTreeMap::new();
    let mut board = Model::new();
    for round in 0..6 {
        for user in ["alice", "bob"] {
            let model = models.entry(user).or_default();
            random_writes(&server, user, "rp.items", model, &mut rng, 60).await;
        }
        random_writes(&server, "svc", "rp.board", &mut board, &mut rng, 40).await;
        // Every other round moves the hot rows to Parquet, so later rounds read
        // cold rows, hot rows and hot rows that replace cold ones.
        if round % 2 == 1 {
            server.flush_and_wait("rp.items").await;
        }
        // While alice's queries run, bob keeps writing and the table is flushed:
        // neither may change what alice sees.
        let stop = Arc::new(AtomicBool::new(false));
        let flushing = Arc::new(tokio::sync::Notify::new());
        let writer = {
            let (server, stop, flushing) = (server.clone(), stop.clone(), flushing.clone());
            tokio::spawn(async move {
                let mut jobs = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = 10_000 + round * 1000 + i;
                    server
                        .execute_sql_as(
                            "bob",
                            "pw",
                            &format!("INSERT INTO rp.items (id, grp, name, score) VALUES ({id}, 1, 'w', 0)"),
                        )
                        .await
                        .expect_success();
                    server
                        .execute_sql_as("bob", "pw", &format!("DELETE FROM rp.items WHERE id = {id}"))
                        .await
                        .expect_success();
                    if i % 10 == 0 {
                        let answer = server.execute_sql("STORAGE FLUSH TABLE rp.items").await;
                        match answer.error_code() {
                            None => {
                                jobs.push(answer.rows()[0][0].as_str().unwrap().to_string());
                                flushing.notify_one();
                            }
                            Some("FLUSH_IN_PROGRESS") => {}
                            Some(_) => panic!("the concurrent flush was refused: {}", answer.body),
                        }
                    }
                    i += 1;
                }
                jobs
            })
        };
        // alice's queries start once a flush is under way.
        tokio::time::timeout(std::time::Duration::from_secs(60), flushing.notified())
            .await
            .expect("a concurrent flush was accepted");
        check_queries(&server, "alice", "rp.items", &models["alice"], &mut rng, 25).await;
        stop.store(true, Ordering::Relaxed);
        let jobs = writer.await.unwrap();
        wait_for_idle_jobs(&server).await;
        for job in &jobs {
            assert_eq!(
                server.job(job).await["status"],
                "completed",
                "round {round}: flush {job}"
            );
        }
        check_queries(&server, "bob", "rp.items", &models["bob"], &mut rng, 15).await;
        check_queries(&server, "alice", "rp.board", &board, &mut rng, 15).await;
    }
    // Each user's rows once: count(*) = count(DISTINCT id) = the model.
    for (user, model) in &models {
        let rows = server
            .execute_sql_as(user, "pw", "SELECT count(*), count(DISTINCT id) FROM rp.items")
            .await
            .rows();
        assert_eq!(rows, vec![vec![json!(model.len()), json!(model.len())]], "{user}");
    }
}

#[tokio::test]
async fn point_reads_and_filters_are_planned_into_the_scan() {
    let server = TestServer::start().await;
    create_items(&server).await;
    server
        .execute_sql("INSERT INTO rp.items (id, grp, name, score) VALUES (1, 1, 'a', 0), (2, 2, 'b', 0), (3, 3, 'c', 0)")
        .await
        .expect_success();
    server.flush_and_wait("rp.items").await;
    server
        .execute_sql("INSERT INTO rp.items (id, grp, name, score) VALUES (4, 4, 'd', 0); UPDATE rp.items SET grp = 20 WHERE id = 2")
        .await
        .expect_success();
    let plan = |sql: &'static str| explain(&server, sql);
    let point = plan("SELECT name FROM rp.items WHERE id = 2").await;
    assert!(point.contains("TieredScanExec: point reads=1"), "{point}");
    let list = plan("SELECT name FROM rp.items WHERE id IN (1, 2, 4, 9)").await;
    assert!(list.contains("TieredScanExec: point reads=4"), "{list}");
    let filtered = plan("SELECT name FROM rp.items WHERE grp > 1").await;
    assert!(filtered.contains("hot=stream (filtered)"), "{filtered}");
    // One segment; id 2 was replaced after the flush, so the segment is merged.
    assert!(filtered.contains("segments=1 (merged=1)"), "{filtered}");
    // Point reads find rows in either tier, the replaced one as it is now.
    let rows = server
        .execute_sql("SELECT id, grp FROM rp.items WHERE id IN (1, 2, 4, 9) ORDER BY id")
        .await
        .rows();
    assert_eq!(
        rows,
        vec![
            vec![json!(1), json!(1)],
            vec![json!(2), json!(20)],
            vec![json!(4), json!(4)]
        ]
    );
    // A fresh table's segment proves clean: no merge.
    server
        .execute_sql(&format!("CREATE USER TABLE rp.clean {CREATE_ITEMS}"))
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO rp.clean (id, grp, name, score) VALUES (1, 1, 'a', 0), (2, 2, 'b', 0)")
        .await
        .expect_success();
    server.flush_and_wait("rp.clean").await;
    let clean = plan("SELECT name FROM rp.clean").await;
    assert!(clean.contains("segments=1 (merged=0)"), "{clean}");
    let rows = server
        .execute_sql("SELECT id, name FROM rp.clean ORDER BY id")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!(1), json!("a")], vec![json!(2), json!("b")]]);
    // Deleting a flushed row makes its segment need the merge again.
    server
        .execute_sql("DELETE FROM rp.clean WHERE id = 1")
        .await
        .expect_success();
    let merged = plan("SELECT name FROM rp.clean").await;
    assert!(merged.contains("segments=1 (merged=1)"), "{merged}");
    let rows = server
        .execute_sql("SELECT id, name FROM rp.clean ORDER BY id")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!(2), json!("b")]]);
}

#[tokio::test]
async fn primary_key_ranges_read_the_pk_index_in_key_order() {
    let server = TestServer::start().await;
    create_items(&server).await;
    let plan = |sql: &'static str| explain(&server, sql);
    let ids = |rows: Vec<Vec<Value>>| rows.iter().map(|r| r[0].as_i64().unwrap()).collect::<Vec<_>>();
    // Negative and large keys: their little-endian bytes (format version 1) were in
    // no useful order.
    server
        .execute_sql(
            "INSERT INTO rp.items (id, grp, name, score) VALUES \
             (-300, 1, 'a', 0), (-3, 1, 'b', 0), (0, 1, 'c', 0), (4, 1, 'd', 0), (300, 1, 'e', 0), (70000, 1, 'f', 0)",
        )
        .await
        .expect_success();
    let range = plan("SELECT id FROM rp.items WHERE id BETWEEN -5 AND 5").await;
    assert!(range.contains("hot=pk range (1 range(s))"), "{range}");
    let open = plan("SELECT id FROM rp.items WHERE id > 4 AND grp = 1").await;
    assert!(open.contains("hot=pk range (1 range(s)) (filtered)"), "{open}");
    let cases = [
        ("id BETWEEN -5 AND 5", vec![-3, 0, 4]),
        ("id > 4", vec![300, 70000]),
        ("id >= 4 AND id < 300", vec![4]),
        ("id < -3", vec![-300]),
        ("id <= -3 OR id > 1000", vec![-300, -3, 70000]),
        ("id > 5 AND id < 4", vec![]),
    ];
    for (filter, expected) in &cases {
        let sql = format!("SELECT id FROM rp.items WHERE {filter} ORDER BY id");
        assert_eq!(ids(server.execute_sql(&sql).await.rows()), *expected, "{sql}");
    }
    // Without ORDER BY the hot rows of a range come in key order; LIMIT stops it.
    let rows = server
        .execute_sql("SELECT id FROM rp.items WHERE id >= -300 LIMIT 3")
        .await
        .rows();
    assert_eq!(ids(rows), vec![-300, -3, 0]);
    // Flushed rows come from the segments, replaced and deleted ones as they are now.
    server.flush_and_wait("rp.items").await;
    server
        .execute_sql(
            "UPDATE rp.items SET grp = 2 WHERE id = 0; DELETE FROM rp.items WHERE id = -3; \
             INSERT INTO rp.items (id, grp, name, score) VALUES (2, 2, 'g', 0)",
        )
        .await
        .expect_success();
    let rows = server
        .execute_sql("SELECT id, grp FROM rp.items WHERE id BETWEEN -5 AND 5 ORDER BY id")
        .await
        .rows();
    assert_eq!(
        rows,
        vec![
            vec![json!(0), json!(2)],
            vec![json!(2), json!(2)],
            vec![json!(4), json!(1)]
        ]
    );
    // TEXT keys (a SHARED table), with a prefix of another key and a zero byte.
    server
        .execute_sql(
            "CREATE SHARED TABLE rp.words (w TEXT PRIMARY KEY, n INT); \
             INSERT INTO rp.words VALUES ('b', 1), ('ab', 2), ('a', 3), ('ba', 4), ('c', 5), ('bz', 6)",
        )
        .await
        .expect_success();
    let range = plan("SELECT n FROM rp.words WHERE w >= 'b' AND w < 'c'").await;
    assert!(range.contains("hot=pk range"), "{range}");
    let rows = server
        .execute_sql("SELECT w FROM rp.words WHERE w >= 'b' AND w < 'c'")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!("b")], vec![json!("ba")], vec![json!("bz")]]);
    let rows = server
        .execute_sql("SELECT w FROM rp.words WHERE w > 'a' AND w <= 'b'")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!("ab")], vec![json!("b")]]);
}

#[tokio::test]
async fn a_large_hot_scan_is_split_across_partitions_and_reads_every_row_once() {
    let server = TestServer::start().await;
    server.execute_sql("CREATE NAMESPACE sp").await.expect_success();
    server
        .execute_sql("CREATE SHARED TABLE sp.t (id BIGINT PRIMARY KEY, v BIGINT)")
        .await
        .expect_success();
    // Three bursts with pauses between them: uneven in `_seq`.
    let mut next = 0i64;
    for (burst, rows) in [(0, 24_000), (1, 8_000), (2, 8_000)] {
        if burst > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        for _ in 0..rows / 1000 {
            let values: Vec<String> = (next..next + 1000).map(|i| format!("({i}, {i})")).collect();
            server
                .execute_sql(&format!("INSERT INTO sp.t VALUES {}", values.join(",")))
                .await
                .expect_success();
            next += 1000;
        }
    }
    // Updates move rows to new versions; deletes remove them.
    server
        .execute_sql("UPDATE sp.t SET v = v + 1 WHERE id % 40 = 0; DELETE FROM sp.t WHERE id % 100 = 1")
        .await
        .expect_success();
    let plan = explain(&server, "SELECT count(*) FROM sp.t").await;
    // As many as the machine has cores, at least two.
    assert!(plan.contains("hot partitions="), "{plan}");
    let live: Vec<i64> = (0..next).filter(|i| i % 100 != 1).collect();
    let sum_v: i64 = live.iter().map(|i| i + (i % 40 == 0) as i64).sum();
    let rows = server
        .execute_sql("SELECT count(*), count(DISTINCT id), sum(id), sum(v), min(id), max(id) FROM sp.t")
        .await
        .rows();
    assert_eq!(
        rows,
        vec![vec![
            json!(live.len()),
            json!(live.len()),
            json!(live.iter().sum::<i64>()),
            json!(sum_v),
            json!(0),
            json!(next - 1)
        ]]
    );
    let mut ids: Vec<i64> = server
        .execute_sql("SELECT id FROM sp.t")
        .await
        .rows()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, live);
    let limited = server.execute_sql("SELECT id FROM sp.t LIMIT 10").await.rows();
    assert_eq!(limited.len(), 10);
    // A small table is read by one partition.
    server
        .execute_sql(
            "CREATE SHARED TABLE sp.small (id BIGINT PRIMARY KEY); INSERT INTO sp.small VALUES (1), (2)",
        )
        .await
        .expect_success();
    let plan = explain(&server, "SELECT count(*) FROM sp.small").await;
    assert!(!plan.contains("hot partitions"), "{plan}");
}

#[tokio::test]
async fn table_functions_are_relations() {
    let server = TestServer::start().await;
    let rows = server
        .execute_sql("SELECT * FROM generate_series(1, 3)")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!(1)], vec![json!(2)], vec![json!(3)]]);
    let rows = server
        .execute_sql("SELECT value FROM range(0, 6, 2)")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!(0)], vec![json!(2)], vec![json!(4)]]);
    let rows = server
        .execute_sql("SELECT count(*), sum(x) FROM unnest([1, 2, 3]) AS t(x)")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!(3), json!(6)]]);
    let rows = server
        .execute_sql("SELECT s.value * 10 FROM generate_series(1, 2) AS s ORDER BY 1")
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!(10)], vec![json!(20)]]);
    server
        .execute_sql("SELECT * FROM no_such_table")
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    let unknown = server.execute_sql("SELECT * FROM no_such_function(1)").await;
    assert_eq!(unknown.http_status, 400, "{}", unknown.body);
}

#[tokio::test]
async fn a_statement_over_its_time_budget_is_cancelled_and_writes_nothing() {
    let server = TestServer::start_configured(|s| s.statement_timeout_ms = 400).await;
    server.execute_sql("CREATE NAMESPACE rp").await.expect_success();
    server
        .execute_sql(&format!("CREATE SHARED TABLE rp.t {CREATE_ITEMS}"))
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO rp.t (id, grp, name, score) VALUES (1, 1, 'a', 0)")
        .await
        .expect_success();
    let endless = "SELECT count(*) FROM generate_series(1, 100000000000)";
    let answer = server.execute_sql(endless).await;
    answer.expect_error(400, "STATEMENT_TIMEOUT");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("statement_timeout_ms (400 ms)"),
        "{}",
        answer.body
    );
    for dml in [
        // (a source that yields rows would meet max_insert_rows first)
        "INSERT INTO rp.t (id, grp, name, score) SELECT value + 10, 1, 'x', 0 FROM generate_series(1, 100000000000) WHERE value < 0",
        "UPDATE rp.t SET grp = 2 WHERE id IN (SELECT value FROM generate_series(1, 100000000000) WHERE value > 0)",
        "DELETE FROM rp.t WHERE id IN (SELECT value FROM generate_series(1, 100000000000) WHERE value > 0)",
    ] {
        server
            .execute_sql(dml)
            .await
            .expect_error(400, "STATEMENT_TIMEOUT");
    }
    let rows = server.execute_sql("SELECT id, grp FROM rp.t").await.rows();
    assert_eq!(rows, vec![vec![json!(1), json!(1)]], "nothing was written");
    let rows = server.execute_sql("SELECT 41 + 1").await.rows();
    assert_eq!(rows, vec![vec![json!(42)]]);
}

#[tokio::test]
async fn queries_spill_or_stop_at_their_memory_budget() {
    let server = TestServer::start_configured(|s| {
        s.query_memory_mb = 16;
        s.statement_timeout_ms = 0;
    })
    .await;
    // A sort of 1.5M rows (≈ 24 MB of keys and values) spills to disk and answers.
    let rows = server
        .execute_sql(
            "SELECT max(rn), count(*) FROM (SELECT row_number() OVER (ORDER BY value % 7919, value) AS rn FROM generate_series(1, 1500000))",
        )
        .await
        .rows();
    assert_eq!(rows, vec![vec![json!(1500000), json!(1500000)]]);
    // Collecting 4M values into one array cannot spill: refused, not an OOM.
    server
        .execute_sql("SELECT cardinality(array_agg(value)) FROM generate_series(1, 4000000)")
        .await
        .expect_error(400, "RESOURCES_EXHAUSTED");
    let rows = server.execute_sql("SELECT 41 + 1").await.rows();
    assert_eq!(rows, vec![vec![json!(42)]]);
}

/// `kalamdb_reused_plans_total` from `/metrics`.
async fn reused_plans(server: &TestServer) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kalamdb_reused_plans_total "))
        .and_then(|v| v.parse().ok())
        .expect("kalamdb_reused_plans_total in /metrics")
}

#[tokio::test]
async fn statements_that_depend_only_on_their_text_reuse_their_plan() {
    let server = TestServer::start().await;
    server.create_user("alice", "pw", "user").await;
    server.create_user("bob", "pw", "user").await;
    let start = reused_plans(&server).await;
    // Kept after the first run; every later run answers the same from the kept plan,
    // including a join of two VALUES lists, whose operators keep state between runs
    // unless reset.
    let constant = [
        ("SELECT 1", json!([[1]])),
        ("SELECT upper('a') || 'b' AS s, 2 * 21 AS n", json!([["Ab", 42]])),
        (
            "SELECT x, y FROM (VALUES (1), (2)) a(x) JOIN (VALUES (2), (3)) b(y) ON x = y",
            json!([[2, 2]]),
        ),
        (
            "SELECT count(*) FROM (VALUES (1), (2), (3)) t(v) WHERE v > 1",
            json!([[2]]),
        ),
    ];
    for round in 0..3 {
        for (sql, expected) in &constant {
            let rows = server.execute_sql(sql).await.rows();
            assert_eq!(json!(rows), *expected, "round {round}: {sql}");
        }
    }
    assert_eq!(reused_plans(&server).await - start, 2 * constant.len() as u64);
    // Also through a streamed format, and for another user.
    let csv = server.sql_text_as("alice", "pw", "format=csv", "SELECT 1").await;
    assert!(csv.ends_with("1\n"), "{csv:?}");
    assert_eq!(reused_plans(&server).await - start, 2 * constant.len() as u64 + 1);
    // Never kept: the clock, the caller, randomness, tables and table functions.
    let before = reused_plans(&server).await;
    let first = server.execute_sql("SELECT now()").await.rows();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = server.execute_sql("SELECT now()").await.rows();
    assert_ne!(first, second);
    for (user, name) in [("alice", "alice"), ("bob", "bob")] {
        let rows = server
            .execute_sql_as(user, "pw", "SELECT current_user()")
            .await
            .rows();
        assert_eq!(rows, vec![vec![json!(name)]]);
    }
    server.execute_sql("SELECT random()").await.rows();
    server.execute_sql("SELECT random()").await.rows();
    for _ in 0..2 {
        let rows = server
            .execute_sql("SELECT count(*) FROM generate_series(1, 3)")
            .await
            .rows();
        assert_eq!(rows, vec![vec![json!(3)]]);
    }
    server.execute_sql("CREATE NAMESPACE cp").await.expect_success();
    server
        .execute_sql("CREATE SHARED TABLE cp.t (id BIGINT PRIMARY KEY)")
        .await
        .expect_success();
    for n in 1..=2 {
        server
            .execute_sql(&format!("INSERT INTO cp.t VALUES ({n})"))
            .await
            .expect_success();
        let rows = server.execute_sql("SELECT count(*) FROM cp.t").await.rows();
        assert_eq!(rows, vec![vec![json!(n)]]);
    }
    assert_eq!(reused_plans(&server).await, before);
}

#[tokio::test]
async fn a_json_result_over_max_result_bytes_is_refused() {
    let server = TestServer::start_configured(|s| s.max_result_bytes = 10_000).await;
    let rows = server
        .execute_sql("SELECT value FROM generate_series(1, 100)")
        .await
        .rows();
    assert_eq!(rows.len(), 100);
    let answer = server
        .execute_sql("SELECT value FROM generate_series(1, 100000)")
        .await;
    answer.expect_error(400, "RESOURCES_EXHAUSTED");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_result_bytes"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn show_stats_is_the_whole_table_for_service_and_the_own_rows_for_users() {
    let server = TestServer::start().await;
    create_items(&server).await;
    server.create_user("alice", "pw", "user").await;
    server.create_user("bob", "pw", "user").await;
    server.create_user("svc", "pw", "service").await;
    for (user, n) in [("alice", 3), ("bob", 5)] {
        let values: Vec<String> = (0..n).map(|i| format!("({i}, 1, 'a', 0)")).collect();
        server
            .execute_sql_as(
                user,
                "pw",
                &format!(
                    "INSERT INTO rp.items (id, grp, name, score) VALUES {}",
                    values.join(", ")
                ),
            )
            .await
            .expect_success();
    }
    server.flush_and_wait("rp.items").await;
    server
        .execute_sql_as(
            "bob",
            "pw",
            "INSERT INTO rp.items (id, grp, name, score) VALUES (100, 1, 'a', 0)",
        )
        .await
        .expect_success();
    let stats = |user: &'static str| {
        let server = &server;
        async move {
            let row = server
                .execute_sql_as(
                    user,
                    if user == "root" { "" } else { "pw" },
                    "SHOW STATS FOR TABLE rp.items",
                )
                .await
                .rows()
                .remove(0);
            (
                row[1].as_i64().unwrap(),
                row[3].as_i64().unwrap(),
                row[4].as_i64().unwrap(),
            )
        }
    };
    // (hot rows, cold rows, cold files)
    assert_eq!(stats("alice").await, (0, 3, 1));
    assert_eq!(stats("bob").await, (1, 5, 1));
    assert_eq!(stats("svc").await, (1, 8, 2));
    assert_eq!(stats("root").await, (1, 8, 2));
}

/// `kalamdb_point_reads_total` from `/metrics`.
pub(crate) async fn point_reads(server: &TestServer) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kalamdb_point_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("kalamdb_point_reads_total in /metrics")
}

#[tokio::test]
async fn point_selects_answer_exactly_like_the_planner() {
    let server = TestServer::start().await;
    create_items(&server).await;
    server
        .execute_sql("CREATE SHARED TABLE rp.tags (tag TEXT PRIMARY KEY, n INT, at TIMESTAMP) WITH (ACCESS_LEVEL = 'PUBLIC')")
        .await
        .expect_success();
    server
        .execute_sql("CREATE SHARED TABLE rp.secret (id INT PRIMARY KEY, v TEXT)")
        .await
        .expect_success();
    server.create_user("alice", "pw", "user").await;
    server.create_user("bob", "pw", "user").await;
    let alice = |sql: String| {
        let server = &server;
        async move { server.execute_sql_as("alice", "pw", &sql).await }
    };
    alice("INSERT INTO rp.items (id, grp, name, note, score) VALUES (1, 1, 'a', 'x', 0.5), (2, 2, 'b', NULL, 1), (3, 3, 'c', 'z', 2)".into())
        .await
        .expect_success();
    server.flush_and_wait("rp.items").await;
    alice("INSERT INTO rp.items (id, grp, name, score) VALUES (4, 4, 'd', 3); UPDATE rp.items SET name = 'B' WHERE id = 2; DELETE FROM rp.items WHERE id = 3".into())
        .await
        .expect_success();
    server
        .execute_sql("INSERT INTO rp.tags VALUES ('red', 1, '2026-01-02 03:04:05'), ('blue', 2, NULL)")
        .await
        .expect_success();
    // Each point read, and the same question asked in a shape the fast path does
    // not take (`AND TRUE`): the answers are identical, columns and types included.
    let cases = [
        (
            "SELECT * FROM rp.items WHERE id = 2",
            "SELECT * FROM rp.items WHERE id = 2 AND TRUE",
        ),
        (
            "SELECT * FROM rp.items WHERE id = 1",
            "SELECT * FROM rp.items WHERE id = 1 AND TRUE",
        ),
        (
            "SELECT * FROM rp.items WHERE id = 3",
            "SELECT * FROM rp.items WHERE id = 3 AND TRUE",
        ),
        (
            "SELECT * FROM rp.items WHERE id = 4",
            "SELECT * FROM rp.items WHERE id = 4 AND TRUE",
        ),
        (
            "SELECT name AS n, id FROM rp.items WHERE 2 = id",
            "SELECT name AS n, id FROM rp.items WHERE 2 = id AND TRUE",
        ),
        (
            "SELECT note, score FROM rp.items WHERE (id = 99)",
            "SELECT note, score FROM rp.items WHERE id = 99 AND TRUE",
        ),
        (
            "SELECT * FROM rp.tags WHERE tag = 'red'",
            "SELECT * FROM rp.tags WHERE tag = 'red' AND TRUE",
        ),
        (
            "SELECT n FROM rp.tags WHERE tag IN ('blue')",
            "SELECT n FROM rp.tags WHERE tag IN ('blue') AND TRUE",
        ),
    ];
    for (fast, general) in cases {
        let before = point_reads(&server).await;
        let a = alice(fast.into()).await;
        assert_eq!(point_reads(&server).await, before + 1, "{fast} is a point read");
        let b = alice(general.into()).await;
        assert_eq!(point_reads(&server).await, before + 1, "{general} is planned");
        a.expect_success();
        assert_eq!(a.body["results"], b.body["results"], "{fast}");
    }
    // IN lists: the same rows (the order of an unordered SELECT is free).
    let sorted = |mut rows: Vec<Vec<Value>>| {
        rows.sort_by_key(|r| r[0].as_i64());
        rows
    };
    let fast = alice("SELECT id, name FROM rp.items WHERE id IN (4, 1, 2, 3, 99, 1)".into())
        .await
        .rows();
    assert_eq!(
        sorted(fast),
        vec![
            vec![json!(1), json!("a")],
            vec![json!(2), json!("B")],
            vec![json!(4), json!("d")]
        ]
    );
    // Parameters.
    let answer = server
        .post_json_as(
            "alice",
            "pw",
            json!({"sql": "SELECT name FROM rp.items WHERE id = $1", "params": [4]}),
        )
        .await;
    assert_eq!(answer.rows(), vec![vec![json!("d")]]);
    // Bob's scope has none of alice's keys.
    let rows = server
        .execute_sql_as("bob", "pw", "SELECT * FROM rp.items WHERE id IN (1, 2, 4)")
        .await
        .rows();
    assert!(rows.is_empty(), "{rows:?}");
    // Refusals and errors are the general path's.
    alice("SELECT * FROM rp.secret WHERE id = 1".into())
        .await
        .expect_error(403, "PERMISSION_DENIED");
    alice("SELECT * FROM rp.nothing WHERE id = 1".into())
        .await
        .expect_error(404, "TABLE_NOT_FOUND");
    alice("SELECT nope FROM rp.items WHERE id = 1".into())
        .await
        .expect_error(400, "COLUMN_NOT_FOUND");
    let before = point_reads(&server).await;
    let repeated = alice("SELECT id, id FROM rp.items WHERE id = 1".into()).await;
    assert_eq!(
        point_reads(&server).await,
        before,
        "repeated names take the planner"
    );
    assert_eq!(
        repeated.body["status"],
        alice("SELECT id, id FROM rp.items WHERE id = 1 AND TRUE".into())
            .await
            .body["status"]
    );
}

/// Select lists whose items only the planner would name alike run, under the names
/// as written; `CREATE INDEX` takes ordering keywords; a comma join of eight tables
/// with a filter on each runs from the filtered inputs.
#[tokio::test]
async fn names_that_clash_once_planned_ordered_indexes_and_wide_comma_joins() {
    let server = TestServer::start().await;
    server
        .execute_sql(
            "CREATE NAMESPACE q; CREATE SHARED TABLE q.t (id INT PRIMARY KEY, a INT, c INT); \
             INSERT INTO q.t VALUES (1, 2, 4), (2, 5, 7)",
        )
        .await
        .expect_success();
    let minus = server.execute_sql("SELECT - + c, - c FROM q.t ORDER BY 1").await;
    assert_eq!(minus.column_names(), vec!["-+c", "-c"]);
    assert_eq!(
        minus.rows(),
        vec![vec![json!(-7), json!(-7)], vec![json!(-4), json!(-4)]]
    );
    let distinct = server
        .execute_sql("SELECT DISTINCT + c, 94 AS c FROM q.t ORDER BY 1")
        .await;
    assert_eq!(distinct.column_names(), vec!["c", "c"]);
    assert_eq!(
        distinct.rows(),
        vec![vec![json!(4), json!(94)], vec![json!(7), json!(94)]]
    );
    let subqueries = server
        .execute_sql("SELECT (SELECT a FROM q.t WHERE id = 1), (SELECT a FROM q.t WHERE id = 2) FROM q.t")
        .await;
    assert_eq!(
        subqueries.rows(),
        vec![vec![json!(2), json!(5)], vec![json!(2), json!(5)]]
    );
    assert_eq!(
        subqueries.column_names(),
        vec![
            "(SELECT a FROM q.t WHERE id = 1)",
            "(SELECT a FROM q.t WHERE id = 2)"
        ]
    );

    server
        .execute_sql("CREATE INDEX t_a_c ON q.t (a DESC, c ASC NULLS LAST)")
        .await
        .expect_success();
    let listed = server
        .execute_sql("SELECT columns FROM system.indexes WHERE index_name = 't_a_c'")
        .await;
    assert_eq!(listed.rows(), vec![vec![json!("a DESC, c")]]);
    assert_eq!(
        server.execute_sql("SELECT id FROM q.t WHERE a = 5").await.rows(),
        vec![vec![json!(2)]]
    );

    // Eight tables of 200 rows: a cross product of unfiltered inputs would be 2.56e18
    // rows; each filter reaches its table first.
    let mut setup = String::new();
    for i in 1..=8 {
        let rows: Vec<String> = (1..=200)
            .map(|r| format!("({r}, {}, {}, 'x{i}-{r}')", (r * 37 + i * 11) % 997, r % 7))
            .collect();
        setup.push_str(&format!(
            "CREATE SHARED TABLE q.w{i} (k{i} INT PRIMARY KEY, a{i} INT, c{i} INT, x{i} TEXT); INSERT INTO q.w{i} VALUES {};",
            rows.join(", ")
        ));
    }
    server.execute_sql(&setup).await.expect_success();
    let joined = server
        .execute_sql(
            "SELECT count(*), min(x1), max(x4) FROM q.w1, q.w2, q.w3, q.w4, q.w5, q.w6, q.w7, q.w8 \
             WHERE a1 = 48 AND a2 IN (59, 96) AND k3 = 7 AND a4 BETWEEN 10 AND 12 AND (k5 = 1 OR k5 = 2) \
             AND c6 = c7 AND k6 <= 10 AND k7 < 4 AND k8 IN (3, 4) AND c1 = c2",
        )
        .await;
    // w1: a1 = 48 only at k 1 (c 1); w2: a2 in (59, 96) at k 1, 2 (c 1, 2), so c1 = c2
    // keeps one pair; w3 one row; w4: a4 = 11 at k 53; w5 two rows; w6 ⋈ w7 on c over
    // k6 <= 10 and k7 < 4: six pairs; w8 two rows: 1 × 1 × 1 × 2 × 6 × 2 = 24.
    assert_eq!(
        joined.rows(),
        vec![vec![json!(24), json!("x1-1"), json!("x4-53")]]
    );
    let product = server
        .execute_sql(
            "SELECT count(*) FROM q.w1, q.w2, q.w3, q.w4, q.w5, q.w6, q.w7, q.w8 \
             WHERE a1 = 48 AND a2 IN (59, 96) AND k3 = 7 AND k4 <= 3 AND (k5 = 1 OR k5 = 2) \
             AND c6 = c7 AND k6 <= 10 AND k7 < 4 AND k8 IN (3, 4)",
        )
        .await;
    // 1 × 2 × 1 × 3 × 2 × 6 × 2
    assert_eq!(product.rows(), vec![vec![json!(144)]]);
}
