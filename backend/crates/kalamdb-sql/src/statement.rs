//! The typed statement and its parser.

use datafusion::sql::sqlparser::ast::{
    CommentObject, Ident, ObjectName, Statement, TransactionAccessMode, TransactionIsolationLevel,
    TransactionMode,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use kalamdb_commons::{KalamError, KalamResult, Role, TableType};

use crate::ddl::{ColumnSpec, CreateTable, column_spec, create_table};
use crate::flush_commands::{parse_kill, parse_storage};
use crate::storages::{StorageSpec, parse_create_storage, parse_drop_storage};
use crate::users::{UserChange, parse_alter_user, parse_create_user, parse_drop_user, parse_execute_as};

/// A table as a statement names it: `ns.t`, or `t` in the request's default namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub namespace: Option<String>,
    pub name: String,
}

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum KalamStatement {
    CreateNamespace {
        name: String,
        if_not_exists: bool,
    },
    DropNamespace {
        name: String,
        if_exists: bool,
        cascade: bool,
    },
    ShowNamespaces,
    CreateTable(CreateTable),
    DropTable {
        table: TableRef,
        /// `DROP USER TABLE` checks the type; plain `DROP TABLE` does not.
        table_type: Option<TableType>,
        if_exists: bool,
    },
    ShowTables {
        namespace: Option<String>,
    },
    DescribeTable(TableRef),
    ShowStats(TableRef),
    AddColumn {
        table: TableRef,
        column: ColumnSpec,
        if_not_exists: bool,
    },
    DropColumn {
        table: TableRef,
        column: String,
        if_exists: bool,
    },
    CreateUser {
        name: String,
        password: String,
        role: Role,
        if_not_exists: bool,
    },
    AlterUser {
        name: String,
        change: UserChange,
    },
    DropUser {
        name: String,
        if_exists: bool,
    },
    /// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON ns.t (col, ...)`.
    CreateIndex {
        name: String,
        table: TableRef,
        columns: Vec<String>,
        /// Per column: `DESC` (recorded; the index serves the same lookups).
        descending: Vec<bool>,
        unique: bool,
        if_not_exists: bool,
    },
    /// `DROP INDEX [IF EXISTS] [ns.]name`.
    DropIndex {
        /// The namespace and name of the index (index names are unique per namespace).
        index: TableRef,
        if_exists: bool,
    },
    /// `CREATE STORAGE [IF NOT EXISTS] name TYPE …` (`storages.rs`).
    CreateStorage {
        name: String,
        spec: StorageSpec,
        if_not_exists: bool,
    },
    /// `DROP STORAGE [IF EXISTS] name`.
    DropStorage {
        name: String,
        if_exists: bool,
    },
    /// `SHOW STORAGES`.
    ShowStorages,
    /// `STORAGE FLUSH TABLE ns.t`.
    FlushTable(TableRef),
    /// `STORAGE FLUSH ALL [IN [NAMESPACE] ns]`.
    FlushAll {
        namespace: Option<String>,
    },
    /// `STORAGE COMPACT TABLE ns.t`.
    CompactTable(TableRef),
    /// `STORAGE COMPACT ALL [IN [NAMESPACE] ns]`.
    CompactAll {
        namespace: Option<String>,
    },
    /// `KILL JOB 'id'`.
    KillJob {
        job_id: String,
    },
    /// `KILL LIVE QUERY 'id'` (an id as `system.live` shows it).
    KillLiveQuery {
        id: String,
    },
    /// `EXECUTE AS USER 'name' (statement)`: `sql` is the inner statement's text.
    ExecuteAs {
        user: String,
        sql: String,
    },
    /// `CREATE [OR REPLACE] VIEW [IF NOT EXISTS] ns.v [(a, ...)] AS query`.
    CreateView {
        view: TableRef,
        columns: Vec<String>,
        query: Box<datafusion::sql::sqlparser::ast::Query>,
        or_replace: bool,
        if_not_exists: bool,
    },
    /// `DROP VIEW [IF EXISTS] ns.v`.
    DropView {
        view: TableRef,
        if_exists: bool,
    },
    /// `COMMENT ON TABLE ns.t IS '...'` / `COMMENT ON COLUMN ns.t.c IS '...'` (`NULL`
    /// removes the comment).
    Comment {
        table: TableRef,
        column: Option<String>,
        comment: Option<String>,
    },
    /// `BEGIN`, `COMMIT`, `ROLLBACK` and their synonyms.
    Transaction(TransactionCommand),
    /// INSERT, UPDATE or DELETE, as sqlparser parsed it.
    Dml(Box<Statement>),
    /// SELECT, VALUES, WITH ..., EXPLAIN: planned by DataFusion.
    Query(Box<Statement>),
}

