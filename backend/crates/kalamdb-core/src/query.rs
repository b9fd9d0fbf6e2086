//! Planning and running statements with DataFusion for one caller.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SQLOptions, SessionState};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{FunctionRegistry, TaskContext};
use datafusion::logical_expr::{ColumnarValue, LogicalPlan, ScalarUDF, Volatility, create_udf};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, collect, execute_stream};
use datafusion::prelude::SessionConfig;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self as ast, ObjectName, Query, Statement, TableFactor, Visit, Visitor, visit_expressions,
    visit_relations,
};
use futures::StreamExt;
use kalamdb_commons::{ErrorCode, KalamError, KalamResult, Literal};
use kalamdb_sql::hidden::{exclude_hidden_from_wildcards, references_hidden};

use crate::access::Caller;
use crate::arrow_conv::RowStream;
use crate::base::{df_error, df_message};
use crate::budget::within_budget;
use crate::catalog::{DELETED_COLUMN, ID_COLUMN, SEQ_COLUMN, SYSTEM_NAMESPACE};
use crate::provider::{KalamCatalog, ScanScope};
use crate::system_tables::SystemTables;
use crate::tiers::Tiers;

pub(crate) const CATALOG_NAME: &str = kalamdb_sql::views::CATALOG_NAME;

/// The query layer's state over the tiers: session states, kept plans and the
/// `system.*` tables. Dereferences to [`Tiers`]; the statements layer's
/// [`Engine`](crate::statements::Engine) holds one and dereferences to it.
pub(crate) struct QueryEngine {
    pub tiers: Arc<Tiers>,
    /// DataFusion session states statements plan in ([`StatementSession`]).
    pub sessions: SessionPool,
    /// Plans of statements that depend on nothing but their text (`SELECT 1`).
    pub constant_plans: ConstantPlans,
    /// The `system.*` tables: the catalog's, and those jobs and live register.
    pub system_tables: Arc<SystemTables>,
    /// SELECTs answered by `point_read.rs`.
    pub point_reads: std::sync::atomic::AtomicU64,
}

impl std::ops::Deref for QueryEngine {
    type Target = Tiers;

    fn deref(&self) -> &Tiers {
        &self.tiers
    }
}

/// The rows of a query with their schema.
pub(crate) struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Partitions a query runs in: one per core (at least two, so that a hot scan and
/// the operators above it overlap even on one core).
fn query_partitions() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// The session state the pooled ones start as copies of (functions, settings; no
/// catalog of its own).
pub(crate) fn base_session_state(max_subquery_rows: u64) -> SessionState {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG_NAME, crate::catalog::DEFAULT_NAMESPACE)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(false)
        .with_target_partitions(query_partitions());
    // Subqueries DataFusion cannot decorrelate run row by row (the `kalamdb-apply` crate).
    let mut analyzer_rules = datafusion::optimizer::Analyzer::new().rules;
    analyzer_rules.push(Arc::new(kalamdb_apply::ApplyAnalyzerRule));
    SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_analyzer_rules(analyzer_rules)
        .with_query_planner(Arc::new(kalamdb_apply::ApplyQueryPlanner::new(max_subquery_rows)))
        .build()
}

/// Session states between statements. Taking one costs a copy of the base state's
/// function registries when none is idle, and nothing otherwise; building one from a
/// builder would register every function again (a third of a `SELECT 1`).
pub(crate) struct SessionPool {
    base: SessionState,
    idle: parking_lot::Mutex<Vec<SessionState>>,
}

/// Idle states kept: enough for every statement running at once on a small server.
const IDLE_SESSIONS: usize = 64;

