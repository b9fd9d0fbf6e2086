//! `kalamdb-apply`: subqueries DataFusion cannot decorrelate, evaluated for each row of their outer
//! query (a nested-loop "apply").
//!
//! DataFusion turns a correlated subquery into a join when its correlation is a set
//! of equalities it can pull up (`x.k = t.k`, and EXISTS / IN / ANY / ALL with any
//! predicate); those plans are joins and nothing here runs. Every other shape — a
//! non-equality correlation under an aggregate (`(SELECT count(*) FROM x WHERE
//! x.c > t.c)`), a correlated scalar subquery that is not aggregated, one in ORDER BY
//! or GROUP BY, EXISTS or IN in a select list — becomes an [`ApplyNode`] under the
//! plan node that used it:
//!
//! * at analysis, the subqueries DataFusion's analyzer would refuse ([`ApplyAnalyzerRule`]);
//! * at physical planning, the ones its optimizer left in place ([`ApplyQueryPlanner`]).
//!
//! An apply node adds one column, the subquery's value for the row, which replaces the
//! subquery in the expressions of the node that used it. Its physical operator,
//! [`ApplyExec`], binds the row's outer columns into a slot that the subquery plan reads
//! (outer references are planned as calls of a volatile function reading the slot), and
//! runs the subquery plan again. The parts of the subquery that do not depend on the
//! outer row (its table scans, usually) are computed once and replayed from memory
//! ([`MaterializeExec`], charged to the statement's memory pool); answers are remembered
//! per distinct outer values. The work is bounded: rows replayed plus evaluations may
//! not exceed `max_subquery_rows`, else `RESOURCES_EXHAUSTED`.
//!
//! Semantics are SQL's: a scalar subquery over no rows is NULL and over more than one
//! row an error; `x IN (...)` / `x op ANY|ALL (...)` follow three-valued logic (NULLs
//! make the answer unknown, an empty set makes ANY false and ALL true).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Scalar, new_empty_array};
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, DataFusionError, Result as DfResult, ScalarValue, TableReference,
};
use datafusion::config::ConfigOptions;
use datafusion::execution::TaskContext;
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::expr::{Exists, InSubquery, SetComparison, SetQuantifier};
use datafusion::logical_expr::logical_plan::check_subquery_expr;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Extension, Filter, LogicalPlan, Operator, Projection, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Subquery, UserDefinedLogicalNode, UserDefinedLogicalNodeCore, Volatility,
};
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
use datafusion::optimizer::{AnalyzerRule, OptimizerContext, OptimizerRule};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream, execute_stream,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{StreamExt, TryStreamExt};
use kalamdb_commons::{ErrorCode, KalamError};

/// Prefix of the columns apply nodes add (`__kalam_subquery_<n>`).
const OUTPUT_PREFIX: &str = "__kalam_subquery_";

/// Distinct outer values whose answers an apply operator remembers.
const MEMO_ENTRIES: usize = 100_000;

// ---------------------------------------------------------------------------
// Outer references: a slot per apply operator, read by a volatile function.
// ---------------------------------------------------------------------------

/// The outer row's values a subquery is being evaluated for.
#[derive(Debug, Default)]
struct OuterSlot {
    values: parking_lot::RwLock<Vec<ScalarValue>>,
}

/// An outer column inside a subquery plan, bound to its apply operator's slot.
/// Volatile, so DataFusion never folds it into a constant or pushes it into a scan.
#[derive(Debug)]
struct OuterRef {
    slot: Arc<OuterSlot>,
    index: usize,
    data_type: DataType,
    name: String,
    signature: Signature,
}

impl PartialEq for OuterRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slot, &other.slot) && self.index == other.index
    }
}

impl Eq for OuterRef {}

impl Hash for OuterRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.slot) as usize).hash(state);
        self.index.hash(state);
    }
}

impl ScalarUDFImpl for OuterRef {
    fn name(&self) -> &str {
        &self.name
    }

    fn display_name(&self, _args: &[Expr]) -> DfResult<String> {
        Ok(self.name.clone())
    }

    fn schema_name(&self, _args: &[Expr]) -> DfResult<String> {
        Ok(self.name.clone())
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let values = self.slot.values.read();
        let value = values.get(self.index).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("{} read before its row was bound", self.name))
        })?;
        Ok(ColumnarValue::Scalar(value))
    }
}

fn is_outer_ref(expr: &Expr) -> bool {
    matches!(expr, Expr::ScalarFunction(f) if f.func.inner().downcast_ref::<OuterRef>().is_some())
}

/// Whether `plan` (its subqueries and apply nodes included) reads an outer slot.
fn reads_a_slot(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let Some(apply) = as_apply(node)
            && reads_a_slot(&apply.subquery)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if is_outer_ref(e) {
                    found = true;
                    Ok(TreeNodeRecursion::Stop)
                } else {
                    Ok(TreeNodeRecursion::Continue)
                }
            })
        })
    });
    found
}

fn as_apply(plan: &LogicalPlan) -> Option<&ApplyNode> {
    match plan {
        LogicalPlan::Extension(Extension { node }) => node.as_any().downcast_ref::<ApplyNode>(),
        _ => None,
    }
}

