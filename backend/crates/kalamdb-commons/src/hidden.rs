//! The hidden columns of every table: `_seq` (the version's sequence number),
//! `_deleted` (its tombstone flag) and, for a table without a primary key, `_id`
//! (its row id). They appear only when a statement names them, cannot be declared or
//! assigned, and one rule says whether a name is one: [`is_hidden`].

pub const SEQ_COLUMN: &str = "_seq";
pub const DELETED_COLUMN: &str = "_deleted";
pub const ID_COLUMN: &str = "_id";

/// Whether `name` names a hidden column. `name` is an identifier as SQL folds it (an
/// unquoted one lowercased, a quoted one as written): `_SEQ` is `_seq`, `"_SEQ"` is
/// a column of its own (and no table has one).
pub fn is_hidden(name: &str) -> bool {
    [SEQ_COLUMN, DELETED_COLUMN, ID_COLUMN].contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_folded_names_are_hidden() {
        assert!(is_hidden("_seq") && is_hidden("_deleted") && is_hidden("_id"));
        assert!(!is_hidden("_SEQ"), "a quoted name keeps its case");
        assert!(!is_hidden("seq") && !is_hidden("id"));
    }
}
