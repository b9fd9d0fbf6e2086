//! The interactive shell: line editing and history (rustyline), statements over
//! several lines until `;`, tab completion of keywords and of the server's names.

use std::sync::{Arc, Mutex};

use kalamdb_commons::split::{is_blank, split_terminated};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::History;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{CompletionType, Config, Context, Editor, Helper};

use crate::session::{Names, Outcome, Session};

const PROMPT: &str = "kalam> ";

/// SQL and KalamDB keywords offered by completion.
const KEYWORDS: &[&str] = &[
    "ACCESS_LEVEL",
    "ADD",
    "ALL",
    "ALTER",
    "AND",
    "AS",
    "ASC",
    "BETWEEN",
    "BIGINT",
    "BOOLEAN",
    "BY",
    "BYTES",
    "CASCADE",
    "CASE",
    "CAST",
    "COLUMN",
    "CONFLICT",
    "COUNT",
    "CREATE",
    "CURRENT_USER",
    "DATE",
    "DECIMAL",
    "DEFAULT",
    "DELETE",
    "DESC",
    "DESCRIBE",
    "DISTINCT",
    "DO",
    "DOUBLE",
    "DROP",
    "ELSE",
    "END",
    "EXCLUDED",
    "EXECUTE",
    "EXISTS",
    "EXPLAIN",
    "FALSE",
    "FLOAT",
    "FLUSH",
    "FLUSH_POLICY",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "IF",
    "IN",
    "INNER",
    "INSERT",
    "INT",
    "INTO",
    "IS",
    "JOB",
    "JOIN",
    "JSON",
    "KEY",
    "KILL",
    "LEFT",
    "LIKE",
    "LIMIT",
    "NAMESPACE",
    "NAMESPACES",
    "NOT",
    "NOTHING",
    "NOW",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "PASSWORD",
    "PRIMARY",
    "PRIVATE",
    "PUBLIC",
    "RETURNING",
    "RIGHT",
    "ROLE",
    "SELECT",
    "SET",
    "SHARED",
    "SHOW",
    "SMALLINT",
    "SNOWFLAKE_ID",
    "STATS",
    "STORAGE",
    "STREAM",
    "TABLE",
    "TABLES",
    "TEXT",
    "THEN",
    "TIMESTAMP",
    "TRUE",
    "TTL_SECONDS",
    "UNION",
    "UPDATE",
    "USER",
    "USERS",
    "USING",
    "UUID",
    "UUID_V7",
    "VALUES",
    "WHEN",
    "WHERE",
    "WITH",
];

const COMMANDS: &[&str] = &[
    "\\as", "\\d", "\\dn", "\\dt", "\\du", "\\flush", "\\format", "\\help", "\\jobs", "\\q", "\\timing",
    "\\watch",
];

/// Completion and multi-line input for the editor.
struct ShellHelper {
    names: Arc<Mutex<Names>>,
}

impl Helper for ShellHelper {}
impl Highlighter for ShellHelper {}
impl Hinter for ShellHelper {
    type Hint = String;
}