impl SessionPool {
    pub fn new(base: SessionState) -> SessionPool {
        SessionPool {
            base,
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> SessionState {
        self.idle.lock().pop().unwrap_or_else(|| self.base.clone())
    }

    /// A task context of the base settings under `runtime`, for a plan made
    /// earlier (see [`StatementSession::task_ctx`]).
    fn task_ctx(&self, runtime: Arc<RuntimeEnv>) -> Arc<TaskContext> {
        Arc::new(TaskContext::new(
            None,
            self.base.session_id().to_string(),
            self.base.config().clone(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            runtime,
        ))
    }

    fn give(&self, state: SessionState) {
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_SESSIONS {
            idle.push(state);
        }
    }
}

/// A statement's DataFusion session: a state from the pool with the statement's own
/// catalog list (which decides whose rows it can name), default namespace and clock;
/// and the statement's runtime (its memory pool), which its task contexts carry.
/// Everything a statement sets is set again by the next one that takes the state;
/// a state that had `current_user` registered is not reused.
pub(crate) struct StatementSession<'a> {
    state: Option<SessionState>,
    runtime: Arc<RuntimeEnv>,
    pool: &'a SessionPool,
    reusable: bool,
}

impl<'a> StatementSession<'a> {
    /// A session over `catalogs`, resolving unqualified names in `catalog.schema`.
    pub fn new(
        db: &'a QueryEngine,
        catalogs: Arc<dyn CatalogProviderList>,
        catalog: &str,
        schema: &str,
    ) -> KalamResult<StatementSession<'a>> {
        let runtime = crate::budget::runtime_of_current(&db.query_runtime)?;
        let mut state = db.sessions.take();
        state.register_catalog_list(catalogs);
        let options = &state.config().options().catalog;
        if options.default_catalog != catalog || options.default_schema != schema {
            let options = &mut state.config_mut().options_mut().catalog;
            options.default_catalog = catalog.to_string();
            options.default_schema = schema.to_string();
        }
        // The statement's clock: NOW() and CURRENT_DATE are this moment throughout.
        state.mark_start_execution();
        Ok(StatementSession {
            state: Some(state),
            runtime,
            pool: &db.sessions,
            reusable: true,
        })
    }

    /// A task context that runs under the statement's memory pool. Its function
    /// registries are empty: physical plans hold their functions, and the registry
    /// is only for looking functions up by name (deserializing plans), which nothing
    /// here does; copying the registries cost a tenth of a `SELECT 1`.
    pub fn task_ctx(&self) -> Arc<TaskContext> {
        Arc::new(TaskContext::new(
            None,
            self.state().session_id().to_string(),
            self.state().config().clone(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            HashMap::new(),
            self.runtime.clone(),
        ))
    }

    pub fn state(&self) -> &SessionState {
        self.state.as_ref().expect("present until dropped")
    }

    /// Registers a function for this statement only.
    fn register_udf(&mut self, udf: ScalarUDF) -> KalamResult<()> {
        self.reusable = false;
        let name = udf.name().to_string();
        self.state
            .as_mut()
            .expect("present until dropped")
            .register_udf(Arc::new(udf))
            .map(|_| ())
            .map_err(|e| KalamError::internal(format!("cannot register {name}: {e}")))
    }
}

impl Drop for StatementSession<'_> {
    fn drop(&mut self) {
        if let Some(mut state) = self.state.take()
            && self.reusable
        {
            // An idle state names no tables: it holds neither the caller's scope nor
            // rows, nor the database itself (which would never be freed).
            state.register_catalog_list(Arc::new(MemoryCatalogProviderList::new()));
            self.pool.give(state);
        }
    }
}

/// A session that resolves names in `namespace` and scans as `scope`. The
/// `current_user` function is registered only for statements that call it
/// (registering a function costs a fifth of a short statement).
pub(crate) fn session<'a>(
    db: &'a Arc<QueryEngine>,
    scope: ScanScope,
    namespace: &str,
    with_current_user: bool,
) -> KalamResult<StatementSession<'a>> {
    let catalogs = Arc::new(MemoryCatalogProviderList::new());
    let username = scope.caller.username.clone();
    catalogs.register_catalog(
        CATALOG_NAME.to_string(),
        Arc::new(KalamCatalog::new(
            db.tiers.clone(),
            db.system_tables.clone(),
            scope,
        )),
    );
    let mut session = StatementSession::new(db, catalogs, CATALOG_NAME, namespace)?;
    if with_current_user {
        session.register_udf(current_user_udf(username))?;
    }
    Ok(session)
}

