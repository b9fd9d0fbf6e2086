//! The one integration-test binary: every test talks HTTP to a real server.

mod common;
mod test_bad_input;
mod test_budgets;
mod test_cli;
mod test_compaction;
mod test_concurrency;
mod test_durability;
mod test_flush_crash;
mod test_flush_tiers;
mod test_formats;
mod test_fuzz;
mod test_hardening;
mod test_indexes;
mod test_ingest;
mod test_live;
mod test_manual_flush_verification;
mod test_read_path;
mod test_security;
mod test_slt;
mod test_sql_api;
mod test_storages;
mod test_subqueries;
mod test_transactions;
mod test_user_isolation;
mod test_views;
mod test_write_path;