/// Replaces the outer references of `plan` that name columns of `scope` (the apply
/// node's input) by reads of `slot`, in nested subqueries too (where a column the
/// nested subquery's own outer plan has is that plan's, not ours). Returns the plan
/// and the bound columns in slot order.
fn bind_outer(
    plan: &LogicalPlan,
    scope: &DFSchema,
    slot: &Arc<OuterSlot>,
) -> DfResult<(LogicalPlan, Vec<Column>)> {
    let mut binder = Binder {
        scope,
        slot,
        bound: Vec::new(),
    };
    let plan = binder.bind(plan.clone(), &[])?;
    Ok((plan, binder.bound))
}

struct Binder<'a> {
    scope: &'a DFSchema,
    slot: &'a Arc<OuterSlot>,
    bound: Vec<Column>,
}

impl Binder<'_> {
    fn binds(&self, column: &Column, shadow: &[DFSchemaRef]) -> bool {
        self.scope.has_column(column) && !shadow.iter().any(|s| s.has_column(column))
    }

    fn slot_expr(&mut self, field: &FieldRef, column: &Column) -> Expr {
        let index = match self.bound.iter().position(|c| c == column) {
            Some(i) => i,
            None => {
                self.bound.push(column.clone());
                self.bound.len() - 1
            }
        };
        let udf = OuterRef {
            slot: self.slot.clone(),
            index,
            data_type: field.data_type().clone(),
            name: format!("outer({})", column.flat_name()),
            signature: Signature::nullary(Volatility::Volatile),
        };
        ScalarUDF::new_from_impl(udf).call(vec![])
    }

    fn bind(&mut self, plan: LogicalPlan, shadow: &[DFSchemaRef]) -> DfResult<LogicalPlan> {
        plan.transform_up(|node| {
            // Nested subqueries of this node see its inputs' columns first.
            let mut nested_shadow = shadow.to_vec();
            nested_shadow.extend(node.inputs().iter().map(|i| i.schema().clone()));
            let keeps_names = names_its_output(&node);
            let node = node.map_expressions(|expr| {
                let before = expr.qualified_name();
                let rewritten = expr.transform_up(|e| self.bind_expr(e, shadow, &nested_shadow))?;
                Ok(rewritten.update_data(|e| keep_name(keeps_names, before, e)))
            })?;
            // An apply node planned earlier in this subquery keeps its own subquery.
            match as_apply(&node.data) {
                Some(apply) => {
                    let mut apply = apply.clone();
                    apply.subquery = Arc::new(self.bind((*apply.subquery).clone(), &nested_shadow)?);
                    Ok(Transformed::yes(apply.into_plan()))
                }
                None => Ok(node),
            }
        })
        .map(|t| t.data)
    }

    fn bind_expr(
        &mut self,
        expr: Expr,
        shadow: &[DFSchemaRef],
        nested: &[DFSchemaRef],
    ) -> DfResult<Transformed<Expr>> {
        Ok(match expr {
            Expr::OuterReferenceColumn(field, column) if self.binds(&column, shadow) => {
                Transformed::yes(self.slot_expr(&field, &column))
            }
            Expr::ScalarSubquery(sq) => {
                Transformed::yes(Expr::ScalarSubquery(self.bind_subquery(sq, nested)?))
            }
            Expr::Exists(e) => Transformed::yes(Expr::Exists(Exists {
                subquery: self.bind_subquery(e.subquery, nested)?,
                negated: e.negated,
            })),
            Expr::InSubquery(e) => Transformed::yes(Expr::InSubquery(InSubquery {
                expr: e.expr,
                subquery: self.bind_subquery(e.subquery, nested)?,
                negated: e.negated,
            })),
            Expr::SetComparison(e) => Transformed::yes(Expr::SetComparison(SetComparison {
                expr: e.expr,
                subquery: self.bind_subquery(e.subquery, nested)?,
                op: e.op,
                quantifier: e.quantifier,
            })),
            other => Transformed::no(other),
        })
    }

    fn bind_subquery(&mut self, sq: Subquery, shadow: &[DFSchemaRef]) -> DfResult<Subquery> {
        let plan = self.bind((*sq.subquery).clone(), shadow)?;
        let outer_ref_columns = sq
            .outer_ref_columns
            .into_iter()
            .filter(|e| !matches!(e, Expr::OuterReferenceColumn(_, c) if self.binds(c, shadow)))
            .collect();
        Ok(Subquery {
            subquery: Arc::new(plan),
            outer_ref_columns,
            spans: sq.spans,
        })
    }
}

/// Whether a node's expressions name its output columns (so a rewritten expression
/// must keep its old name). DataFusion's `NamePreserver` would alias sort keys too.
fn names_its_output(node: &LogicalPlan) -> bool {
    matches!(node, LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_))
}

/// `expr` under the name it had `before` a rewrite, when `keeps` and it changed.
fn keep_name(keeps: bool, before: (Option<TableReference>, String), expr: Expr) -> Expr {
    if keeps && expr.qualified_name() != before {
        let (relation, name) = before;
        expr.alias_qualified(relation, name)
    } else {
        expr
    }
}

// ---------------------------------------------------------------------------
// Logical nodes.
// ---------------------------------------------------------------------------

