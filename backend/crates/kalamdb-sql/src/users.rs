//! CREATE / ALTER / DROP USER.

use datafusion::sql::sqlparser::tokenizer::{Location, Token};
use kalamdb_commons::{KalamError, KalamResult, Role};

use crate::statement::{Cursor, KalamStatement};

/// What `ALTER USER` changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Password(String),
    Role(Role),
}

/// `CREATE USER [IF NOT EXISTS] 'name' WITH PASSWORD 'pw' [ROLE r]` (role defaults to `user`).
pub(crate) fn parse_create_user(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("USER")?;
    let if_not_exists = c.eat_words(&["IF", "NOT", "EXISTS"]);
    let name = c.name_or_string()?;
    c.eat_word("WITH");
    c.expect_word("PASSWORD")?;
    let password = c.string()?;
    let role = if c.eat_word("ROLE") {
        Role::parse(&c.name_or_string()?)?
    } else {
        Role::User
    };
    Ok(KalamStatement::CreateUser {
        name,
        password,
        role,
        if_not_exists,
    })
}

/// `ALTER USER 'name' SET PASSWORD 'pw' | SET ROLE r`.
pub(crate) fn parse_alter_user(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("USER")?;
    let name = c.name_or_string()?;
    c.expect_word("SET")?;
    let change = if c.eat_word("PASSWORD") {
        UserChange::Password(c.string()?)
    } else if c.eat_word("ROLE") {
        UserChange::Role(Role::parse(&c.name_or_string()?)?)
    } else {
        return Err(KalamError::invalid_sql(
            "ALTER USER supports SET PASSWORD '...' and SET ROLE r",
        ));
    };
    Ok(KalamStatement::AlterUser { name, change })
}

/// `DROP USER [IF EXISTS] 'name'`.
pub(crate) fn parse_drop_user(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("USER")?;
    let if_exists = c.eat_words(&["IF", "EXISTS"]);
    Ok(KalamStatement::DropUser {
        name: c.name_or_string()?,
        if_exists,
    })
}

/// `EXECUTE AS USER 'name' ( <one statement> )`: the inner statement is returned as
/// text (it is parsed on its own, so it may be any statement but another
/// `EXECUTE AS`).
pub(crate) fn parse_execute_as(sql: &str, c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("EXECUTE")?;
    c.expect_word("AS")?;
    c.expect_word("USER")?;
    let user = c.name_or_string()?;
    let open = c.parser.peek_token_ref().clone();
    if open.token != Token::LParen {
        return Err(KalamError::invalid_sql(format!(
            "syntax error: expected ( after EXECUTE AS USER '{user}', found {}",
            open.token
        )));
    }
    // The statement is everything between this parenthesis and the last one.
    let mut close = None;
    loop {
        let token = c.parser.next_token();
        match token.token {
            Token::EOF => break,
            Token::RParen => close = Some(token),
            Token::SemiColon if close.is_some() => {}
            _ => close = None,
        }
    }
    let close = close.ok_or_else(|| {
        KalamError::invalid_sql("syntax error: EXECUTE AS USER needs its statement in parentheses")
    })?;
    let start = byte_offset(sql, open.span.start) + 1;
    let end = byte_offset(sql, close.span.start);
    let inner = sql.get(start..end).unwrap_or("").trim();
    if inner.is_empty() {
        return Err(KalamError::invalid_sql("EXECUTE AS USER needs a statement"));
    }
    Ok(KalamStatement::ExecuteAs {
        user,
        sql: inner.to_string(),
    })
}

/// The byte offset of a tokenizer location (1-based line and character column).
fn byte_offset(sql: &str, location: Location) -> usize {
    let mut line = 1;
    let mut column = 1;
    for (offset, ch) in sql.char_indices() {
        if line == location.line && column == location.column {
            return offset;
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    sql.len()
}

#[cfg(test)]
mod tests {
    use crate::{KalamStatement, UserChange, parse_statement};
    use kalamdb_commons::Role;

    #[test]
    fn user_statements() {
        assert_eq!(
            parse_statement("CREATE USER 'alice' WITH PASSWORD 's3cret' ROLE service").unwrap(),
            KalamStatement::CreateUser {
                name: "alice".into(),
                password: "s3cret".into(),
                role: Role::Service,
                if_not_exists: false
            }
        );
        assert_eq!(
            parse_statement("ALTER USER bob SET ROLE dba").unwrap(),
            KalamStatement::AlterUser {
                name: "bob".into(),
                change: UserChange::Role(Role::Dba)
            }
        );
        assert_eq!(
            parse_statement("DROP USER IF EXISTS 'bob'").unwrap(),
            KalamStatement::DropUser {
                name: "bob".into(),
                if_exists: true
            }
        );
        assert!(parse_statement("CREATE USER 'x' WITH PASSWORD 'p' ROLE king").is_err());
    }

    #[test]
    fn execute_as() {
        let parse = |sql: &str| parse_statement(sql).unwrap();
        assert_eq!(
            parse("EXECUTE AS USER 'alice' (SELECT (1 + 2) FROM t WHERE x = ')')"),
            KalamStatement::ExecuteAs {
                user: "alice".into(),
                sql: "SELECT (1 + 2) FROM t WHERE x = ')'".into()
            }
        );
        assert_eq!(
            parse("execute as user bob (\n  INSERT INTO t VALUES (1, 'é')\n);"),
            KalamStatement::ExecuteAs {
                user: "bob".into(),
                sql: "INSERT INTO t VALUES (1, 'é')".into()
            }
        );
        for bad in [
            "EXECUTE AS USER 'a' SELECT 1",
            "EXECUTE AS USER 'a' ()",
            "EXECUTE AS USER 'a' (SELECT 1) extra",
            "EXECUTE AS 'a' (SELECT 1)",
        ] {
            assert!(parse_statement(bad).is_err(), "{bad}");
        }
    }
}
