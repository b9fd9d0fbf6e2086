//! Who may do what (docs/SECURITY.md): the caller of a statement and the checks
//! every entry point shares.

use kalamdb_commons::{ErrorCode, KalamError, KalamResult, Role, TableType, UserId};

use crate::catalog::{AccessLevel, TableDef, UserRecord};

/// An authenticated user, as statements see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub username: String,
    pub role: Role,
}

impl From<&UserRecord> for Caller {
    fn from(user: &UserRecord) -> Self {
        Caller {
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            role: user.role,
        }
    }
}

impl Caller {
    /// The caller `EXECUTE AS USER` runs as: `target`'s identity with the lower of
    /// the two roles — impersonation never grants what the caller could not do alone.
    pub(crate) fn impersonating(&self, target: &UserRecord) -> Caller {
        Caller {
            role: self.role.min(target.role),
            ..Caller::from(target)
        }
    }
}

/// What a statement may ask to do: the rows of docs/SECURITY.md's table of roles.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'a> {
    /// SELECT a table, `SHOW STATS`, a live query: USER tables (the caller's rows)
    /// and PUBLIC SHARED tables for every role, PRIVATE SHARED ones from `service`.
    Read(&'a TableDef),
    /// INSERT / UPDATE / DELETE: USER and STREAM tables (the caller's rows) for every
    /// role, SHARED tables from `service`.
    Write(&'a TableDef),
    /// Every user's rows where a `user` sees its own: `system.users`, `SHOW STATS`
    /// of a whole USER table.
    SeeEveryUser,
    /// `system.jobs`.
    ReadJobs,
    /// `STORAGE FLUSH`.
    Flush,
    /// `EXECUTE AS USER`.
    ExecuteAs,
    /// DDL (namespaces, tables, columns, indexes) and user management.
    ChangeSchema,
    /// `KILL JOB`.
    KillJob,
    /// Every live query, not only the caller's own: `system.live`, `KILL LIVE QUERY`.
    EveryLiveQuery,
}

impl Action<'_> {
    /// The lowest role allowed, and what the refusal says the caller tried.
    fn needs(&self) -> (Role, &'static str) {
        match self {
            Action::Read(_) | Action::Write(_) => (Role::User, ""),
            Action::SeeEveryUser => (Role::Service, "see every user's rows"),
            Action::ReadJobs => (Role::Service, "read system.jobs"),
            Action::Flush => (Role::Service, "flush tables"),
            Action::ExecuteAs => (Role::Service, "run statements as another user"),
            Action::ChangeSchema => (Role::Dba, "change the schema or users"),
            Action::KillJob => (Role::Dba, "kill jobs"),
            Action::EveryLiveQuery => (Role::Dba, "see every live query"),
        }
    }
}

/// Whether `caller` may do `action`.
pub(crate) fn allows(caller: &Caller, action: Action<'_>) -> bool {
    require(caller, action).is_ok()
}

/// `PERMISSION_DENIED` unless `caller` may do `action`: every check of a role goes
/// through here.
pub(crate) fn require(caller: &Caller, action: Action<'_>) -> KalamResult<()> {
    let denied = |message: String| Err(KalamError::new(ErrorCode::PermissionDenied, message));
    match action {
        Action::Read(table) => {
            let private =
                table.table_type == TableType::Shared && table.access_level != Some(AccessLevel::Public);
            if private && caller.role < Role::Service {
                return denied(format!(
                    "'{}' is a PRIVATE shared table: role '{}' may not read it (ACCESS_LEVEL = 'PUBLIC' opens it to every user)",
                    table.qualified_name(),
                    caller.role.as_str()
                ));
            }
            Ok(())
        }
        Action::Write(table) if table.table_type == TableType::Shared && caller.role < Role::Service => {
            denied(format!(
                "role '{}' may not write SHARED tables; it needs role 'service' or higher",
                caller.role.as_str()
            ))
        }
        action => {
            let (role, what) = action.needs();
            if caller.role >= role {
                return Ok(());
            }
            denied(format!(
                "role '{}' may not {what}; it needs role '{}' or higher",
                caller.role.as_str(),
                role.as_str()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use kalamdb_commons::{ErrorCode, Role, TableType, UserId};

    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            user_id: UserId::new("u1".into()),
            username: "u1".into(),
            role,
        }
    }

    fn table(table_type: TableType, access_level: Option<AccessLevel>) -> TableDef {
        TableDef {
            table_id: 1,
            namespace: "app".into(),
            name: "t".into(),
            table_type,
            columns: Vec::new(),
            primary_key: None,
            next_column_id: 1,
            flush_policy: None,
            compact_segments: None,
            storage: None,
            ttl_seconds: None,
            access_level,
            created_at: 0,
            schema_version: 1,
            indexes: Vec::new(),
            next_index_id: 1,
            comment: None,
        }
    }

    /// docs/SECURITY.md's table, row by row: the lowest role allowed.
    #[test]
    fn every_row_of_the_role_table() {
        let user_table = table(TableType::User, None);
        let public = table(TableType::Shared, Some(AccessLevel::Public));
        let private = table(TableType::Shared, None);
        let rows: Vec<(&str, Action, Role)> = vec![
            (
                "own rows of USER tables: read",
                Action::Read(&user_table),
                Role::User,
            ),
            (
                "own rows of USER tables: write",
                Action::Write(&user_table),
                Role::User,
            ),
            ("PUBLIC SHARED tables: read", Action::Read(&public), Role::User),
            (
                "PRIVATE SHARED tables: read",
                Action::Read(&private),
                Role::Service,
            ),
            ("SHARED tables: write", Action::Write(&public), Role::Service),
            ("every row of system.users", Action::SeeEveryUser, Role::Service),
            ("system.jobs", Action::ReadJobs, Role::Service),
            ("STORAGE FLUSH", Action::Flush, Role::Service),
            ("EXECUTE AS USER", Action::ExecuteAs, Role::Service),
            ("DDL and users", Action::ChangeSchema, Role::Dba),
            ("KILL JOB", Action::KillJob, Role::Dba),
            ("every live query", Action::EveryLiveQuery, Role::Dba),
        ];
        for (row, action, lowest) in rows {
            for role in [Role::User, Role::Service, Role::Dba, Role::System] {
                let answer = require(&caller(role), action);
                assert_eq!(answer.is_ok(), role >= lowest, "{row}, role {}", role.as_str());
                if let Err(e) = answer {
                    assert_eq!(e.code, ErrorCode::PermissionDenied);
                    assert!(e.message.contains(role.as_str()), "{row}: {}", e.message);
                }
            }
        }
    }

    #[test]
    fn impersonation_takes_the_lower_role() {
        let target = |role: Role| UserRecord {
            user_id: UserId::new("alice-id".into()),
            username: "alice".into(),
            password_hash: String::new(),
            role,
            created_at: 0,
            updated_at: 0,
        };
        let service = caller(Role::Service);
        assert_eq!(service.impersonating(&target(Role::Dba)).role, Role::Service);
        let seen = service.impersonating(&target(Role::User));
        assert_eq!((seen.role, seen.username.as_str()), (Role::User, "alice"));
    }
}