/// Whether the statement calls `current_user`.
fn calls_current_user(statement: &Statement) -> bool {
    visit_expressions(statement, |expr| match expr {
        ast::Expr::Function(f)
            if f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("current_user")) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// `CURRENT_USER`: the caller's user name.
fn current_user_udf(username: String) -> ScalarUDF {
    create_udf(
        "current_user",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(username.clone()))))),
    )
}

/// Plans and runs a read-only statement as `caller`, handing its record batches to
/// `each` as they are produced (nothing is collected).
pub(crate) async fn run_query_batches(
    db: &Arc<QueryEngine>,
    caller: &Caller,
    namespace: &str,
    statement: Statement,
    params: &[Literal],
    mut each: impl FnMut(&RecordBatch) -> KalamResult<()>,
) -> KalamResult<()> {
    within_budget(async {
        let mut rows = stream_query(db, caller, namespace, statement, params).await?;
        while let Some(batch) = rows.batches.next().await {
            each(&batch.map_err(df_error)?)?;
        }
        Ok(())
    })
    .await
}

/// Plans a read-only statement as `caller` and starts it: its record batches are
/// read as the returned stream is polled (nothing is collected).
pub(crate) async fn stream_query(
    db: &Arc<QueryEngine>,
    caller: &Caller,
    namespace: &str,
    statement: Statement,
    params: &[Literal],
) -> KalamResult<RowStream> {
    // A statement that names no table and calls only immutable functions plans to
    // the same thing every time: its plan is kept and run again.
    // Only a statement that names no relation can be constant: others skip the key.
    let key = (params.is_empty() && visit_relations(&statement, |_| ControlFlow::Break(())).is_continue())
        .then(|| statement.to_string())
        .filter(|text| text.len() <= MAX_CONSTANT_TEXT);
    if let Some(key) = &key
        && let Some(cached) = db.constant_plans.get(key)
    {
        let runtime = crate::budget::runtime_of_current(&db.query_runtime)?;
        let plan = kalamdb_apply::fresh_plan(&cached.plan).map_err(df_error)?;
        let batches = execute_stream(plan, db.sessions.task_ctx(runtime)).map_err(df_error)?;
        return Ok(RowStream {
            schema: cached.schema.clone(),
            batches,
        });
    }
    let (session, statement) = prepare_query(db, caller, namespace, statement)?;
    within_budget(async {
        let planned = plan_statement(session.state(), statement, params).await?;
        if let Some(key) = key
            && planned.constant
        {
            db.constant_plans
                .put(key, planned.schema.clone(), planned.plan.clone());
        }
        let batches = execute_stream(planned.plan, session.task_ctx()).map_err(df_error)?;
        Ok(RowStream {
            schema: planned.schema,
            batches,
        })
    })
    .await
}

/// A plan kept by [`ConstantPlans`].
pub(crate) struct ConstantPlan {
    schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
}

/// Physical plans of statements that name no table and call only immutable
/// functions (`SELECT 1`, `SELECT upper('a') || 'b'`, `VALUES (1), (2)`), by their
/// text: such a statement's result depends on nothing but its text, so planning it
/// once is enough. Each run starts from a copy with every operator's state reset.
/// Bounded: when full, the kept plans are forgotten.
#[derive(Default)]
pub(crate) struct ConstantPlans {
    plans: parking_lot::RwLock<HashMap<String, Arc<ConstantPlan>>>,
    reused: std::sync::atomic::AtomicU64,
}

/// Statements [`ConstantPlans`] keeps at most.
const CONSTANT_PLANS: usize = 256;

/// The longest statement text whose plan is kept (a long VALUES list is not worth
/// keeping in memory).
const MAX_CONSTANT_TEXT: usize = 1024;

