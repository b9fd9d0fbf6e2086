//! How deeply a statement nests, and the limits on it.
//!
//! Every pass over a syntax tree (parsing, our rewrites, DataFusion's planner and
//! optimizer, and finally dropping the tree) recurses once per level, so a statement
//! that nests deeper than the stack allows would abort the process. Three things
//! keep any SQL text from doing that (see `docs/SQL_SYNTAX.md`, "Nesting depth"):
//! 1. these limits: the parser refuses to recurse past [`MAX_NESTING_DEPTH`], and
//!    [`check_depth`] refuses trees that grew deeper without recursion (left-deep
//!    operator chains such as `1+1+…+1`, `a AND b AND …`, `UNION` chains), with
//!    `INVALID_SQL` "too deeply nested";
//! 2. DataFusion's and sqlparser's `recursive_protection`, which moves their
//!    recursive walks onto a heap-allocated stack segment when the thread's stack
//!    runs low;
//! 3. the server's workers have 16 MiB stacks for what no guard covers (cloning and
//!    evaluating expression trees), and a long statement (more than a few KiB, the
//!    only kind that can nest past the limits) runs on a large stack of its own, so
//!    that even dropping a refused tree cannot overflow.
//!
//! The limits on function calls and on subqueries in expressions are tighter: those
//! nestings cost DataFusion exponential planning time.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    ArrayElemTypeDef, DataType, Expr, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
};
use kalamdb_commons::{KalamError, KalamResult};

/// The deepest nesting of expressions, subqueries, table factors and set operations
/// a statement may have. Planning cost grows faster than linearly with it (an UPDATE
/// whose SET is a chain of 500 additions takes seconds to plan in a debug build), so
/// the limit is well below what the stack would allow. ORMs and hand-written SQL stay
/// far below it; long OR chains should be `IN (...)`.
pub const MAX_NESTING_DEPTH: usize = 256;

/// The deepest nesting of function calls (`f(g(h(x)))`). DataFusion's simplifier
/// expands some functions into their arguments more than once (`coalesce` into a
/// `CASE` that names its first argument twice), so planning cost doubles with each
/// level: 12 levels plan in about a tenth of a second, 32 would exhaust memory.
pub const MAX_CALL_NESTING: usize = 12;

/// The deepest nesting of subqueries inside expressions (scalar, `EXISTS`, `IN`):
/// DataFusion's decorrelation also costs twice as much per level (10 levels: a
/// quarter of a second in a debug build; 16: fifteen seconds). Derived tables in
/// `FROM` are not limited by this.
pub const MAX_SUBQUERY_NESTING: usize = 10;

/// The deepest nesting of a type (`INT[][]…`): Arrow walks nested types recursively,
/// with large frames, while executing.
pub const MAX_TYPE_NESTING: usize = 32;

/// The error for a statement past the limits.
pub fn too_deeply_nested() -> KalamError {
    KalamError::invalid_sql(format!(
        "the statement is too deeply nested (limits: {MAX_NESTING_DEPTH} levels of expressions, \
         subqueries or set operations; {MAX_CALL_NESTING} of function calls; \
         {MAX_SUBQUERY_NESTING} of subqueries in expressions; {MAX_TYPE_NESTING} of array types); \
         flatten it, e.g. use IN (...) instead of a chain of ORs"
    ))
}

