//! Layer order of the engine (docs/ARCHITECTURE.md):
//! schema → rows → tiers → query → results → statements → {live, jobs} → lib.
//! A `crate::`/`super::` path may name its own layer or a lower one; live and jobs never
//! name each other; nothing names an item of lib.rs; an `extern` module (code bound for another
//! crate; none is left) names nothing of core; no import cycles. std only.
//! Comments, literals and `#[cfg(test)] mod`s are skipped. Paths relative to a module's
//! own children (`feed::x` in live/mod.rs) are not read: a layer's mod.rs only declares
//! and re-exports. This file is a test module of its own and is not read.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

#[rustfmt::skip]
const LAYERS: &[(&str, u8)] = &[("extern", 0), ("schema", 1), ("rows", 2), ("tiers", 3),
    ("query", 4), ("results", 5), ("statements", 6), ("live", 7), ("jobs", 7), ("lib", 8)];

/// Top-level module → layer: the layer directories, then today's flat modules (each line
/// goes when its module moves into a directory). A module missing here fails the test.
#[rustfmt::skip]
const MODULES: &[(&str, &str)] = &[
    ("schema", "schema"), ("rows", "rows"), ("tiers", "tiers"), ("query", "query"), ("results", "results"),
    ("statements", "statements"), ("live", "live"), ("jobs", "jobs"),
    ("catalog", "schema"), ("auth", "schema"), ("access", "schema"), ("budget", "schema"),
    ("base", "schema"), ("defaults", "schema"), ("failpoint", "schema"), ("job_record", "schema"),
    ("arrow_conv", "rows"), ("assemble", "rows"), ("segment", "rows"), ("index", "rows"), ("seq", "rows"),
    ("cold", "tiers"), ("scoped", "tiers"), ("write", "tiers"), ("stream", "tiers"),
    ("hot_rows", "tiers"), ("observers", "tiers"), ("locks", "tiers"), ("storages", "tiers"), ("identity", "tiers"), ("txn", "tiers"), ("pending", "tiers"),
    ("provider", "query"), ("tiered_scan", "query"), ("point_read", "query"), ("system_tables", "query"),
    ("executor", "statements"), ("session", "statements"), ("views", "statements"), ("dml", "statements"), ("ingest", "statements"),
    ("index_build", "statements"),
    ("maintenance", "lib"),
];

struct Source {
    file: String,
    module: Vec<String>,
    code: Vec<char>,
}
/// A named path, from the crate root: `crate::a::b` → [a, b]; `super::c` in x/y.rs → [x, c].
struct Named {
    line: usize,
    path: Vec<String>,
}
struct Edge {
    file: String,
    from: String,
    to: String,
    line: usize,
    path: String,
}
fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}
fn sources() -> Vec<Source> {
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("src is readable")
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    collect(&src, &mut paths);
    let mut sources = Vec::new();
    for path in paths {
        let parts: Vec<String> = path
            .strip_prefix(&src)
            .expect("under src")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let file = parts.join("/");
        let module = module_path(&file);
        if module.last().is_some_and(|m| m == "tests") || file == "layers.rs" {
            continue;
        }
        let mut code = code_only(&std::fs::read_to_string(&path).expect("a readable source"));
        blank_test_modules(&mut code);
        sources.push(Source { file, module, code });
    }
    sources
}

/// `lib.rs` → [], `a.rs` and `a/mod.rs` → [a], `a/b.rs` → [a, b].
fn module_path(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file.split('/').map(str::to_string).collect();
    let stem = parts
        .pop()
        .expect("a file name")
        .trim_end_matches(".rs")
        .to_string();
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem);
    }
    parts
}

/// The text with comments, string and char literals blanked (newlines kept).
fn code_only(text: &str) -> Vec<char> {
    let s: Vec<char> = text.chars().collect();
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let (c, next) = (s[i], s.get(i + 1).copied());
        let end = if c == '/' && next == Some('/') {
            (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len())
        } else if c == '/' && next == Some('*') {
            let (mut depth, mut j) = (0usize, i);
            while j < s.len() {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j.min(s.len())
        } else if let Some(end) = raw_string_end(&s, i) {
            end
        } else if c == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            (j + 1).min(s.len())
        } else if c == '\'' && next == Some('\\') {
            ((i + 3)..s.len())
                .find(|&j| s[j] == '\'')
                .map_or(s.len(), |j| j + 1)
        } else if c == '\'' && s.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            out.push(c); // code, or a lifetime's quote
            i += 1;
            continue;
        };
        out.extend(s[i..end].iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
        i = end;
    }
    out
}