/// A transaction-control statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionCommand {
    /// `BEGIN [TRANSACTION | WORK] [modes]` or `START TRANSACTION [modes]`.
    Begin { read_only: bool },
    /// `COMMIT [TRANSACTION | WORK]` or `END`.
    Commit,
    /// `ROLLBACK [TRANSACTION | WORK]`.
    Rollback,
}

impl KalamStatement {
    /// True for statements that only read.
    pub fn is_query(&self) -> bool {
        matches!(
            self,
            KalamStatement::Query(_)
                | KalamStatement::ShowNamespaces
                | KalamStatement::ShowTables { .. }
                | KalamStatement::DescribeTable(_)
                | KalamStatement::ShowStats(_)
                | KalamStatement::ShowStorages
        )
    }
}

/// Parses one statement (no `;` separators: see [`crate::split_statements`]).
pub fn parse_statement(sql: &str) -> KalamResult<KalamStatement> {
    let dialect = crate::KalamDialect::default();
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| parser_error(e.into()))?;
    let parser = Parser::new(&dialect)
        .with_recursion_limit(crate::MAX_NESTING_DEPTH)
        .with_tokens_with_locations(without_current_user_parens(tokens));
    let mut c = Cursor { parser };
    let statement = match c.peek_word(0).as_deref() {
        Some("CREATE") => parse_create(&mut c)?,
        Some("DROP") => parse_drop(&mut c)?,
        Some("SHOW") => parse_show(&mut c)?,
        Some("DESCRIBE" | "DESC") => {
            c.parser.next_token();
            c.eat_word("TABLE");
            KalamStatement::DescribeTable(c.table_ref()?)
        }
        Some("ALTER") => parse_alter(&mut c)?,
        Some("STORAGE") => parse_storage(&mut c)?,
        Some("KILL") => parse_kill(&mut c)?,
        Some("EXECUTE") => parse_execute_as(sql, &mut c)?,
        _ => return parse_standard(c),
    };
    c.expect_end()?;
    Ok(statement)
}

/// Parses SQL text the server wrote itself around parts of a user's statement (the
/// rewritten DML and SHOW queries): KalamDB's dialect, and room for the few levels
/// the rewrite adds above a statement that passed [`crate::check_depth`].
pub fn parse_sql_text(sql: &str) -> Result<Vec<Statement>, ParserError> {
    Parser::new(&crate::KalamDialect::default())
        .with_recursion_limit(crate::MAX_NESTING_DEPTH + 16)
        .try_with_sql(sql)?
        .parse_statements()
}

/// `CURRENT_USER()` → `CURRENT_USER`: PostgreSQL's grammar has the bare keyword only,
/// KalamDB accepts both spellings.
fn without_current_user_parens(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        out.push(tokens[i].clone());
        let is_current_user = matches!(&tokens[i].token, Token::Word(w) if w.keyword == Keyword::CURRENT_USER && w.quote_style.is_none());
        if is_current_user
            && matches!(tokens.get(i + 1).map(|t| &t.token), Some(Token::LParen))
            && matches!(tokens.get(i + 2).map(|t| &t.token), Some(Token::RParen))
        {
            i += 3;
        } else {
            i += 1;
        }
    }
    out
}

