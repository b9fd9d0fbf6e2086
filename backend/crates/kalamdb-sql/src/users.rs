//! CREATE / ALTER / DROP USER.

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
}