/// Where a raw string (`r"…"`, `r#"…"#`, `br"…"`) starting at `i` ends.
fn raw_string_end(s: &[char], i: usize) -> Option<usize> {
    let r = if s[i] == 'b' && s.get(i + 1) == Some(&'r') {
        i + 1
    } else {
        i
    };
    if s[r] != 'r' || (i > 0 && is_ident(s[i - 1])) {
        return None;
    }
    let hashes = s[r + 1..].iter().take_while(|&&c| c == '#').count();
    if s.get(r + 1 + hashes) != Some(&'"') {
        return None;
    }
    let close =
        (r + 2 + hashes..s.len()).find(|&j| s[j] == '"' && (1..=hashes).all(|k| s.get(j + k) == Some(&'#')));
    Some(close.map_or(s.len(), |j| j + 1 + hashes))
}
fn find(code: &[char], pattern: &[char], from: usize) -> Option<usize> {
    (from..=code.len().saturating_sub(pattern.len())).find(|&i| code[i..].starts_with(pattern))
}
fn skip_ws(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}
fn blank_test_modules(code: &mut [char]) {
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut from = 0;
    while let Some(at) = find(code, &marker, from) {
        from = at + marker.len();
        let rest: String = code[from..].iter().take(64).collect();
        let rest = rest.trim_start();
        if !["mod ", "pub mod ", "pub(crate) mod "]
            .iter()
            .any(|p| rest.starts_with(*p))
        {
            continue;
        }
        let Some(open) = (from..code.len()).find(|&j| code[j] == '{' || code[j] == ';') else {
            break;
        };
        if code[open] == ';' {
            continue;
        }
        let (mut depth, mut end) = (0usize, code.len() - 1);
        for (j, &c) in code.iter().enumerate().skip(open) {
            if c == '{' {
                depth += 1;
            }
            if c == '}' {
                depth -= 1;
                if depth == 0 {
                    end = j;
                    break;
                }
            }
        }
        for c in &mut code[at..=end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        from = end;
    }
}

/// `a::b::c` at `i`, up to the first thing that is not a name (`{`, `;`, `as`, …).
fn path_at(code: &[char], mut i: usize) -> Vec<String> {
    let mut path = Vec::new();
    loop {
        i = skip_ws(code, i);
        let start = i;
        while i < code.len() && is_ident(code[i]) {
            i += 1;
        }
        if i == start {
            return path;
        }
        path.push(code[start..i].iter().collect::<String>());
        let j = skip_ws(code, i);
        if !code[j..].starts_with(&[':', ':']) {
            return path;
        }
        i = j + 2;
    }
}

/// The paths of a group `{a::b, c, d::{e, f}}` at `open`: [a, b], [c], [d].
fn group(code: &[char], open: usize) -> Vec<Vec<String>> {
    let (mut starts, mut depth) = (vec![open + 1], 0usize);
    for (j, &c) in code.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => starts.push(j + 1),
            _ => {}
        }
    }
    starts
        .into_iter()
        .map(|s| path_at(code, s))
        .filter(|p| !p.is_empty())
        .collect()
}
fn named_paths(source: &Source) -> Vec<Named> {
    let code = &source.code;
    let mut found = Vec::new();
    for keyword in ["crate", "super"] {
        let pattern: Vec<char> = keyword.chars().collect();
        let mut from = 0;
        while let Some(at) = find(code, &pattern, from) {
            from = at + pattern.len();
            // Whole words only: not `$crate`, `pub(crate)`, nor the second `super` of two.
            let before = if at > 0 { code[at - 1] } else { ' ' };
            let after = code.get(from).copied().unwrap_or(' ');
            if is_ident(before) || before == '$' || before == ':' || is_ident(after) {
                continue;
            }
            let (mut i, mut base) = (at, Vec::new());
            if keyword == "crate" {
                i = skip_ws(code, from);
                if !code[i..].starts_with(&[':', ':']) {
                    continue;
                }
                i += 2;
            } else {
                let mut levels = 0;
                loop {
                    let j = skip_ws(code, i);
                    if !code[j..].starts_with(&pattern) {
                        break;
                    }
                    let k = skip_ws(code, j + pattern.len());
                    if !code[k..].starts_with(&[':', ':']) {
                        break;
                    }
                    levels += 1;
                    i = k + 2;
                }
                if levels == 0 {
                    continue;
                }
                base = source.module[..source.module.len().saturating_sub(levels)].to_vec();
            }
            let line = code[..at].iter().filter(|&&c| c == '\n').count() + 1;
            let i = skip_ws(code, i);
            let tails = if code.get(i) == Some(&'{') {
                group(code, i)
            } else {
                vec![path_at(code, i)]
            };
            for tail in tails {
                let mut path = base.clone();
                path.extend(tail);
                found.push(Named { line, path });
            }
            from = from.max(i);
        }
    }
    found
}