impl ConstantPlans {
    fn get(&self, key: &str) -> Option<Arc<ConstantPlan>> {
        let plan = self.plans.read().get(key).cloned();
        if plan.is_some() {
            self.reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        plan
    }

    /// Statements run from a kept plan since the server started.
    pub fn reused(&self) -> u64 {
        self.reused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn put(&self, key: String, schema: SchemaRef, plan: Arc<dyn ExecutionPlan>) {
        let mut plans = self.plans.write();
        if plans.len() >= CONSTANT_PLANS {
            plans.clear();
        }
        plans.insert(key, Arc::new(ConstantPlan { schema, plan }));
    }
}

/// Whether a logical plan's result depends on nothing but the plan: it reads no
/// table (nor table function, nor recursive CTE, which plan as scans), has no
/// subquery or parameter, and every function it calls is immutable (`now()` and
/// `current_user()` are folded into constants at planning; `random()` is volatile).
fn is_constant(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let mut constant = true;
    let _ = plan.apply(|node| {
        if matches!(
            node,
            LogicalPlan::TableScan(_)
                | LogicalPlan::Explain(_)
                | LogicalPlan::Analyze(_)
                | LogicalPlan::Extension(_)
                | LogicalPlan::RecursiveQuery(_)
        ) {
            constant = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let immutable = match e {
                    Expr::ScalarFunction(f) => f.func.signature().volatility == Volatility::Immutable,
                    Expr::AggregateFunction(f) => f.func.signature().volatility == Volatility::Immutable,
                    Expr::WindowFunction(_)
                    | Expr::ScalarSubquery(_)
                    | Expr::Exists(_)
                    | Expr::InSubquery(_)
                    | Expr::OuterReferenceColumn(..)
                    | Expr::Placeholder(_) => false,
                    _ => true,
                };
                if !immutable {
                    constant = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if constant {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    constant
}

impl RowStream {
    /// The same rows, produced by a task of their own one batch ahead of the
    /// reader: a streamed result is still the statement running, under its budget.
    /// The deadline is a timer: at `statement_timeout_ms` the statement stops and
    /// the stream ends with `STATEMENT_TIMEOUT`, also when the client has stopped
    /// reading (the statement's work and memory go then, not when the client
    /// reads again). A dropped stream (the client gone) stops the statement too.
    /// Meanwhile a reader that does not read holds a parked task, no thread.
    pub(crate) fn detached(self, budget: &crate::budget::Budget) -> RowStream {
        let RowStream { schema, mut batches } = self;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, DataFusionError>>(1);
        let timed_out: Arc<parking_lot::Mutex<Option<KalamError>>> = Default::default();
        let (deadline, exceeded) = (budget.deadline(), budget.exceeded());
        let slot = timed_out.clone();
        tokio::spawn(async move {
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expired);
            loop {
                let permit = tokio::select! {
                    biased;
                    _ = &mut expired => break,
                    permit = tx.reserve() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return, // the reader is gone
                    },
                };
                let next = tokio::select! {
                    biased;
                    _ = &mut expired => break,
                    _ = tx.closed() => return, // the reader is gone: so is the statement
                    next = batches.next() => next,
                };
                match next {
                    Some(item) => permit.send(item),
                    None => return,
                }
            }
            // The deadline: the statement's work stops here (`batches` is dropped
            // with this task); the reader finds the error after what is queued.
            *slot.lock() = Some(exceeded);
        });
        let stream = futures::stream::unfold(Some(rx), move |rx| {
            let timed_out = timed_out.clone();
            async move {
                let mut rx = rx?;
                match rx.recv().await {
                    Some(item) => Some((item, Some(rx))),
                    None => timed_out
                        .lock()
                        .take()
                        .map(|e| (Err(DataFusionError::External(Box::new(e))), None)),
                }
            }
        });
        RowStream {
            schema: schema.clone(),
            batches: Box::pin(RecordBatchStreamAdapter::new(schema, stream)),
        }
    }
}

/// The session a query of `caller` runs in, and the statement with the hidden
/// columns it does not name kept out of its wildcards.
fn prepare_query<'a>(
    db: &'a Arc<QueryEngine>,
    caller: &Caller,
    namespace: &str,
    mut statement: Statement,
) -> KalamResult<(StatementSession<'a>, Statement)> {
    // Views become derived tables of their queries, planned as this caller.
    let expanded = kalamdb_sql::views::expand_views(&mut statement, namespace, &|ns, name| {
        db.catalog
            .view(ns, name)
            .map(|view| kalamdb_sql::views::ViewBody {
                query: view.query.clone(),
                columns: view.def.columns.clone(),
            })
    })?;
    // The nesting limits hold for what is planned, views included.
    if expanded {
        kalamdb_sql::check_depth(&statement)?;
    }
    check_relations_exist(db, namespace, &statement)?;
    let expose_hidden = references_hidden(&statement);
    if expose_hidden {
        let hidden_of = |name: &ObjectName| hidden_columns_of(db, namespace, name);
        exclude_hidden_from_wildcards(&mut statement, &hidden_of);
    }
    let scope = ScanScope {
        caller: caller.clone(),
        expose_hidden,
    };
    let with_current_user = calls_current_user(&statement);
    Ok((session(db, scope, namespace, with_current_user)?, statement))
}

/// The result schema of a read-only statement planned as `caller` (nothing runs).
pub(crate) async fn query_schema(
    db: &Arc<QueryEngine>,
    caller: &Caller,
    namespace: &str,
    statement: Statement,
) -> KalamResult<SchemaRef> {
    let (session, statement) = prepare_query(db, caller, namespace, statement)?;
    within_budget(async { Ok(plan_statement(session.state(), statement, &[]).await?.schema) }).await
}

/// Plans `statement` in `ctx`, binds `params` and collects the result, within the
/// statement's time budget.
pub(crate) async fn run_statement(
    session: &StatementSession<'_>,
    statement: Statement,
    params: &[Literal],
) -> KalamResult<QueryOutput> {
    within_budget(async {
        let planned = plan_statement(session.state(), statement, params).await?;
        let batches = collect(planned.plan, session.task_ctx())
            .await
            .map_err(df_error)?;
        Ok(QueryOutput {
            schema: planned.schema,
            batches,
        })
    })
    .await
}

/// A planned read-only statement.
struct Planned {
    /// The result's schema (with the names as written).
    schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
    /// Whether the plan can be kept and run again ([`is_constant`]).
    constant: bool,
}

/// Plans `statement` in `state` (read-only statements only) with `params` bound.
async fn plan_statement(
    state: &SessionState,
    mut statement: Statement,
    params: &[Literal],
) -> KalamResult<Planned> {
    let renamed = kalamdb_sql::result_names::disambiguate(&mut statement)?;
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement)))
        .await
        .map_err(df_error)?;
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| KalamError::unsupported(df_message(&e)))?;
    let plan = bind_params(plan, params)?;
    let mut schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
    if let Some(renamed) = &renamed {
        schema = renamed.schema(&plan, &schema);
    }
    let constant = is_constant(&plan);
    let physical = state.create_physical_plan(&plan).await.map_err(df_error)?;
    Ok(Planned {
        schema,
        plan: physical,
        constant,
    })
}

