//! Vocabulary shared by every KalamDB crate: identifiers, column types, values,
//! roles and the stable error codes of the HTTP API.
//!
//! Architecture invariant: this crate does no I/O and depends on no storage,
//! SQL or HTTP library. Everything above it agrees on these types.

pub mod error;
pub mod hidden;
pub mod ids;
pub mod split;
pub mod types;
pub mod value;

pub use error::{ErrorCode, KalamError, KalamResult};
pub use ids::{NamespaceName, Role, TableType, UserId, is_valid_identifier};
pub use types::{DefaultValue, FlushPolicy, KalamType};
pub use value::{Literal, Value};
