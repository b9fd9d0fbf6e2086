//! Names and identifiers: namespaces, users, table types and roles.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::{ErrorCode, KalamError, KalamResult};

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters: the rule for namespace, table,
/// column and user names.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A validated namespace name, stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NamespaceName(String);

impl NamespaceName {
    pub fn parse(name: &str) -> KalamResult<Self> {
        if !is_valid_identifier(name) {
            return Err(KalamError::invalid_sql(format!(
                "invalid namespace name '{name}': names match [A-Za-z_][A-Za-z0-9_]* (at most 64 characters)"
            )));
        }
        Ok(NamespaceName(name.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The stable id of a user: the scope of its rows in USER tables. Never reused,
/// so a user created again under an old name does not inherit the old rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(String);

impl UserId {
    pub fn new(id: String) -> Self {
        UserId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a table keeps its rows apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableType {
    /// Every user has its own rows; a statement sees only the caller's.
    User,
    /// One set of rows for everybody.
    Shared,
    /// Append-only rows that expire.
    Stream,
}

impl TableType {
    pub fn as_str(self) -> &'static str {
        match self {
            TableType::User => "user",
            TableType::Shared => "shared",
            TableType::Stream => "stream",
        }
    }
}

/// Roles, ordered by what they may do: `user < service < dba < system`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Service,
    Dba,
    System,
}

impl Role {
    pub fn parse(name: &str) -> KalamResult<Self> {
        match name.to_ascii_lowercase().as_str() {
            "user" => Ok(Role::User),
            "service" => Ok(Role::Service),
            "dba" => Ok(Role::Dba),
            "system" => Ok(Role::System),
            other => Err(KalamError::new(
                ErrorCode::InvalidSql,
                format!("unknown role '{other}': expected user, service, dba or system"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Dba => "dba",
            Role::System => "system",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["a", "_x", "app_1", "A9"] {
            assert!(is_valid_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a b", "ü", &"a".repeat(65)] {
            assert!(!is_valid_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::User < Role::Service && Role::Service < Role::Dba && Role::Dba < Role::System);
        assert_eq!(Role::parse("DBA").unwrap(), Role::Dba);
        assert!(Role::parse("admin").is_err());
    }
}