/// `INVALID_SQL` "too deeply nested" when `statement` nests deeper than
/// [`MAX_NESTING_DEPTH`]. The walk stops at the limit, so it never recurses deeper
/// than the limit itself.
pub fn check_depth(statement: &Statement) -> KalamResult<()> {
    let mut walker = DepthWalker {
        depth: 0,
        calls: 0,
        subqueries: 0,
        entered: Vec::new(),
    };
    match statement.visit(&mut walker) {
        ControlFlow::Break(()) => Err(too_deeply_nested()),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct DepthWalker {
    depth: usize,
    calls: usize,
    subqueries: usize,
    /// What each open `pre_visit_query` / `pre_visit_expr` added (a query counts its
    /// set-operation chain, a cast the nesting of its type), and whether it was a
    /// function call or a subquery.
    entered: Vec<Entered>,
}

struct Entered {
    levels: usize,
    call: bool,
    subquery: bool,
}

impl DepthWalker {
    fn enter(&mut self, levels: usize) -> ControlFlow<()> {
        self.depth += levels;
        if self.depth > MAX_NESTING_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn leave(&mut self, levels: usize) -> ControlFlow<()> {
        self.depth -= levels;
        ControlFlow::Continue(())
    }

    fn push(&mut self, entered: Entered) -> ControlFlow<()> {
        self.calls += entered.call as usize;
        self.subqueries += entered.subquery as usize;
        let levels = entered.levels;
        self.entered.push(entered);
        if self.calls > MAX_CALL_NESTING || self.subqueries > MAX_SUBQUERY_NESTING {
            return ControlFlow::Break(());
        }
        self.enter(levels)
    }

    fn pop(&mut self) -> ControlFlow<()> {
        let Some(entered) = self.entered.pop() else {
            return ControlFlow::Continue(());
        };
        self.calls -= entered.call as usize;
        self.subqueries -= entered.subquery as usize;
        self.leave(entered.levels)
    }
}

impl Visitor for DepthWalker {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let levels = 1 + set_operation_depth(&query.body, MAX_NESTING_DEPTH + 1);
        self.push(Entered {
            levels,
            call: false,
            subquery: false,
        })
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.pop()
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        // A cast's type nests too (`INT[][]…`): every pass over its values recurses
        // once per level, at execution as well as in planning.
        let levels = match expr {
            Expr::Cast { data_type, .. } => {
                let type_depth = data_type_depth(data_type);
                if type_depth > MAX_TYPE_NESTING {
                    return ControlFlow::Break(());
                }
                1 + type_depth
            }
            _ => 1,
        };
        self.push(Entered {
            levels,
            call: matches!(expr, Expr::Function(_)),
            subquery: matches!(
                expr,
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
            ),
        })
    }

    fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
        self.pop()
    }

    fn pre_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<()> {
        self.enter(1)
    }

    fn post_visit_table_factor(&mut self, _factor: &TableFactor) -> ControlFlow<()> {
        self.leave(1)
    }
}

/// How deeply array types nest in `data_type` (`INT[][]` is 2), counted without
/// recursion.
fn data_type_depth(data_type: &DataType) -> usize {
    let mut depth = 0;
    let mut current = data_type;
    while let DataType::Array(
        ArrayElemTypeDef::AngleBracket(inner)
        | ArrayElemTypeDef::SquareBracket(inner, _)
        | ArrayElemTypeDef::Parenthesis(inner),
    ) = current
    {
        depth += 1;
        current = inner;
    }
    depth
}

/// How deeply set operations (`UNION`, `INTERSECT`, `EXCEPT`) nest directly in a
/// query body (parenthesized queries count as queries), capped at `cap`.
fn set_operation_depth(body: &SetExpr, cap: usize) -> usize {
    let mut depth = 0;
    let mut current = body;
    // Chains are left-deep: walk the left spine without recursion, and recurse
    // (bounded by the cap) only into right-hand operations.
    while let SetExpr::SetOperation { left, right, .. } = current {
        depth += 1;
        if depth >= cap {
            return cap;
        }
        if let SetExpr::SetOperation { .. } = right.as_ref() {
            depth = depth.max(1 + set_operation_depth(right, cap - depth));
            if depth >= cap {
                return cap;
            }
        }
        current = left;
    }
    depth
}

#[cfg(test)]
mod tests {
    use crate::parse_statement;

    fn depth_error(sql: &str) -> Option<String> {
        parse_statement(sql).err().map(|e| e.message)
    }

    #[test]
    fn shallow_statements_pass() {
        let chain = vec!["1"; 200].join(" + ");
        for sql in [
            format!("SELECT {chain}"),
            "SELECT a FROM t WHERE a IN (1, 2, 3) AND b = 2 OR c < 3".to_string(),
            format!("SELECT 1 {}", "UNION ALL SELECT 1 ".repeat(100)),
        ] {
            assert!(parse_statement(&sql).is_ok(), "{sql}");
        }
    }

    #[test]
    fn nesting_that_would_plan_in_exponential_time_is_refused() {
        let calls = |n: usize| format!("SELECT {}v{}", "coalesce(".repeat(n), ", 1)".repeat(n));
        let subqueries = |n: usize| format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n));
        assert!(parse_statement(&calls(12)).is_ok());
        assert!(parse_statement(&subqueries(10)).is_ok());
        for sql in [calls(13), subqueries(11)] {
            let message = depth_error(&sql).expect("refused");
            assert!(message.contains("too deeply nested"), "{message}");
        }
        // Derived tables are not subqueries in expressions.
        let derived = format!(
            "SELECT 1 FROM {}t{}",
            "(SELECT 1 FROM ".repeat(40),
            ") AS x".repeat(40)
        );
        assert!(parse_statement(&derived).is_ok());
    }

    #[test]
    fn deep_shapes_are_too_deeply_nested() {
        let n = 5000;
        let shapes = [
            format!("SELECT {}", vec!["1"; n].join("+")),
            format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
            format!("SELECT a FROM t WHERE {}", vec!["a = 1"; n].join(" AND ")),
            format!(
                "SELECT 1 FROM {}t{}",
                "(SELECT 1 FROM ".repeat(n),
                ") AS x".repeat(n)
            ),
            format!("SELECT 1 {}", "UNION SELECT 1 ".repeat(n)),
            format!("UPDATE t SET a = {}", vec!["1"; n].join("+")),
            format!("DELETE FROM t WHERE {}", vec!["a = 1"; n].join(" OR ")),
            format!("INSERT INTO t VALUES ({})", vec!["1"; n].join("*")),
            format!("SELECT CAST(NULL AS INT{})", "[]".repeat(n)),
            format!("SELECT {}1", "- ".repeat(n)),
        ];
        for sql in shapes {
            let message = depth_error(&sql).unwrap_or_else(|| panic!("accepted: {}", &sql[..60]));
            assert!(message.contains("too deeply nested"), "{message}");
        }
    }
}
