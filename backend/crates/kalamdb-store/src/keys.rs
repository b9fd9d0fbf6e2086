//! Key layouts of the `hot` and `pk` column families.
//!
//! ```text
//! scope prefix : table_id u32 BE | scope_len u8 | scope bytes (UTF-8; empty for SHARED)
//! hot key      : scope prefix | _seq u64 BE
//! pk key       : scope prefix | pk value, order-preserving ([`crate::index_key::encode_ordered`])
//! ```
//! Format version 1 wrote pk keys in the row codec's cell encoding (`tag | payload`,
//! little-endian numbers); [`crate::upgrade`] rewrites them.
//! All rows of one table are one contiguous key range, and so are all rows of one
//! user of one table: scans and deletes are range operations.
//!
//! The `changes` column family (the live-query change log) puts a time bucket
//! before the scope, so that forgetting old changes is one range delete per table:
//!
//! ```text
//! change key   : table_id u32 BE | bucket u32 BE | scope_len u8 | scope | _seq u64 BE
//! ```

/// The longest scope (user id) a key can carry.
pub const MAX_SCOPE_LEN: usize = u8::MAX as usize;

/// `table_id | scope_len | scope`: the common prefix of one scope's rows.
pub fn scope_prefix(table_id: u32, scope: &str) -> Vec<u8> {
    assert!(
        scope.len() <= MAX_SCOPE_LEN,
        "scope longer than {MAX_SCOPE_LEN} bytes"
    );
    let mut key = Vec::with_capacity(5 + scope.len() + 8);
    key.extend_from_slice(&table_id.to_be_bytes());
    key.push(scope.len() as u8);
    key.extend_from_slice(scope.as_bytes());
    key
}

/// The prefix of every key of a table, all scopes.
pub fn table_prefix(table_id: u32) -> Vec<u8> {
    table_id.to_be_bytes().to_vec()
}

pub fn hot_key(table_id: u32, scope: &str, seq: u64) -> Vec<u8> {
    let mut key = scope_prefix(table_id, scope);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Splits a key into `(table_id, scope, rest)`; `None` for a malformed key.
pub fn parse_scope_prefix(key: &[u8]) -> Option<(u32, &str, &[u8])> {
    let table_id = u32::from_be_bytes(key.get(0..4)?.try_into().ok()?);
    let scope_len = *key.get(4)? as usize;
    let scope = std::str::from_utf8(key.get(5..5 + scope_len)?).ok()?;
    Some((table_id, scope, key.get(5 + scope_len..)?))
}

/// Splits a hot key into `(table_id, scope, seq)`; `None` for a malformed key.
pub fn parse_hot_key(key: &[u8]) -> Option<(u32, &str, u64)> {
    let (table_id, scope, rest) = parse_scope_prefix(key)?;
    let seq = u64::from_be_bytes(rest.try_into().ok()?);
    Some((table_id, scope, seq))
}

/// The smallest key greater than every key starting with `prefix`
/// (`None` when the prefix is all `0xff`).
pub fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// `system` key of the largest `_seq` a sweep of the change log may have removed from
/// a table's changes (a merge counter; gone with the table).
pub fn changes_pruned_key(table_id: u32) -> String {
    format!("live/pruned/{table_id}")
}

/// `table_id | bucket | scope_len | scope`: one scope's changes of one time bucket.
pub fn change_prefix(table_id: u32, bucket: u32, scope: &str) -> Vec<u8> {
    assert!(
        scope.len() <= MAX_SCOPE_LEN,
        "scope longer than {MAX_SCOPE_LEN} bytes"
    );
    let mut key = Vec::with_capacity(9 + scope.len() + 8);
    key.extend_from_slice(&table_id.to_be_bytes());
    key.extend_from_slice(&bucket.to_be_bytes());
    key.push(scope.len() as u8);
    key.extend_from_slice(scope.as_bytes());
    key
}

pub fn change_key(table_id: u32, bucket: u32, scope: &str, seq: u64) -> Vec<u8> {
    let mut key = change_prefix(table_id, bucket, scope);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The `_seq` a change key ends with.
pub fn change_key_seq(key: &[u8]) -> Option<u64> {
    let tail = key.get(key.len().checked_sub(8)?..)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_keys_round_trip_and_sort_by_seq() {
        let a = hot_key(7, "alice", 5);
        let b = hot_key(7, "alice", 256);
        assert!(a < b);
        assert_eq!(parse_hot_key(&b), Some((7, "alice", 256)));
        assert!(a.starts_with(&scope_prefix(7, "alice")));
        assert!(!hot_key(7, "alicex", 1).starts_with(&scope_prefix(7, "alice")));
        assert_eq!(parse_hot_key(&a[..a.len() - 1]), None);
    }

    #[test]
    fn upper_bounds() {
        assert_eq!(prefix_upper_bound(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_upper_bound(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_upper_bound(&[0xff]), None);
    }
}