fn parse_standard(mut c: Cursor<'_>) -> KalamResult<KalamStatement> {
    let statement = c.parser.parse_statement().map_err(parser_error)?;
    c.expect_end()?;
    crate::check_depth(&statement)?;
    match statement {
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
            Ok(KalamStatement::Dml(Box::new(statement)))
        }
        Statement::Query(_) | Statement::Explain { .. } => Ok(KalamStatement::Query(Box::new(statement))),
        Statement::StartTransaction {
            modes, statements, ..
        } if statements.is_empty() => {
            let mut read_only = false;
            for mode in modes {
                match mode {
                    TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => read_only = true,
                    TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => read_only = false,
                    TransactionMode::IsolationLevel(TransactionIsolationLevel::Serializable) => {
                        return Err(KalamError::unsupported(
                            "ISOLATION LEVEL SERIALIZABLE is not supported: transactions run under snapshot isolation (REPEATABLE READ)",
                        ));
                    }
                    // READ UNCOMMITTED, READ COMMITTED and REPEATABLE READ get snapshot
                    // isolation, which is at least as strong.
                    TransactionMode::IsolationLevel(_) => {}
                }
            }
            Ok(KalamStatement::Transaction(TransactionCommand::Begin {
                read_only,
            }))
        }
        Statement::Comment {
            object_type,
            object_name,
            comment,
            if_exists: false,
        } => {
            let column = match object_type {
                CommentObject::Table => None,
                CommentObject::Column => Some(()),
                other => {
                    return Err(KalamError::unsupported(format!(
                        "COMMENT ON {other} is not supported; COMMENT ON TABLE and COMMENT ON COLUMN are"
                    )));
                }
            };
            let (table, column) = match column {
                None => (object_name_to_table(&object_name)?, None),
                Some(()) => {
                    let mut parts = object_name.0.clone();
                    let column = (parts.pop())
                        .and_then(|p| p.as_ident().map(ident_name))
                        .filter(|_| !parts.is_empty())
                        .ok_or_else(|| KalamError::invalid_sql("COMMENT ON COLUMN names table.column"))?;
                    (object_name_to_table(&ObjectName(parts))?, Some(column))
                }
            };
            Ok(KalamStatement::Comment {
                table,
                column,
                comment,
            })
        }
        Statement::Commit { chain: false, .. } => Ok(KalamStatement::Transaction(TransactionCommand::Commit)),
        Statement::Rollback {
            chain: false,
            savepoint: None,
        } => Ok(KalamStatement::Transaction(TransactionCommand::Rollback)),
        Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } | Statement::Rollback { .. } => {
            Err(KalamError::unsupported(
                "savepoints (SAVEPOINT, RELEASE, ROLLBACK TO) and AND CHAIN are not supported",
            ))
        }
        other => Err(KalamError::unsupported(format!(
            "statement not supported: {}",
            first_words(&other.to_string())
        ))),
    }
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn parse_create(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("CREATE")?;
    let table_type = match (c.peek_word(0).as_deref(), c.peek_word(1).as_deref()) {
        (Some("NAMESPACE"), _) => {
            c.parser.next_token();
            let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
            return Ok(KalamStatement::CreateNamespace {
                name: c.identifier()?,
                if_not_exists,
            });
        }
        (Some("INDEX"), _) | (Some("UNIQUE"), Some("INDEX")) => return parse_create_index(c),
        (Some("VIEW"), _) | (Some("OR"), Some("REPLACE")) => return crate::views::parse_create_view(c),
        (Some("STORAGE"), _) => return parse_create_storage(c),
        (Some("USER"), Some("TABLE")) => Some(TableType::User),
        (Some("USER"), _) => return parse_create_user(c),
        (Some("SHARED"), Some("TABLE")) => Some(TableType::Shared),
        (Some("STREAM"), Some("TABLE")) => Some(TableType::Stream),
        (Some("TABLE"), _) => None,
        _ => {
            return Err(KalamError::unsupported(
                "CREATE supports NAMESPACE, [USER|SHARED|STREAM] TABLE, [UNIQUE] INDEX, [OR REPLACE] VIEW, USER and STORAGE",
            ));
        }
    };
    if table_type.is_some() {
        c.parser.next_token();
    }
    c.expect_word("TABLE")?;
    let create = c
        .parser
        .parse_create_table(false, false, None, false)
        .map_err(parser_error)?;
    Ok(KalamStatement::CreateTable(create_table(
        table_type.unwrap_or(TableType::Shared),
        create,
    )?))
}