/// What an apply node computes from the subquery's rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
enum ApplyKind {
    /// The one value of a one-column subquery (NULL without rows; more is an error).
    Scalar,
    /// Whether the subquery has a row.
    Exists,
    /// `operand op ANY (subquery)` (`IN` is `= ANY`), or `op ALL` when `all`.
    Quantified { op: Operator, all: bool },
}

impl fmt::Display for ApplyKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ApplyKind::Scalar => write!(f, "scalar"),
            ApplyKind::Exists => write!(f, "exists"),
            ApplyKind::Quantified { op, all } => write!(f, "{op} {}", if *all { "ALL" } else { "ANY" }),
        }
    }
}

/// Its input's rows, each with the value of `subquery` for that row as one more
/// column, `output`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ApplyNode {
    input: Arc<LogicalPlan>,
    /// Refers to `input`'s columns as outer references.
    subquery: Arc<LogicalPlan>,
    kind: ApplyKind,
    /// Compared with the subquery's rows (`Quantified`).
    operand: Option<Expr>,
    output: String,
    schema: DFSchemaRef,
}

impl PartialOrd for ApplyNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match self.input.partial_cmp(&other.input) {
            Some(std::cmp::Ordering::Equal) => self.output.partial_cmp(&other.output),
            ordering => ordering,
        }
    }
}

impl ApplyNode {
    fn try_new(
        input: Arc<LogicalPlan>,
        subquery: Arc<LogicalPlan>,
        kind: ApplyKind,
        operand: Option<Expr>,
        output: String,
    ) -> DfResult<ApplyNode> {
        let field = match kind {
            ApplyKind::Scalar => {
                let inner = subquery.schema().field(0);
                Field::new(&output, inner.data_type().clone(), true)
            }
            ApplyKind::Exists => Field::new(&output, DataType::Boolean, false),
            ApplyKind::Quantified { .. } => Field::new(&output, DataType::Boolean, true),
        };
        let added = DFSchema::from_unqualified_fields(vec![field].into(), HashMap::new())?;
        let schema = Arc::new(input.schema().join(&added)?);
        Ok(ApplyNode {
            input,
            subquery,
            kind,
            operand,
            output,
            schema,
        })
    }

    fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension { node: Arc::new(self) })
    }

    /// The outer columns of the subquery, as the explain output shows them.
    fn outer_columns(&self) -> Vec<String> {
        let mut names = Vec::new();
        let _ = self.subquery.apply_with_subqueries(|node| {
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    if let Expr::OuterReferenceColumn(_, c) = e
                        && self.input.schema().has_column(c)
                        && !names.contains(&c.flat_name())
                    {
                        names.push(c.flat_name());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })
            })
        });
        names
    }
}

impl UserDefinedLogicalNodeCore for ApplyNode {
    fn name(&self) -> &str {
        "CorrelatedApply"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.operand.iter().cloned().collect()
    }

    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        // Filters on the input's columns may run before the subquery does.
        HashSet::from([self.output.clone()])
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "CorrelatedApply: {} subquery evaluated per input row (nested loop), outer=[{}], output={}",
            self.kind,
            self.outer_columns().join(", "),
            self.output
        )
    }

    fn with_exprs_and_inputs(&self, mut exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("CorrelatedApply needs its input".into()))?;
        let operand = if self.operand.is_some() { exprs.pop() } else { None };
        ApplyNode::try_new(
            Arc::new(input),
            self.subquery.clone(),
            self.kind.clone(),
            operand,
            self.output.clone(),
        )
    }
}

/// Its input, computed once per statement and replayed from memory for every outer
/// row. `replayed` counts the rows handed out (the apply operator's work).
#[derive(Debug, Clone)]
struct MaterializeNode {
    input: Arc<LogicalPlan>,
    replayed: Arc<AtomicU64>,
}

impl PartialEq for MaterializeNode {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input && Arc::ptr_eq(&self.replayed, &other.replayed)
    }
}

impl Eq for MaterializeNode {}

impl Hash for MaterializeNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.input.hash(state);
    }
}

impl PartialOrd for MaterializeNode {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.input.partial_cmp(&other.input)
    }
}