/// The module a path lands in: its first two segments if they are a module (`live::feed`),
/// else its first (`scoped`), else `lib` (an item of lib.rs).
fn node_of(path: &[String], modules: &BTreeSet<Vec<String>>) -> String {
    if path.len() >= 2 && modules.contains(&path[..2].to_vec()) {
        return path[..2].join("::");
    }
    if !path.is_empty() && modules.contains(&path[..1].to_vec()) {
        return path[0].clone();
    }
    "lib".to_string()
}
fn layer_of(node: &str) -> &'static str {
    let top = node.split("::").next().unwrap_or(node);
    if top == "lib" {
        return "lib";
    }
    let found = MODULES.iter().find(|(m, _)| *m == top).map(|(_, l)| *l);
    found.unwrap_or_else(|| panic!("module `{top}` has no layer: add it to MODULES in src/layers.rs"))
}
fn allowed(from: &str, to: &str) -> bool {
    let rank = |layer: &str| {
        LAYERS
            .iter()
            .find(|(l, _)| *l == layer)
            .map(|(_, r)| *r)
            .expect("a layer")
    };
    from != "extern" && (from == to || rank(to) < rank(from))
}
fn edges() -> Vec<Edge> {
    let sources = sources();
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut out = Vec::new();
    for source in &sources {
        let from = node_of(&source.module, &modules);
        for Named { line, path } in named_paths(source) {
            let to = node_of(&path, &modules);
            if to != from {
                let (file, path) = (source.file.clone(), path.join("::"));
                out.push(Edge {
                    file,
                    from: from.clone(),
                    to,
                    line,
                    path,
                });
            }
        }
    }
    out
}

#[test]
fn imports_point_down_the_layers() {
    let mut failures = Vec::new();
    for Edge {
        file,
        from,
        to,
        line,
        path,
    } in edges()
    {
        let (from_layer, to_layer) = (layer_of(&from), layer_of(&to));
        if !allowed(from_layer, to_layer) {
            failures.push(format!(
                "{file}:{line}: {from} ({from_layer}) names {path} ({to_layer})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "layer order broken:\n{}",
        failures.join("\n")
    );
}

/// A shortest path `m → … → m`, if any.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, m: &str) -> Option<Vec<String>> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([m.to_string()]);
    while let Some(at) = queue.pop_front() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == m {
                let mut chain = vec![at.clone()];
                while chain.last().map(String::as_str) != Some(m) {
                    let previous = parent[chain.last().expect("non-empty")].clone();
                    chain.push(previous);
                }
                chain.reverse();
                chain.push(m.to_string());
                return Some(chain);
            }
            if !parent.contains_key(next) {
                parent.insert(next.clone(), at.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

#[test]
fn no_import_cycles() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for Edge { from, to, .. } in edges() {
        // A module and its own submodules may name each other.
        if !to.starts_with(&format!("{from}::")) && !from.starts_with(&format!("{to}::")) {
            graph.entry(from).or_default().insert(to);
        }
    }
    let failures: Vec<String> = (graph.keys())
        .filter_map(|m| cycle_through(&graph, m))
        .map(|cycle| format!("import cycle: {}", cycle.join(" → ")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_reader_finds_paths_and_nothing_else() {
    let text = r#"
use crate::{a::B, c, d::{e, f}};
use super::g::H;
// crate::commented
let s = "crate::in_a_string"; let q = r"crate::raw";
let c = '"'; let l: &'static str = "x";
fn f() -> crate :: i::J { pub(crate) fn k() {} }
#[cfg(test)]
mod tests { use crate::tested; }
"#;
    let mut code = code_only(text);
    blank_test_modules(&mut code);
    let source = Source {
        file: "x/y.rs".into(),
        module: vec!["x".into(), "y".into()],
        code,
    };
    let found: Vec<(usize, String)> = named_paths(&source)
        .into_iter()
        .map(|n| (n.line, n.path.join("::")))
        .collect();
    let expected: Vec<(usize, String)> = vec![
        (2, "a::B".into()),
        (2, "c".into()),
        (2, "d".into()),
        (7, "i::J".into()),
        (3, "x::g::H".into()),
    ];
    assert_eq!(found, expected);
}