fn parse_create_index(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    let unique = c.eat_word("UNIQUE");
    c.expect_word("INDEX")?;
    let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
    let name = c.identifier()?;
    c.expect_word("ON")?;
    let table = c.table_ref()?;
    if !c.parser.consume_token(&Token::LParen) {
        return Err(KalamError::invalid_sql(
            "syntax error: expected ( and the indexed columns",
        ));
    }
    let mut columns = Vec::new();
    let mut descending = Vec::new();
    loop {
        let column = c.identifier()?;
        if columns.contains(&column) {
            return Err(KalamError::invalid_sql(format!(
                "column '{column}' is named twice in the index"
            )));
        }
        columns.push(column);
        // PostgreSQL's ordering options: the order is recorded; NULLS FIRST|LAST
        // are taken and change nothing (lookups find NULLs either way).
        let desc = c.eat_word("DESC");
        if !desc {
            c.eat_word("ASC");
        }
        descending.push(desc);
        if c.eat_word("NULLS") && !c.eat_word("FIRST") && !c.eat_word("LAST") {
            return Err(KalamError::invalid_sql("syntax error: NULLS FIRST or NULLS LAST"));
        }
        if c.parser.consume_token(&Token::Comma) {
            continue;
        }
        if c.parser.consume_token(&Token::RParen) {
            break;
        }
        return Err(KalamError::invalid_sql(format!(
            "syntax error: expected , or ) in the index's columns, found {}",
            c.parser.peek_token_ref().token
        )));
    }
    Ok(KalamStatement::CreateIndex {
        name,
        table,
        columns,
        descending,
        unique,
        if_not_exists,
    })
}

fn parse_drop(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("DROP")?;
    let table_type = match (c.peek_word(0).as_deref(), c.peek_word(1).as_deref()) {
        (Some("NAMESPACE"), _) => {
            c.parser.next_token();
            let if_exists = c.eat_words(&["IF", "EXISTS"]);
            let name = c.identifier()?;
            let cascade = c.eat_word("CASCADE");
            return Ok(KalamStatement::DropNamespace {
                name,
                if_exists,
                cascade,
            });
        }
        (Some("INDEX"), _) => {
            c.parser.next_token();
            let if_exists = c.eat_words(&["IF", "EXISTS"]);
            return Ok(KalamStatement::DropIndex {
                index: c.table_ref()?,
                if_exists,
            });
        }
        (Some("USER"), Some("TABLE")) => Some(TableType::User),
        (Some("USER"), _) => return parse_drop_user(c),
        (Some("VIEW"), _) => return crate::views::parse_drop_view(c),
        (Some("STORAGE"), _) => return parse_drop_storage(c),
        (Some("SHARED"), Some("TABLE")) => Some(TableType::Shared),
        (Some("STREAM"), Some("TABLE")) => Some(TableType::Stream),
        (Some("TABLE"), _) => None,
        _ => {
            return Err(KalamError::unsupported(
                "DROP supports NAMESPACE, [USER|SHARED|STREAM] TABLE, VIEW, INDEX, USER and STORAGE",
            ));
        }
    };
    if table_type.is_some() {
        c.parser.next_token();
    }
    c.expect_word("TABLE")?;
    let if_exists = c.eat_words(&["IF", "EXISTS"]);
    Ok(KalamStatement::DropTable {
        table: c.table_ref()?,
        table_type,
        if_exists,
    })
}

fn parse_show(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("SHOW")?;
    if c.eat_word("NAMESPACES") {
        return Ok(KalamStatement::ShowNamespaces);
    }
    if c.eat_word("TABLES") {
        let namespace = if c.eat_word("IN") || c.eat_word("FROM") {
            c.eat_word("NAMESPACE");
            Some(c.identifier()?)
        } else {
            None
        };
        return Ok(KalamStatement::ShowTables { namespace });
    }
    if c.eat_word("STORAGES") {
        return Ok(KalamStatement::ShowStorages);
    }
    if c.eat_words(&["STATS", "FOR"]) {
        c.eat_word("TABLE");
        return Ok(KalamStatement::ShowStats(c.table_ref()?));
    }
    Err(KalamError::unsupported(
        "SHOW supports NAMESPACES, TABLES [IN ns], STORAGES and STATS FOR TABLE ns.t",
    ))
}

