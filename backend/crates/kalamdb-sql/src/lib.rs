//! SQL text → typed KalamDB statements.
//!
//! A request's SQL is split into statements ([`split_statements`]); each is parsed
//! ([`parse_statement`]) into a [`KalamStatement`]: KalamDB's own commands (namespaces,
//! typed tables, users, SHOW/DESCRIBE) are parsed here with sqlparser's parser
//! primitives; standard DML and queries keep sqlparser's AST for the executor.
//!
//! Architecture invariant: no I/O and no catalog access here. The crate knows the
//! grammar, not what exists. sqlparser is DataFusion's re-export, so the AST is the
//! one DataFusion plans.

mod ddl;
mod depth;
mod dialect;
pub mod dml_query;
mod flush_commands;
pub mod hidden;
pub mod result_names;
mod statement;
pub mod storages;
mod users;
pub mod views;

pub use datafusion::sql::sqlparser;
pub use ddl::{ColumnSpec, CreateTable, TableOptions, UniqueSpec, literal};
pub use depth::{MAX_NESTING_DEPTH, MAX_TYPE_NESTING, check_depth, too_deeply_nested};
pub use dialect::KalamDialect;
pub use kalamdb_commons::split::split_statements;
pub use statement::parse_sql_text;
pub use statement::{KalamStatement, TableRef, TransactionCommand, ident_name, parse_statement};
pub use users::UserChange;