impl UserDefinedLogicalNodeCore for MaterializeNode {
    fn name(&self) -> &str {
        "Materialize"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Materialize: computed once, replayed for each outer row")
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> DfResult<Self> {
        let input = inputs
            .pop()
            .ok_or_else(|| DataFusionError::Internal("Materialize needs its input".into()))?;
        Ok(MaterializeNode {
            input: Arc::new(input),
            replayed: self.replayed.clone(),
        })
    }
}

/// Wraps each largest part of `plan` that reads a table and no outer slot in a
/// [`MaterializeNode`].
fn materialize_outer_free(plan: LogicalPlan, replayed: &Arc<AtomicU64>) -> DfResult<LogicalPlan> {
    if !reads_a_slot(&plan) {
        let reads_a_table = plan.exists(|n| Ok(matches!(n, LogicalPlan::TableScan(_))))?;
        if reads_a_table {
            return Ok(LogicalPlan::Extension(Extension {
                node: Arc::new(MaterializeNode {
                    input: Arc::new(plan),
                    replayed: replayed.clone(),
                }),
            }));
        }
        return Ok(plan);
    }
    // An apply node's children are its input only: its subquery is planned by itself.
    plan.map_children(|child| Ok(Transformed::yes(materialize_outer_free(child, replayed)?)))
        .map(|t| t.data)
}

// ---------------------------------------------------------------------------
// Rewriting plan nodes that use subqueries.
// ---------------------------------------------------------------------------

/// The subquery expression in `expr`, if it is one.
fn subquery_of(expr: &Expr) -> Option<&Subquery> {
    match expr {
        Expr::ScalarSubquery(sq) => Some(sq),
        Expr::Exists(e) => Some(&e.subquery),
        Expr::InSubquery(e) => Some(&e.subquery),
        Expr::SetComparison(e) => Some(&e.subquery),
        _ => None,
    }
}

/// Puts an apply node under `node` for each subquery expression of `node` that
/// `select` picks (outermost ones only: nested ones are planned with their
/// subquery), and refers to its column instead.
fn rewrite_node(
    node: LogicalPlan,
    select: &dyn Fn(&LogicalPlan, &Expr) -> bool,
    next_name: &mut usize,
) -> DfResult<Transformed<LogicalPlan>> {
    if !matches!(
        node,
        LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Aggregate(_)
    ) {
        return Ok(Transformed::no(node));
    }
    let mut picked: Vec<Expr> = Vec::new();
    node.apply_expressions(|expr| {
        expr.apply(|e| {
            if subquery_of(e).is_some() {
                if select(&node, e) && !picked.contains(e) {
                    picked.push(e.clone());
                }
                Ok(TreeNodeRecursion::Jump)
            } else {
                Ok(TreeNodeRecursion::Continue)
            }
        })
    })?;
    if picked.is_empty() {
        return Ok(Transformed::no(node));
    }
    // The subqueries run where their outer columns are: below the projection a sort
    // sits on when ORDER BY names columns the select list does not carry.
    let outer_columns: Vec<Column> = picked
        .iter()
        .filter_map(subquery_of)
        .flat_map(|sq| escaping_refs(&sq.subquery, false))
        .collect();
    let direct_input = node.inputs()[0].clone();
    let (mut input, reproject) = match (&node, &direct_input) {
        (LogicalPlan::Sort(_), LogicalPlan::Projection(projection))
            if outer_columns.iter().any(|c| !projection.schema.has_column(c))
                && outer_columns
                    .iter()
                    .all(|c| projection.input.schema().has_column(c)) =>
        {
            (projection.input.clone(), Some(projection.expr.clone()))
        }
        _ => (Arc::new(direct_input), None),
    };
    let mut added = Vec::new();
    let mut replacements: HashMap<Expr, Expr> = HashMap::new();
    for expr in picked {
        let name = format!("{OUTPUT_PREFIX}{}", *next_name);
        *next_name += 1;
        let column = Expr::Column(Column::new_unqualified(&name));
        let (subquery, kind, operand, replacement) = match expr.clone() {
            Expr::ScalarSubquery(sq) => (sq.subquery, ApplyKind::Scalar, None, column),
            Expr::Exists(e) => {
                let replacement = if e.negated {
                    Expr::Not(Box::new(column))
                } else {
                    column
                };
                (e.subquery.subquery, ApplyKind::Exists, None, replacement)
            }
            Expr::InSubquery(e) => {
                let replacement = if e.negated {
                    Expr::Not(Box::new(column))
                } else {
                    column
                };
                let kind = ApplyKind::Quantified {
                    op: Operator::Eq,
                    all: false,
                };
                (e.subquery.subquery, kind, Some(*e.expr), replacement)
            }
            Expr::SetComparison(e) => {
                let kind = ApplyKind::Quantified {
                    op: e.op,
                    all: matches!(e.quantifier, SetQuantifier::All),
                };
                (e.subquery.subquery, kind, Some(*e.expr), column)
            }
            other => {
                return Err(DataFusionError::Internal(format!(
                    "CorrelatedApply picked a non-subquery expression: {other}"
                )));
            }
        };
        input = Arc::new(ApplyNode::try_new(input, subquery, kind, operand, name.clone())?.into_plan());
        replacements.insert(expr, replacement);
        added.push(Expr::Column(Column::new_unqualified(name)));
    }
    if let Some(mut exprs) = reproject {
        exprs.extend(added);
        input = Arc::new(LogicalPlan::Projection(Projection::try_new(exprs, input)?));
    }
    let keeps_names = names_its_output(&node);
    let exprs = node
        .expressions()
        .into_iter()
        .map(|expr| {
            let before = expr.qualified_name();
            let rewritten = expr
                .transform_down(|e| match replacements.get(&e) {
                    Some(r) => Ok(Transformed::new(r.clone(), true, TreeNodeRecursion::Jump)),
                    None => Ok(Transformed::no(e)),
                })?
                .data;
            Ok(keep_name(keeps_names, before, rewritten))
        })
        .collect::<DfResult<Vec<_>>>()?;
    let original_columns: Vec<Expr> = node.schema().columns().into_iter().map(Expr::Column).collect();
    let rewritten = node.with_new_exprs(exprs, vec![(*input).clone()])?;
    let rewritten = match rewritten {
        // These pass their input's columns through: drop the added ones.
        LogicalPlan::Filter(_) | LogicalPlan::Sort(_) => {
            datafusion::logical_expr::LogicalPlanBuilder::from(rewritten)
                .project(original_columns)?
                .build()?
        }
        other => other,
    };
    Ok(Transformed::yes(rewritten))
}

/// Rewrites every node of `plan`, and of the plans of its subquery expressions when
/// `with_subqueries` (inner ones first).
fn rewrite_plan(
    plan: LogicalPlan,
    with_subqueries: bool,
    select: &dyn Fn(&LogicalPlan, &Expr) -> bool,
) -> DfResult<LogicalPlan> {
    let mut next_name = 0usize;
    let _ = plan.apply_with_subqueries(|node| {
        if let Some(apply) = as_apply(node)
            && let Some(n) = apply
                .output
                .strip_prefix(OUTPUT_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
        {
            next_name = next_name.max(n + 1);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let rewritten = if with_subqueries {
        plan.transform_up_with_subqueries(|node| rewrite_node(node, select, &mut next_name))?
    } else {
        plan.transform_up(|node| rewrite_node(node, select, &mut next_name))?
    };
    Ok(rewritten.data)
}

/// Turns every subquery DataFusion will not turn into a join into an apply node,
/// before its optimizer runs: the optimizer rewrites the plans around a subquery it
/// left in place (pushing filters through aliases, pruning columns) without
/// rewriting the outer references inside it. Picked are the subqueries its analyzer
/// would refuse (not aggregated, outside a projection or filter, correlated two
/// levels out) and those its decorrelation rules leave when tried on the node alone.
/// Inner subqueries are visited first, so a nested subquery that cannot become a
/// join is an apply node inside the plan its outer one decorrelates. Runs after
/// DataFusion's own analyzer rules.
#[derive(Debug, Default)]
pub struct ApplyAnalyzerRule;

impl AnalyzerRule for ApplyAnalyzerRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        if !plan_has_subqueries(&plan) {
            return Ok(plan);
        }
        rewrite_plan(plan, true, &|node, expr| {
            let Some(subquery) = subquery_of(expr) else {
                return false;
            };
            // A subquery of the wrong width stays, for DataFusion's error.
            let one_column = subquery.subquery.schema().fields().len() == 1;
            if !one_column && !matches!(expr, Expr::Exists(_)) {
                return false;
            }
            // DataFusion runs uncorrelated scalar subqueries once.
            if matches!(expr, Expr::ScalarSubquery(sq) if escaping_refs(&sq.subquery, false).is_empty()) {
                return false;
            }
            check_subquery_expr(node, &subquery.subquery, expr).is_err()
                || correlates_past_its_outer(node, &subquery.subquery)
                || correlated_not_in(expr)
                || !decorrelates(node, expr)
        })
    }

    fn name(&self) -> &str {
        "kalam_correlated_apply"
    }
}

fn plan_has_subqueries(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if subquery_of(e).is_some() {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// Whether DataFusion's decorrelation turns `expr`, used in `node`, into a join:
/// tried on a node holding only `expr` over `node`'s input (its rules handle scalar
/// subqueries in projections and filters, and EXISTS / IN / ANY / ALL in filters).
fn decorrelates(node: &LogicalPlan, expr: &Expr) -> bool {
    let input = match node {
        LogicalPlan::Projection(p) => p.input.clone(),
        LogicalPlan::Filter(f) => f.input.clone(),
        _ => return false,
    };
    let context = OptimizerContext::new();
    let tried = match expr {
        Expr::ScalarSubquery(_) => Projection::try_new(vec![expr.clone().alias("probe")], input)
            .map(LogicalPlan::Projection)
            .and_then(|trial| ScalarSubqueryToJoin::new().rewrite(trial, &context)),
        _ if matches!(node, LogicalPlan::Filter(_)) => Filter::try_new(expr.clone(), input)
            .map(LogicalPlan::Filter)
            .and_then(|trial| DecorrelatePredicateSubquery::new().rewrite(trial, &context)),
        _ => return false,
    };
    match tried {
        Ok(result) => result.transformed && !plan_has_subqueries(&result.data),
        Err(_) => false,
    }
}

/// The outer references of `plan` that name columns outside it: its own, and those
/// of its nested subqueries and apply nodes that the plans around them do not
/// have. `nested_only` leaves out the ones `plan`'s own nodes make.
fn escaping_refs(plan: &LogicalPlan, nested_only: bool) -> Vec<Column> {
    let mut found: Vec<Column> = Vec::new();
    let add = |c: Column, found: &mut Vec<Column>| {
        if !found.contains(&c) {
            found.push(c);
        }
    };
    let _ = plan.apply(|node| {
        let local: Vec<DFSchemaRef> = node.inputs().iter().map(|i| i.schema().clone()).collect();
        let visible = |c: &Column| local.iter().any(|s| s.has_column(c));
        if let Some(apply) = as_apply(node) {
            for c in escaping_refs(&apply.subquery, false) {
                if !visible(&c) {
                    add(c, &mut found);
                }
            }
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                match e {
                    Expr::OuterReferenceColumn(_, c) if !nested_only => add(c.clone(), &mut found),
                    _ => {
                        if let Some(nested) = subquery_of(e) {
                            for c in escaping_refs(&nested.subquery, false) {
                                if !visible(&c) {
                                    add(c, &mut found);
                                }
                            }
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// Whether a subquery nested in `subquery` names columns of `node`'s inputs (two
/// levels out). DataFusion decorrelates the nested one into a join that names those
/// columns as its own, which its outer subquery cannot plan: such subqueries run
/// row by row as a whole, their nested ones planned per row.
fn correlates_past_its_outer(node: &LogicalPlan, subquery: &LogicalPlan) -> bool {
    let ours: Vec<DFSchemaRef> = node.inputs().iter().map(|i| i.schema().clone()).collect();
    escaping_refs(subquery, true)
        .iter()
        .any(|c| ours.iter().any(|s| s.has_column(c)))
}

/// Whether `expr` is `x NOT IN (correlated subquery)`. DataFusion plans it as a
/// null-aware anti join, which answers from NULLs of other outer rows' subquery
/// results (an empty answer where SQL's is not) and cannot take the correlation's
/// equalities as keys beside the IN's.
fn correlated_not_in(expr: &Expr) -> bool {
    matches!(expr, Expr::InSubquery(e) if e.negated && !escaping_refs(&e.subquery.subquery, false).is_empty())
}

/// Apply nodes for the subquery expressions DataFusion's optimizer could not turn
/// into joins (uncorrelated scalar subqueries stay: DataFusion runs them once).
fn apply_remaining(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    let mut any = false;
    let _ = plan.apply(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if needs_apply(e) {
                    any = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    if !any {
        return Ok(plan);
    }
    rewrite_plan(plan, false, &|_, expr| needs_apply(expr))
}

fn needs_apply(expr: &Expr) -> bool {
    match expr {
        Expr::ScalarSubquery(sq) => !escaping_refs(&sq.subquery, false).is_empty(),
        Expr::Exists(_) | Expr::InSubquery(_) | Expr::SetComparison(_) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Physical planning.
// ---------------------------------------------------------------------------

/// DataFusion's physical planner, with apply nodes for what its optimizer left of
/// subqueries, and the operators of [`ApplyNode`] and [`MaterializeNode`].
#[derive(Debug)]
pub struct ApplyQueryPlanner {
    max_rows: u64,
}

impl ApplyQueryPlanner {
    pub fn new(max_rows: u64) -> ApplyQueryPlanner {
        ApplyQueryPlanner { max_rows }
    }
}

#[async_trait]
impl QueryPlanner for ApplyQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = apply_remaining(logical_plan.clone())?;
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ApplyPlanner {
            max_rows: self.max_rows,
        })])
        .create_physical_plan(&plan, session)
        .await
    }
}

struct ApplyPlanner {
    max_rows: u64,
}

#[async_trait]
impl ExtensionPlanner for ApplyPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        if let Some(materialize) = node.as_any().downcast_ref::<MaterializeNode>() {
            let input = physical_inputs
                .first()
                .ok_or_else(|| DataFusionError::Internal("Materialize needs its input".into()))?;
            return Ok(Some(Arc::new(MaterializeExec::new(
                input.clone(),
                materialize.replayed.clone(),
            ))));
        }
        let Some(apply) = node.as_any().downcast_ref::<ApplyNode>() else {
            return Ok(None);
        };
        let (Some(logical_input), Some(input)) = (logical_inputs.first(), physical_inputs.first()) else {
            return Err(DataFusionError::Internal(
                "CorrelatedApply needs its input".into(),
            ));
        };
        let state = session.as_any().downcast_ref::<SessionState>().ok_or_else(|| {
            DataFusionError::Internal("CorrelatedApply is planned in a SessionState".into())
        })?;
        let input_schema = logical_input.schema();
        let slot = Arc::new(OuterSlot::default());
        let (bound, columns) = bind_outer(&apply.subquery, input_schema, &slot)?;
        let outer = columns
            .iter()
            .map(|c| input_schema.index_of_column(c))
            .collect::<DfResult<Vec<_>>>()?;

        // The subquery runs once per outer row: one partition, and no dynamic
        // filters (a plan that has them cannot run twice).
        let mut sub_state = state.clone();
        {
            let options = sub_state.config_mut().options_mut();
            options.execution.target_partitions = 1;
            options.optimizer.enable_dynamic_filter_pushdown = false;
            options.optimizer.enable_topk_dynamic_filter_pushdown = false;
            options.optimizer.enable_join_dynamic_filter_pushdown = false;
            options.optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        }
        let optimized = apply_remaining(sub_state.optimize(&bound)?)?;
        let replayed = Arc::new(AtomicU64::new(0));
        let wrapped = materialize_outer_free(optimized, &replayed)?;
        let subplan = planner.create_physical_plan(&wrapped, &sub_state).await?;
        let operand = match &apply.operand {
            Some(expr) => Some(planner.create_physical_expr(expr, input_schema, session, planning_ctx)?),
            None => None,
        };
        let schema: SchemaRef = Arc::new(apply.schema.as_arrow().clone());
        let output_type = schema.field(schema.fields().len() - 1).data_type().clone();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Some(Arc::new(ApplyExec {
            input: input.clone(),
            subplan,
            slot,
            outer,
            outer_names: columns.iter().map(|c| c.flat_name()).collect(),
            kind: apply.kind.clone(),
            operand,
            output_type,
            replayed,
            max_rows: self.max_rows,
            schema,
            properties,
        })))
    }
}

// ---------------------------------------------------------------------------
// Operators.
// ---------------------------------------------------------------------------

/// Runs `subplan` for each row of `input` with the row's outer columns bound, and
/// appends its answer as a column.
#[derive(Debug, Clone)]
pub(crate) struct ApplyExec {
    input: Arc<dyn ExecutionPlan>,
    subplan: Arc<dyn ExecutionPlan>,
    slot: Arc<OuterSlot>,
    /// Indices of the outer columns in `input`'s schema, in slot order.
    outer: Vec<usize>,
    outer_names: Vec<String>,
    kind: ApplyKind,
    operand: Option<Arc<dyn PhysicalExpr>>,
    output_type: DataType,
    replayed: Arc<AtomicU64>,
    max_rows: u64,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for ApplyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "CorrelatedApplyExec: {} subquery per input row (nested loop), outer=[{}]",
            self.kind,
            self.outer_names.join(", ")
        )
    }
}

impl ExecutionPlan for ApplyExec {
    fn name(&self) -> &str {
        "CorrelatedApplyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        match &self.operand {
            Some(operand) => f(operand),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("CorrelatedApplyExec needs its input".into()))?;
        Ok(Arc::new(ApplyExec {
            input,
            ..self.as_ref().clone()
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "CorrelatedApplyExec has no partition {partition}"
            )));
        }
        let input = self.input.execute(0, context.clone())?;
        let run = ApplyRun {
            exec: self.clone(),
            context,
            memo: HashMap::new(),
        };
        // One batch at a time: the memo and the slot are this stream's own.
        let stream = futures::stream::unfold((input, run), |(mut input, mut run)| async move {
            let result = match input.next().await? {
                Ok(batch) => run.next_batch(batch).await,
                Err(e) => Err(e),
            };
            Some((result, (input, run)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

/// One execution of an [`ApplyExec`].
struct ApplyRun {
    /// The operator (its subplan, slot, outer columns, kind, ...).
    exec: ApplyExec,
    context: Arc<TaskContext>,
    /// Answers by outer values (and operand).
    memo: HashMap<(Vec<ScalarValue>, Option<ScalarValue>), ScalarValue>,
}

impl ApplyRun {
    async fn next_batch(&mut self, batch: RecordBatch) -> DfResult<RecordBatch> {
        let rows = batch.num_rows();
        let operands = match &self.exec.operand {
            Some(expr) => Some(expr.evaluate(&batch)?.into_array(rows)?),
            None => None,
        };
        let mut answers = Vec::with_capacity(rows);
        for row in 0..rows {
            let key = self
                .exec
                .outer
                .iter()
                .map(|&i| ScalarValue::try_from_array(batch.column(i), row))
                .collect::<DfResult<Vec<_>>>()?;
            let operand = match &operands {
                Some(values) => Some(ScalarValue::try_from_array(values, row)?),
                None => None,
            };
            let key = (key, operand);
            if let Some(answer) = self.memo.get(&key) {
                answers.push(answer.clone());
                continue;
            }
            let answer = self.evaluate(&key.0, key.1.as_ref()).await?;
            if self.memo.len() < MEMO_ENTRIES {
                self.memo.insert(key, answer.clone());
            }
            answers.push(answer);
            // Lets the statement's deadline fire between rows.
            tokio::task::yield_now().await;
        }
        let column: ArrayRef = if answers.is_empty() {
            new_empty_array(&self.exec.output_type)
        } else {
            ScalarValue::iter_to_array(answers)?
        };
        let mut columns = batch.columns().to_vec();
        columns.push(column);
        Ok(RecordBatch::try_new(self.exec.schema.clone(), columns)?)
    }

    /// Runs the subquery for one outer row.
    async fn evaluate(&self, outer: &[ScalarValue], operand: Option<&ScalarValue>) -> DfResult<ScalarValue> {
        *self.exec.slot.values.write() = outer.to_vec();
        let plan = fresh_plan(&self.exec.subplan)?;
        let mut stream = execute_stream(plan, self.context.clone())?;
        let answer = match &self.exec.kind {
            ApplyKind::Exists => {
                let mut found = false;
                while let Some(batch) = stream.next().await {
                    if batch?.num_rows() > 0 {
                        found = true;
                        break;
                    }
                }
                ScalarValue::Boolean(Some(found))
            }
            ApplyKind::Scalar => {
                let mut value: Option<ScalarValue> = None;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    if value.is_some() || batch.num_rows() > 1 {
                        return Err(DataFusionError::Execution(
                            "Scalar subquery returned more than one row".into(),
                        ));
                    }
                    value = Some(ScalarValue::try_from_array(batch.column(0), 0)?);
                }
                match value {
                    Some(v) => v,
                    None => ScalarValue::try_from(&self.exec.output_type)?,
                }
            }
            ApplyKind::Quantified { op, all } => {
                let operand = operand
                    .ok_or_else(|| DataFusionError::Internal("quantified subquery without operand".into()))?;
                quantified(&mut stream, operand, *op, *all).await?
            }
        };
        let work = self.exec.replayed.fetch_add(1, Ordering::Relaxed) + 1;
        if work > self.exec.max_rows {
            return Err(DataFusionError::External(Box::new(KalamError::new(
                ErrorCode::ResourcesExhausted,
                format!(
                    "a correlated subquery evaluated row by row read more than max_subquery_rows ({}) rows; \
                     write it as a join, filter the outer rows first, or raise the setting",
                    self.exec.max_rows
                ),
            ))));
        }
        Ok(answer)
    }
}

/// `operand op ANY|ALL (rows)` in SQL's three-valued logic.
async fn quantified(
    stream: &mut SendableRecordBatchStream,
    operand: &ScalarValue,
    op: Operator,
    all: bool,
) -> DfResult<ScalarValue> {
    let mut unknown = false;
    let probe = Scalar::new(operand.to_array()?);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let values = batch.column(0);
        let compared: BooleanArray = match op {
            Operator::Eq => cmp::eq(values, &probe)?,
            Operator::NotEq => cmp::neq(values, &probe)?,
            Operator::Lt => cmp::gt(values, &probe)?,
            Operator::LtEq => cmp::gt_eq(values, &probe)?,
            Operator::Gt => cmp::lt(values, &probe)?,
            Operator::GtEq => cmp::lt_eq(values, &probe)?,
            other => {
                return Err(DataFusionError::NotImplemented(format!(
                    "the comparison {other} with ANY/ALL"
                )));
            }
        };
        let trues = compared.true_count();
        let nulls = compared.null_count();
        let falses = compared.len() - trues - nulls;
        if !all && trues > 0 {
            return Ok(ScalarValue::Boolean(Some(true)));
        }
        if all && falses > 0 {
            return Ok(ScalarValue::Boolean(Some(false)));
        }
        unknown |= nulls > 0;
    }
    Ok(if unknown {
        ScalarValue::Boolean(None)
    } else {
        ScalarValue::Boolean(Some(all))
    })
}

/// A copy of `plan` that can run again: every operator's state reset, except the
/// materialized parts, which keep what they computed.
pub fn fresh_plan(plan: &Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
    if plan.is::<MaterializeExec>() {
        return Ok(plan.clone());
    }
    let children = plan
        .children()
        .into_iter()
        .map(fresh_plan)
        .collect::<DfResult<Vec<_>>>()?;
    let plan = if children.is_empty() {
        plan.clone()
    } else {
        plan.clone().replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?
    };
    plan.reset_state()
}

/// Computes its input once (on first execution) and replays the rows on every
/// execution after; the rows are charged to the statement's memory pool.
#[derive(Debug)]
pub(crate) struct MaterializeExec {
    input: Arc<dyn ExecutionPlan>,
    rows: Arc<tokio::sync::OnceCell<Arc<Materialized>>>,
    replayed: Arc<AtomicU64>,
    properties: Arc<PlanProperties>,
}

#[derive(Debug)]
struct Materialized {
    batches: Vec<RecordBatch>,
    rows: u64,
    _reservation: MemoryReservation,
}

impl MaterializeExec {
    fn new(input: Arc<dyn ExecutionPlan>, replayed: Arc<AtomicU64>) -> MaterializeExec {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        MaterializeExec {
            input,
            rows: Arc::new(tokio::sync::OnceCell::new()),
            replayed,
            properties,
        }
    }
}

impl DisplayAs for MaterializeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "MaterializeExec: computed once, replayed for each outer row")
    }
}

impl ExecutionPlan for MaterializeExec {
    fn name(&self) -> &str {
        "MaterializeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("MaterializeExec needs its input".into()))?;
        Ok(Arc::new(MaterializeExec::new(input, self.replayed.clone())))
    }

    fn reset_state(self: Arc<Self>) -> DfResult<Arc<dyn ExecutionPlan>> {
        // What it computed does not depend on the outer row: keep it.
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "MaterializeExec has no partition {partition}"
            )));
        }
        let cell = self.rows.clone();
        let input = self.input.clone();
        let replayed = self.replayed.clone();
        let rows = futures::stream::once(async move {
            let materialized = cell
                .get_or_try_init(|| async {
                    // Each batch is charged to the statement's pool before it is
                    // kept: a subquery over more rows than the budget holds fails
                    // with RESOURCES_EXHAUSTED having held at most one batch more.
                    let reservation =
                        MemoryConsumer::new("correlated subquery input").register(context.memory_pool());
                    let mut input = execute_stream(input, context.clone())?;
                    let (mut batches, mut rows) = (Vec::new(), 0u64);
                    while let Some(batch) = input.next().await {
                        let batch = batch?;
                        reservation.try_grow(batch.get_array_memory_size())?;
                        rows += batch.num_rows() as u64;
                        batches.push(batch);
                    }
                    Ok::<_, DataFusionError>(Arc::new(Materialized {
                        batches,
                        rows,
                        _reservation: reservation,
                    }))
                })
                .await?;
            replayed.fetch_add(materialized.rows, Ordering::Relaxed);
            Ok::<_, DataFusionError>(futures::stream::iter(
                materialized
                    .batches
                    .clone()
                    .into_iter()
                    .map(Ok::<_, DataFusionError>),
            ))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), rows)))
    }
}