fn parse_alter(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("ALTER")?;
    if c.peek_word(0).as_deref() == Some("USER") {
        return parse_alter_user(c);
    }
    c.expect_word("TABLE")?;
    let table = c.table_ref()?;
    if c.eat_word("ADD") {
        c.eat_word("COLUMN");
        let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
        let def = c.parser.parse_column_def().map_err(parser_error)?;
        let column = column_spec(&def)?;
        if column.primary_key {
            return Err(KalamError::unsupported(
                "ALTER TABLE cannot add a PRIMARY KEY column",
            ));
        }
        if column.unique.is_some() {
            return Err(KalamError::unsupported(
                "ALTER TABLE ADD COLUMN cannot declare UNIQUE: add the column, then CREATE UNIQUE INDEX",
            ));
        }
        return Ok(KalamStatement::AddColumn {
            table,
            column,
            if_not_exists,
        });
    }
    if c.eat_word("DROP") {
        c.eat_word("COLUMN");
        let if_exists = c.eat_words(&["IF", "EXISTS"]);
        return Ok(KalamStatement::DropColumn {
            table,
            column: c.identifier()?,
            if_exists,
        });
    }
    Err(KalamError::unsupported(
        "ALTER TABLE supports ADD COLUMN and DROP COLUMN",
    ))
}

pub(crate) fn parser_error(e: ParserError) -> KalamError {
    if matches!(e, ParserError::RecursionLimitExceeded) {
        return crate::too_deeply_nested();
    }
    let message = e.to_string();
    let message = message.strip_prefix("sql parser error: ").unwrap_or(&message);
    KalamError::invalid_sql(format!("syntax error: {message}"))
}

/// An identifier as SQL means it: unquoted names fold to lower case, quoted ones do not.
pub fn ident_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    }
}

pub(crate) fn object_name_to_table(name: &ObjectName) -> KalamResult<TableRef> {
    let parts = name
        .0
        .iter()
        .map(|part| {
            part.as_ident()
                .map(ident_name)
                .ok_or_else(|| KalamError::invalid_sql(format!("invalid table name {name}")))
        })
        .collect::<KalamResult<Vec<_>>>()?;
    match parts.as_slice() {
        [table] => Ok(TableRef {
            namespace: None,
            name: table.clone(),
        }),
        [namespace, table] => Ok(TableRef {
            namespace: Some(namespace.clone()),
            name: table.clone(),
        }),
        _ => Err(KalamError::invalid_sql(format!(
            "table names are 'table' or 'namespace.table', not {name}"
        ))),
    }
}

/// sqlparser's parser with word-level helpers for KalamDB's own grammar.
pub(crate) struct Cursor<'a> {
    pub parser: Parser<'a>,
}

