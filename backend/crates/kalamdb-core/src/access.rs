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

/// Role `user` reads SHARED tables only when they are `ACCESS_LEVEL = 'PUBLIC'`
/// (the default is PRIVATE); USER tables are always readable (the caller's rows).
pub(crate) fn check_read_access(table: &TableDef, caller: &Caller) -> KalamResult<()> {
    let private = table.table_type == TableType::Shared && table.access_level != Some(AccessLevel::Public);
    if private && caller.role < Role::Service {
        return Err(KalamError::new(
            ErrorCode::PermissionDenied,
            format!(
                "'{}' is a PRIVATE shared table: role '{}' may not read it (ACCESS_LEVEL = 'PUBLIC' opens it to every user)",
                table.qualified_name(),
                caller.role.as_str()
            ),
        ));
    }
    Ok(())
}