impl Validator for ShellHelper {
    /// Enter runs the input once it is a backslash command or ends with `;`
    /// (outside quotes and comments); otherwise it starts a new line.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        let trimmed = input.trim();
        let complete = trimmed.starts_with('\\')
            || is_blank(input)
            || matches!(trimmed.to_ascii_lowercase().as_str(), "quit" | "exit")
            || is_blank(split_terminated(input).1);
        Ok(if complete {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '\\'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        let names = self.names.lock().expect("names lock");
        Ok((start, candidates(&names, &line[..start], word)))
    }
}

/// What `word` (before the cursor, after `before`) may become.
fn candidates(names: &Names, before: &str, word: &str) -> Vec<Pair> {
    let pair = |s: String| Pair {
        display: s.clone(),
        replacement: s,
    };
    if word.starts_with('\\') {
        if !before.trim().is_empty() {
            return Vec::new();
        }
        return COMMANDS
            .iter()
            .filter(|c| c.starts_with(word))
            .map(|c| pair(c.to_string()))
            .collect();
    }
    let lower = word.to_ascii_lowercase();
    let mut found: Vec<String> = Vec::new();
    if let Some((qualifier, partial)) = lower.rsplit_once('.') {
        // `ns.` → its tables; `table.` or `ns.table.` → its columns.
        let prefix = &word[..word.len() - partial.len()];
        for (ns, table) in &names.tables {
            if ns == qualifier && table.starts_with(partial) {
                found.push(format!("{prefix}{table}"));
            }
        }
        for (ns, table, column) in &names.columns {
            let qualified = format!("{ns}.{table}");
            if (table == qualifier || qualified == qualifier) && column.starts_with(partial) {
                found.push(format!("{prefix}{column}"));
            }
        }
    } else {
        let upper = word.chars().next().is_some_and(|c| c.is_ascii_uppercase());
        for keyword in KEYWORDS {
            if keyword.to_ascii_lowercase().starts_with(&lower) {
                found.push(if upper {
                    keyword.to_string()
                } else {
                    keyword.to_ascii_lowercase()
                });
            }
        }
        for ns in &names.namespaces {
            if ns.starts_with(&lower) {
                found.push(format!("{ns}."));
            }
        }
        for (_, table) in &names.tables {
            if table.starts_with(&lower) {
                found.push(table.clone());
            }
        }
        for (_, _, column) in &names.columns {
            if column.starts_with(&lower) {
                found.push(column.clone());
            }
        }
    }
    found.sort();
    found.dedup();
    found.into_iter().map(pair).collect()
}

/// Runs the shell until `\q` or Ctrl-D.
pub fn run(runtime: &tokio::runtime::Runtime, mut session: Session, greeting: &str) -> Outcome {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .max_history_size(5000)
        .map(|b| b.build())
        .unwrap_or_default();
    let mut editor = match Editor::with_config(config) {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("kalam: cannot start the line editor: {e}");
            return Outcome::Disconnected;
        }
    };
    editor.set_helper(Some(ShellHelper {
        names: session.names.clone(),
    }));
    let history = crate::config::home().map(|h| h.join("history"));
    if let Some(path) = &history
        && editor.load_history(path).is_ok()
    {
        // A history written by an older kalam may hold passwords: drop those lines.
        let kept: Vec<String> = (editor.history().iter())
            .filter(|line| history_safe(line))
            .cloned()
            .collect();
        if kept.len() < editor.history().len() {
            let _ = editor.clear_history();
            for line in &kept {
                let _ = editor.add_history_entry(line.as_str());
            }
            let _ = editor.save_history(path);
        }
    }
    println!("{greeting}");
    loop {
        let input = match editor.readline(PROMPT) {
            Ok(input) => input,
            // Ctrl-C: the input is dropped, the shell stays.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break Outcome::Done,
            Err(e) => {
                eprintln!("kalam: cannot read input: {e}");
                break Outcome::Failed;
            }
        };
        if is_blank(&input) {
            continue;
        }
        // Statements that carry a password or a secret are never remembered (nor
        // offered by the arrow keys): the history file is plain text.
        if history_safe(&input)
            && editor.add_history_entry(input.trim()).unwrap_or(false)
            && let Some(path) = &history
        {
            let _ = std::fs::create_dir_all(path.parent().expect("a file in a directory"));
            let _ = editor.save_history(path);
        }
        if matches!(input.trim().to_ascii_lowercase().as_str(), "quit" | "exit") {
            break Outcome::Done;
        }
        // A failure was printed; the shell stays open (a server that went away may
        // come back).
        if runtime.block_on(session.run_script(&input)) == Outcome::Quit {
            break Outcome::Done;
        }
    }
}

/// Words after which a statement carries a secret (`CREATE USER ... PASSWORD '...'`,
/// `ALTER USER ... SET PASSWORD`, a storage's `SECRET_ACCESS_KEY '...'`).
const SECRET_WORDS: [&str; 3] = ["password", "identified", "secret_access_key"];

/// Whether `input` may be kept in the history: it names none of [`SECRET_WORDS`]
/// as a word (a false alarm only costs a history line).
pub(crate) fn history_safe(input: &str) -> bool {
    !input
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| {
            SECRET_WORDS
                .iter()
                .any(|secret| word.eq_ignore_ascii_case(secret))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_with_passwords_stay_out_of_the_history() {
        for unsafe_input in [
            "CREATE USER 'a' WITH PASSWORD 'x' ROLE user",
            "alter user 'a' set password 'y';",
            "CREATE STORAGE s TYPE s3 BUCKET 'b' ACCESS_KEY_ID 'k' SECRET_ACCESS_KEY 'z'",
            "SELECT 1;\nALTER USER 'a' SET\tPassword 'y'",
        ] {
            assert!(!history_safe(unsafe_input), "{unsafe_input}");
        }
        for safe in [
            "SELECT * FROM t",
            "SELECT password_hash_len FROM t",
            "SELECT passwords FROM t",
        ] {
            assert!(history_safe(safe), "{safe}");
        }
    }

    fn names() -> Names {
        let mut names = Names::default();
        names.namespaces.insert("shop".into());
        names.tables.insert(("shop".into(), "orders".into()));
        names.tables.insert(("shop".into(), "order_lines".into()));
        names
            .columns
            .insert(("shop".into(), "orders".into(), "total".into()));
        names
            .columns
            .insert(("shop".into(), "orders".into(), "placed_at".into()));
        names
    }

    fn words(before: &str, word: &str) -> Vec<String> {
        candidates(&names(), before, word)
            .into_iter()
            .map(|p| p.replacement)
            .collect()
    }

    #[test]
    fn completes_keywords_names_and_commands() {
        assert_eq!(words("", "SEL"), vec!["SELECT"]);
        assert_eq!(words("", "sel"), vec!["select"]);
        assert_eq!(words("SELECT * FROM ", "sh"), vec!["shared", "shop.", "show"]);
        assert_eq!(
            words("SELECT * FROM ", "shop.ord"),
            vec!["shop.order_lines", "shop.orders"]
        );
        assert_eq!(words("SELECT ", "orders.t"), vec!["orders.total"]);
        assert_eq!(words("SELECT ", "shop.orders.p"), vec!["shop.orders.placed_at"]);
        assert_eq!(words("", "\\d"), vec!["\\d", "\\dn", "\\dt", "\\du"]);
        assert!(words("SELECT ", "\\d").is_empty());
    }
}
