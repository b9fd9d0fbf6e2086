//! Splitting SQL text into statements (the server splits requests with it; the
//! `kalam` client finds where a statement typed over several lines ends).

/// Splits SQL text at `;` outside string literals, quoted identifiers, dollar-quoted
/// strings and comments. Returns the non-empty statements, trimmed.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let (mut statements, rest) = split_terminated(sql);
    push_statement(&mut statements, rest);
    statements
}

/// The non-empty statements ended by a `;` (trimmed, without it), and the text
/// after the last `;`: a statement still being written, or blank (see
/// [`is_blank`]). A `;` inside an unclosed quote or comment ends nothing.
pub fn split_terminated(sql: &str) -> (Vec<&str>, &str) {
    let bytes = sql.as_bytes();
    let mut statements = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i, bytes[i]),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1)
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(bytes.len(), |p| i + 2 + p + 2)
            }
            b'$' => i = skip_dollar_quoted(sql, i),
            b';' => {
                push_statement(&mut statements, &sql[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    (statements, &sql[start..])
}

fn push_statement<'a>(statements: &mut Vec<&'a str>, text: &'a str) {
    if !is_blank(text) {
        statements.push(text.trim());
    }
}

/// True when the text holds only whitespace and comments.
pub fn is_blank(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.find('\n').map_or("", |p| &after[p + 1..]).trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |p| &after[p + 2..]).trim_start();
        } else {
            return rest.is_empty();
        }
    }
}

/// Index just past the closing quote (a doubled quote is an escaped quote).
fn skip_quoted(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// `$tag$ ... $tag$` (PostgreSQL); a `$` that does not open one (`$1`) is one character.
fn skip_dollar_quoted(sql: &str, open: usize) -> usize {
    let rest = &sql[open + 1..];
    let tag_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let tag = &rest[..tag_len];
    if !rest[tag_len..].starts_with('$') || tag.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return open + 1;
    }
    let delimiter = format!("${tag}$");
    let body_start = open + 1 + tag_len + 1;
    sql[body_start..]
        .find(&delimiter)
        .map_or(sql.len(), |p| body_start + p + delimiter.len())
}

#[cfg(test)]
mod tests {
    use super::{split_statements, split_terminated};

    #[track_caller]
    fn check(sql: &str, expected: &[&str]) {
        assert_eq!(split_statements(sql), expected);
    }

    #[test]
    fn splits_outside_quotes_and_comments() {
        check("SELECT 1; SELECT 2;", &["SELECT 1", "SELECT 2"]);
        check("SELECT ';'; SELECT 2", &["SELECT ';'", "SELECT 2"]);
        check("SELECT 'it''s;'", &["SELECT 'it''s;'"]);
        check("SELECT \"a;b\" FROM t", &["SELECT \"a;b\" FROM t"]);
        check(
            "SELECT 1 -- a; comment\n; SELECT 2",
            &["SELECT 1 -- a; comment", "SELECT 2"],
        );
        check("/* ; */ SELECT 1", &["/* ; */ SELECT 1"]);
        check("SELECT $$a;b$$; SELECT $1", &["SELECT $$a;b$$", "SELECT $1"]);
        check("SELECT $x$ ; $x$", &["SELECT $x$ ; $x$"]);
        check(" ; ;; -- nothing\n", &[]);
        check("", &[]);
    }

    #[test]
    fn finds_the_statement_still_being_written() {
        assert_eq!(
            split_terminated("SELECT 1; SELECT"),
            (vec!["SELECT 1"], " SELECT")
        );
        assert_eq!(split_terminated("SELECT 1;\n"), (vec!["SELECT 1"], "\n"));
        assert_eq!(split_terminated("SELECT 'a;\nb"), (vec![], "SELECT 'a;\nb"));
        assert_eq!(split_terminated("SELECT 1 /* ; "), (vec![], "SELECT 1 /* ; "));
        assert_eq!(split_terminated("SELECT 1 -- ;\n;"), (vec!["SELECT 1 -- ;"], ""));
    }
}