fn bind_params(plan: LogicalPlan, params: &[Literal]) -> KalamResult<LogicalPlan> {
    let types = plan.get_parameter_types().map_err(df_error)?;
    if types.is_empty() {
        return Ok(plan);
    }
    let mut values = Vec::with_capacity(params.len());
    for (i, literal) in params.iter().enumerate() {
        let value = literal_scalar(literal);
        let expected = types.get(&format!("${}", i + 1)).cloned().flatten();
        let value = match expected {
            Some(t) if !value.is_null() && value.data_type() != t => value.cast_to(&t).map_err(|_| {
                KalamError::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "parameter ${} ({}) cannot be used as {t}",
                        i + 1,
                        value.data_type()
                    ),
                )
            })?,
            Some(t) if value.is_null() => ScalarValue::try_from(&t).unwrap_or(ScalarValue::Null),
            _ => value,
        };
        values.push(value);
    }
    for name in types.keys() {
        let index: usize = name.trim_start_matches('$').parse().unwrap_or(0);
        if index == 0 || index > params.len() {
            return Err(KalamError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "no value for parameter {name}: the request has {} params",
                    params.len()
                ),
            ));
        }
    }
    plan.with_param_values(values)
        .map_err(|e| KalamError::new(ErrorCode::InvalidParameter, df_message(&e)))
}