impl Cursor<'_> {
    /// The n-th next token as an upper-case unquoted word.
    pub fn peek_word(&self, n: usize) -> Option<String> {
        match &self.parser.peek_nth_token_ref(n).token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    pub fn eat_word(&mut self, word: &str) -> bool {
        if self.peek_word(0).as_deref() == Some(word) {
            self.parser.next_token();
            true
        } else {
            false
        }
    }

    /// Consumes all of `words` in order, or none of them.
    pub fn eat_words(&mut self, words: &[&str]) -> bool {
        let all = words
            .iter()
            .enumerate()
            .all(|(i, w)| self.peek_word(i).as_deref() == Some(*w));
        if all {
            for _ in words {
                self.parser.next_token();
            }
        }
        all
    }

    pub fn expect_word(&mut self, word: &str) -> KalamResult<()> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(KalamError::invalid_sql(format!(
                "syntax error: expected {word}, found {}",
                self.parser.peek_token_ref().token
            )))
        }
    }

    pub fn identifier(&mut self) -> KalamResult<String> {
        let ident = self.parser.parse_identifier().map_err(parser_error)?;
        Ok(ident_name(&ident))
    }

    /// A user name: `'alice'`, `"Alice"` or `alice`.
    pub fn name_or_string(&mut self) -> KalamResult<String> {
        if let Token::SingleQuotedString(s) = &self.parser.peek_token_ref().token {
            let s = s.clone();
            self.parser.next_token();
            return Ok(s);
        }
        self.identifier()
    }

    pub fn string(&mut self) -> KalamResult<String> {
        self.parser.parse_literal_string().map_err(parser_error)
    }

    pub fn table_ref(&mut self) -> KalamResult<TableRef> {
        let name = self.parser.parse_object_name(false).map_err(parser_error)?;
        object_name_to_table(&name)
    }

    pub fn expect_end(&mut self) -> KalamResult<()> {
        while self.parser.peek_token_ref().token == Token::SemiColon {
            self.parser.next_token();
        }
        match &self.parser.peek_token_ref().token {
            Token::EOF => Ok(()),
            other => Err(KalamError::invalid_sql(format!(
                "syntax error: unexpected {other} after the end of the statement"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalamdb_commons::{DefaultValue, ErrorCode, KalamType, Literal};

    #[track_caller]
    fn parse(sql: &str) -> KalamStatement {
        parse_statement(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[track_caller]
    fn parse_err(sql: &str) -> ErrorCode {
        parse_statement(sql).unwrap_err().code
    }

    fn table(ns: &str, name: &str) -> TableRef {
        TableRef {
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }

    #[test]
    fn namespaces() {
        assert_eq!(
            parse("create namespace if not exists App"),
            KalamStatement::CreateNamespace {
                name: "app".into(),
                if_not_exists: true
            }
        );
        assert_eq!(
            parse("DROP NAMESPACE app CASCADE"),
            KalamStatement::DropNamespace {
                name: "app".into(),
                if_exists: false,
                cascade: true
            }
        );
        assert_eq!(parse("SHOW NAMESPACES"), KalamStatement::ShowNamespaces);
        assert_eq!(
            parse("show tables in app"),
            KalamStatement::ShowTables {
                namespace: Some("app".into())
            }
        );
    }

    #[test]
    fn create_user_table_with_options() {
        let KalamStatement::CreateTable(ct) = parse(
            "CREATE USER TABLE app.messages (id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(), body TEXT NOT NULL, price DECIMAL(10,2) DEFAULT -1.5, at TIMESTAMP DEFAULT NOW()) WITH (FLUSH_POLICY = 'rows:100')",
        ) else {
            panic!("not a CREATE TABLE")
        };
        assert_eq!(ct.table, table("app", "messages"));
        assert_eq!(ct.table_type, TableType::User);
        assert_eq!(ct.primary_key.as_deref(), Some("id"));
        assert_eq!(ct.options.flush_policy.as_deref(), Some("rows:100"));
        let types: Vec<_> = ct.columns.iter().map(|c| c.data_type).collect();
        assert_eq!(
            types,
            vec![
                KalamType::BigInt,
                KalamType::Text,
                KalamType::Decimal {
                    precision: 10,
                    scale: 2
                },
                KalamType::Timestamp
            ]
        );
        assert_eq!(ct.columns[0].default, Some(DefaultValue::SnowflakeId));
        assert!(ct.columns[0].not_null && ct.columns[1].not_null && !ct.columns[2].not_null);
        assert_eq!(
            ct.columns[2].default,
            Some(DefaultValue::Literal {
                value: Literal::Number("-1.5".into())
            })
        );
        assert_eq!(ct.columns[3].default, Some(DefaultValue::Now));
    }

    #[test]
    fn plain_create_table_is_shared_and_may_lack_a_key() {
        let KalamStatement::CreateTable(ct) = parse("CREATE TABLE t(a INT, b VARCHAR, PRIMARY KEY (a))")
        else {
            panic!()
        };
        assert_eq!(ct.table_type, TableType::Shared);
        assert_eq!(ct.primary_key.as_deref(), Some("a"));
        let KalamStatement::CreateTable(ct) = parse("CREATE SHARED TABLE t(a INT, b BYTES, c UUID, d JSON)")
        else {
            panic!()
        };
        assert_eq!(ct.primary_key, None);
        assert_eq!(ct.columns[1].data_type, KalamType::Bytes);
    }

    #[test]
    fn create_table_errors() {
        assert_eq!(
            parse_err("CREATE TABLE t(a INT PRIMARY KEY, b INT PRIMARY KEY)"),
            ErrorCode::Unsupported
        );
        assert_eq!(parse_err("CREATE TABLE t(a INT, a TEXT)"), ErrorCode::InvalidSql);
        assert_eq!(parse_err("CREATE TABLE t(a INTERVAL)"), ErrorCode::Unsupported);
        assert_eq!(
            parse_err("CREATE TABLE t(a INT DEFAULT random())"),
            ErrorCode::Unsupported
        );
        assert_eq!(
            parse_err("CREATE TABLE t(a INT) WITH (COLOR='red')"),
            ErrorCode::InvalidSql
        );
        assert_eq!(
            parse_err("CREATE TABLE t(a DECIMAL(50,2))"),
            ErrorCode::InvalidSql
        );
        assert_eq!(parse_err("CREATE TABLE"), ErrorCode::InvalidSql);
    }

    #[test]
    fn drops_alters_and_describe() {
        assert_eq!(
            parse("DROP USER TABLE IF EXISTS app.t"),
            KalamStatement::DropTable {
                table: table("app", "t"),
                table_type: Some(TableType::User),
                if_exists: true
            }
        );
        assert_eq!(
            parse("DESCRIBE TABLE app.t"),
            KalamStatement::DescribeTable(table("app", "t"))
        );
        assert_eq!(
            parse("SHOW STATS FOR TABLE app.t"),
            KalamStatement::ShowStats(table("app", "t"))
        );
        assert_eq!(
            parse("ALTER TABLE app.t DROP COLUMN x"),
            KalamStatement::DropColumn {
                table: table("app", "t"),
                column: "x".into(),
                if_exists: false
            }
        );
        let KalamStatement::AddColumn { column, .. } = parse("ALTER TABLE app.t ADD COLUMN n INT DEFAULT 7")
        else {
            panic!()
        };
        assert_eq!(column.data_type, KalamType::Int);
    }

    #[test]
    fn standard_statements_and_errors() {
        assert!(matches!(
            parse("SELECT * FROM app.t WHERE id = $1"),
            KalamStatement::Query(_)
        ));
        assert!(matches!(
            parse("WITH x AS (SELECT 1) SELECT * FROM x"),
            KalamStatement::Query(_)
        ));
        assert!(matches!(
            parse("INSERT INTO t VALUES (1)"),
            KalamStatement::Dml(_)
        ));
        assert!(matches!(
            parse("UPDATE t SET a = 1 WHERE b > 2"),
            KalamStatement::Dml(_)
        ));
        assert!(matches!(
            parse("DELETE FROM t WHERE a = 1"),
            KalamStatement::Dml(_)
        ));
        assert_eq!(parse_err("SELEC 1"), ErrorCode::InvalidSql);
        assert_eq!(parse_err("SELECT 1 2 3"), ErrorCode::InvalidSql);
        assert_eq!(
            parse_err("CREATE MATERIALIZED VIEW v AS SELECT 1"),
            ErrorCode::Unsupported
        );
        assert!(matches!(
            parse("CREATE OR REPLACE VIEW v (a) AS SELECT 1"),
            KalamStatement::CreateView { or_replace: true, .. }
        ));
        assert!(matches!(
            parse("DROP VIEW IF EXISTS ns.v"),
            KalamStatement::DropView { if_exists: true, .. }
        ));
        assert_eq!(
            parse("BEGIN"),
            KalamStatement::Transaction(TransactionCommand::Begin { read_only: false })
        );
        assert_eq!(
            parse("START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ ONLY"),
            KalamStatement::Transaction(TransactionCommand::Begin { read_only: true })
        );
        assert_eq!(
            parse("COMMIT WORK"),
            KalamStatement::Transaction(TransactionCommand::Commit)
        );
        assert_eq!(
            parse("END"),
            KalamStatement::Transaction(TransactionCommand::Commit)
        );
        assert_eq!(
            parse("ROLLBACK"),
            KalamStatement::Transaction(TransactionCommand::Rollback)
        );
        assert_eq!(parse_err("ROLLBACK TO SAVEPOINT a"), ErrorCode::Unsupported);
        assert_eq!(
            parse_err("BEGIN ISOLATION LEVEL SERIALIZABLE"),
            ErrorCode::Unsupported
        );
        assert_eq!(parse_err("TRUNCATE t"), ErrorCode::Unsupported);
    }
}
