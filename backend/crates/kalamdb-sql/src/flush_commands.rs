//! KalamDB's storage and job commands.
//!
//! ```text
//! STORAGE FLUSH TABLE [ns.]table
//! STORAGE FLUSH ALL [IN [NAMESPACE] ns]
//! STORAGE COMPACT TABLE [ns.]table
//! STORAGE COMPACT ALL [IN [NAMESPACE] ns]
//! KILL JOB 'job-id'
//! ```
//!
//! `STORAGE FLUSH TABLE` asks the job manager to move a USER table's hot rows into
//! Parquet; `STORAGE FLUSH ALL` does so for every USER table (of one namespace, or of
//! all). `STORAGE COMPACT` does the same with compaction jobs, which rewrite a USER
//! table's Parquet segments into fewer. All return at once with the jobs they registered. `KILL JOB` cancels a queued
//! job or stops a running one at its next batch boundary. Keywords are
//! case-insensitive; names follow the usual identifier rules (unquoted names fold to
//! lower case).

use kalamdb_commons::{KalamError, KalamResult};

use crate::statement::{Cursor, KalamStatement};

/// Parses the rest of a statement that starts with `STORAGE`.
pub(crate) fn parse_storage(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("STORAGE")?;
    let compact = c.eat_word("COMPACT");
    if !compact {
        c.expect_word("FLUSH")?;
    }
    if c.eat_word("TABLE") {
        let table = c.table_ref()?;
        return Ok(match compact {
            true => KalamStatement::CompactTable(table),
            false => KalamStatement::FlushTable(table),
        });
    }
    if c.eat_word("ALL") {
        let namespace = if c.eat_word("IN") {
            c.eat_word("NAMESPACE");
            Some(c.identifier()?)
        } else {
            None
        };
        return Ok(match compact {
            true => KalamStatement::CompactAll { namespace },
            false => KalamStatement::FlushAll { namespace },
        });
    }
    Err(KalamError::invalid_sql(
        "syntax error: expected STORAGE FLUSH|COMPACT TABLE ns.t or STORAGE FLUSH|COMPACT ALL [IN [NAMESPACE] ns]",
    ))
}

/// Parses `KILL JOB 'id'` (the id may also be written as a bare identifier).
pub(crate) fn parse_kill(c: &mut Cursor<'_>) -> KalamResult<KalamStatement> {
    c.expect_word("KILL")?;
    if c.eat_words(&["LIVE", "QUERY"]) {
        let id = c.name_or_string()?;
        if id.is_empty() {
            return Err(KalamError::invalid_sql("KILL LIVE QUERY needs a subscription id"));
        }
        return Ok(KalamStatement::KillLiveQuery { id });
    }
    c.expect_word("JOB")?;
    let job_id = c.name_or_string()?;
    if job_id.is_empty() {
        return Err(KalamError::invalid_sql("KILL JOB needs a job id"));
    }
    Ok(KalamStatement::KillJob { job_id })
}

#[cfg(test)]
mod tests {
    use crate::statement::{KalamStatement, TableRef, parse_statement};
    use kalamdb_commons::ErrorCode;

    #[test]
    fn flush_table() {
        assert_eq!(
            parse_statement("storage flush table App.Messages").unwrap(),
            KalamStatement::FlushTable(TableRef {
                namespace: Some("app".into()),
                name: "messages".into()
            })
        );
        assert_eq!(
            parse_statement("STORAGE FLUSH TABLE t;").unwrap(),
            KalamStatement::FlushTable(TableRef {
                namespace: None,
                name: "t".into()
            })
        );
    }

    #[test]
    fn flush_all() {
        assert_eq!(
            parse_statement("STORAGE FLUSH ALL").unwrap(),
            KalamStatement::FlushAll { namespace: None }
        );
        for sql in ["STORAGE FLUSH ALL IN app", "STORAGE FLUSH ALL IN NAMESPACE app"] {
            assert_eq!(
                parse_statement(sql).unwrap(),
                KalamStatement::FlushAll {
                    namespace: Some("app".into())
                }
            );
        }
    }

    #[test]
    fn compact() {
        assert_eq!(
            parse_statement("storage compact table App.M").unwrap(),
            KalamStatement::CompactTable(TableRef {
                namespace: Some("app".into()),
                name: "m".into()
            })
        );
        assert_eq!(
            parse_statement("STORAGE COMPACT ALL IN app").unwrap(),
            KalamStatement::CompactAll {
                namespace: Some("app".into())
            }
        );
        assert!(parse_statement("STORAGE COMPACT app.t").is_err());
    }

    #[test]
    fn kill_job() {
        assert_eq!(
            parse_statement("KILL JOB 'abc-1'").unwrap(),
            KalamStatement::KillJob {
                job_id: "abc-1".into()
            }
        );
        assert_eq!(
            parse_statement("kill live query '12/Room-7';").unwrap(),
            KalamStatement::KillLiveQuery {
                id: "12/Room-7".into()
            }
        );
    }

    #[test]
    fn malformed_commands_are_invalid_sql() {
        for sql in [
            "STORAGE FLUSH",
            "STORAGE FLUSH TABLE",
            "STORAGE FLUSH TABLES t",
            "STORAGE FLUSH TABLE a.b.c",
            "STORAGE FLUSH ALL IN",
            "STORAGE FLUSH TABLE t extra",
            "KILL JOB",
            "KILL JOB ''",
            "KILL LIVE QUERY",
            "KILL LIVE QUERY ''",
            "KILL LIVE '1/s'",
            "STORAGE COMPACT",
            "STORAGE COMPACT TABLES t",
            "STORAGE COMPACT ALL IN",
        ] {
            let err = parse_statement(sql).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidSql, "{sql}: {err}");
        }
    }
}