/// A request parameter as a DataFusion literal.
pub(crate) fn literal_scalar(literal: &Literal) -> ScalarValue {
    match literal {
        Literal::Null => ScalarValue::Null,
        Literal::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        Literal::Number(n) => match n.parse::<i64>() {
            Ok(i) => ScalarValue::Int64(Some(i)),
            Err(_) => ScalarValue::Float64(n.parse().ok()),
        },
        Literal::String(s) | Literal::Json(s) => ScalarValue::Utf8(Some(s.clone())),
    }
}

/// `(namespace, table)` of a table name as written, with the request's default namespace.
pub(crate) fn resolve_name(namespace: &str, name: &ObjectName) -> Option<(String, String)> {
    kalamdb_sql::views::resolve_relation(namespace, name)
}

fn hidden_columns_of(db: &QueryEngine, namespace: &str, name: &ObjectName) -> Option<Vec<&'static str>> {
    let (ns, table) = resolve_name(namespace, name)?;
    let table = db.catalog.table(&ns, &table)?;
    let mut hidden = vec![SEQ_COLUMN, DELETED_COLUMN];
    if table.primary_key.is_none() {
        hidden.push(ID_COLUMN);
    }
    Some(hidden)
}

/// Reports the first table the statement names that does not exist, with the
/// precise code (`NAMESPACE_NOT_FOUND` or `TABLE_NOT_FOUND`). CTE names and table
/// functions (`generate_series(1, 3)`, resolved by DataFusion) are skipped.
fn check_relations_exist(db: &QueryEngine, namespace: &str, statement: &Statement) -> KalamResult<()> {
    let mut ctes = NotTables::default();
    let _ = statement.visit(&mut ctes);
    let result = visit_relations(statement, |name| {
        if ctes.functions.contains(name) {
            return ControlFlow::Continue(());
        }
        let Some((ns, table)) = resolve_name(namespace, name) else {
            return ControlFlow::Continue(());
        };
        if name.0.len() == 1 && ctes.ctes.contains(&table) {
            return ControlFlow::Continue(());
        }
        if ns == SYSTEM_NAMESPACE {
            return if db.system_tables.contains(&table) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(KalamError::new(
                    ErrorCode::TableNotFound,
                    format!("table 'system.{table}' does not exist"),
                ))
            };
        }
        match db.catalog.require_table(&ns, &table) {
            Ok(_) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    });
    match result {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Relation names in a statement that are not tables: CTEs and table functions.
#[derive(Default)]
struct NotTables {
    ctes: HashSet<String>,
    functions: Vec<ObjectName>,
}

impl Visitor for NotTables {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name, args: Some(_), ..
        } = factor
        {
            self.functions.push(name.clone());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::budget::Budget;

    /// Sets its flag when dropped.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A streamed result's deadline is a timer: the statement stops at it although
    /// nobody reads (its work is dropped then, not when the reader comes back), and
    /// the reader then finds what was queued and `STATEMENT_TIMEOUT`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_detached_stream_stops_at_its_deadline_unread() {
        let spill = tempfile::tempdir().unwrap();
        let runtime = crate::budget::QueryRuntime::open(spill.path(), 1 << 20).unwrap();
        let budget = Budget::new(&runtime, Some(std::time::Duration::from_millis(200)));
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        // An endless result.
        let endless = futures::stream::repeat_with(move || {
            let _alive = &flag;
            Ok(batch.clone())
        });
        let rows = RowStream {
            schema: schema.clone(),
            batches: Box::pin(RecordBatchStreamAdapter::new(schema, endless)),
        }
        .detached(&budget);
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(
            dropped.load(Ordering::SeqCst),
            "the statement stopped at its deadline, unread"
        );
        let RowStream { mut batches, .. } = rows;
        let mut queued = 0;
        let error = loop {
            match batches.next().await {
                Some(Ok(_)) => queued += 1,
                Some(Err(e)) => break df_error(e),
                None => panic!("the stream ended without its error"),
            }
        };
        assert!(queued <= 1, "{queued} batches were held for the reader");
        assert_eq!(error.code, ErrorCode::StatementTimeout);
        assert!(batches.next().await.is_none());
    }
}
