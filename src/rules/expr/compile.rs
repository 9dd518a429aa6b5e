//! Type checking: the untyped syntax tree to number and condition trees,
//! with the windows and fields they read.

use crate::model::KindMask;
use crate::state::{Field, WindowKey, WindowNeeds, WindowSlot};

use crate::refdata::Product;
use crate::rules::context::{RefField, Source};

use super::eval::{AggOp, CmpOp, Cond, Num, Rel, REL_LIT_LIMIT};
use super::functions;
use super::parser::{BinOp, Node, NodeKind};
use super::ratio::Ratio;
use super::ExprEnv;
use super::ExprError;

/// Every function, for error messages.
pub(super) const FUNCTIONS: [&str; 18] = [
    "max",
    "min",
    "sum",
    "count",
    "mean",
    "first",
    "vwap",
    "volume",
    "drawdown",
    "rally",
    "change",
    "range",
    "abs",
    "group_median",
    "group_mean",
    "group_min",
    "group_max",
    "group_wmean",
];

/// Where an expression is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExprScope {
    /// On one instrument's ticks: fields, windows, its reference prices.
    Instrument,
    /// On a group's members' ticks (a rule with `group`): members by
    /// product (`price(spot)`) and aggregates (`group_median(price)`).
    Group,
}

const FIELD_LIST: &str = "price, size, notional, bid, ask, mid, spread, mark, index";
const FUNCTION_LIST: &str = "max, min, sum, count, mean, first, vwap, volume, drawdown, rally, change, range, abs, group_median, group_mean, group_min, group_max, group_wmean, least, greatest, if, floor_to, ceil_to, round_to, param, since_listing, in_session, since_open, until_close, time_of_day";

/// What compiling an expression produced, before its windows are given
/// registry slots (the slots in `root` and `explain` are local indices
/// into `windows`).
pub(super) struct Compiled {
    pub root: Cond,
    pub windows: Vec<(WindowKey, WindowNeeds)>,
    pub triggers: KindMask,
    pub explain: Vec<(String, Num)>,
}

/// Resolves `step.field` in a pattern step's condition to the index of the
/// bound value, or says why it cannot be read.
pub type Binder<'b> = &'b mut dyn FnMut(&str, &str) -> Result<u8, String>;

pub(super) fn compile(
    root: &Node<'_>,
    scope: ExprScope,
    env: &ExprEnv,
    lets: &[(&str, Node<'_>)],
    binder: Option<Binder<'_>>,
) -> Result<Compiled, ExprError> {
    let mut c = Compiler {
        scope,
        env,
        lets,
        expanding: Vec::new(),
        durations_ok: false,
        binder,
        windows: Vec::new(),
        triggers: KindMask::NONE,
        explain: Vec::new(),
    };
    let named_condition = c.is_let_condition(root) || matches!(root.kind, NodeKind::Call { name: "in_session", .. });
    if !root.is_condition() && !named_condition {
        return Err(ExprError {
            column: root.col,
            message: format!(
                "the expression must be a condition, such as `price > 100` or `drawdown(price, 3s) >= 8%`, but it is {}",
                c.describe(root)
            ),
        });
    }
    let cond = c.cond(root, "")?;
    if c.triggers == KindMask::NONE {
        // About the whole condition: point at where it starts.
        return Err(ExprError {
            column: root.col,
            message: "the condition reads no market data: use at least one field (such as `price`) or window function (such as `max(price, 3s)`)".into(),
        });
    }
    Ok(Compiled {
        root: cond,
        windows: c.windows,
        triggers: c.triggers,
        explain: c.explain,
    })
}

/// Checks a `let` definition on its own, as a number or a condition, so
/// that its errors point into its own text.
pub(super) fn check_let(
    root: &Node<'_>,
    scope: ExprScope,
    env: &ExprEnv,
    lets: &[(&str, Node<'_>)],
) -> Result<(), ExprError> {
    let mut c = Compiler {
        scope,
        env,
        lets,
        expanding: Vec::new(),
        durations_ok: false,
        binder: None,
        windows: Vec::new(),
        triggers: KindMask::NONE,
        explain: Vec::new(),
    };
    if root.is_condition() || c.is_let_condition(root) {
        c.cond(root, "").map(|_| ())
    } else {
        c.num(root, "").map(|_| ())
    }
}

pub(super) struct Compiler<'s, 'b> {
    scope: ExprScope,
    pub(super) env: &'s ExprEnv,
    /// The rule's `let` definitions, parsed.
    lets: &'s [(&'s str, Node<'s>)],
    /// The `let` names being expanded (to refuse a definition that uses
    /// itself).
    expanding: Vec<&'s str>,
    /// Within a comparison with a clock (`since_open() < 15m`): durations
    /// are numbers of seconds.
    durations_ok: bool,
    /// Names of earlier pattern steps (`a.price`), when compiling a step.
    binder: Option<Binder<'b>>,
    windows: Vec<(WindowKey, WindowNeeds)>,
    triggers: KindMask,
    explain: Vec<(String, Num)>,
}

fn err(column: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        column,
        message: message.into(),
    }
}

/// Whether a constant fits [`Cond::RelLit`].
fn small(v: Ratio) -> bool {
    let (num, den) = v.reduced().parts();
    num.abs() < REL_LIT_LIMIT && den < REL_LIT_LIMIT
}

fn is_zero(n: &Num) -> bool {
    matches!(n, Num::Lit(v) if v.compare(Ratio::ZERO).is_eq())
}

impl<'s> Compiler<'s, '_> {
    /// Source text of a node, whitespace runs collapsed to one space.
    fn text(&self, node: &Node<'_>) -> String {
        node.src[node.start..node.end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The node's text for a message, shortened when long.
    fn quoted(&self, node: &Node<'_>) -> String {
        let text = self.text(node);
        if text.chars().count() > 40 {
            let short: String = text.chars().take(37).collect();
            format!("`{short}...`")
        } else {
            format!("`{text}`")
        }
    }

    /// What a node is, for "expected X, found Y" messages.
    fn describe(&self, node: &Node<'_>) -> String {
        let q = self.quoted(node);
        match &node.kind {
            NodeKind::Number(_) => format!("the number {q}"),
            NodeKind::Fraction(_) => format!("the fraction {q}"),
            NodeKind::Duration(_) => format!("the duration {q}"),
            NodeKind::Ident(name) if Field::from_name(name).is_some() => format!("the field {q}"),
            NodeKind::Ident(_) => q,
            _ if node.is_condition() => format!("the condition {q}"),
            _ => format!("{q}, a number"),
        }
    }

    fn read_field(&mut self, field: Field) {
        self.triggers = self.triggers.union(KindMask::of(field.tick_kind()));
    }

    /// A local slot for a window (shared with an identical earlier one).
    fn window(&mut self, field: Field, span_ns: i64, needs: WindowNeeds) -> WindowSlot {
        self.read_field(field);
        let key = WindowKey { field, span_ns };
        if let Some(i) = self.windows.iter().position(|(k, _)| *k == key) {
            self.windows[i].1 = self.windows[i].1.union(needs);
            return WindowSlot(i as u16);
        }
        self.windows.push((key, needs));
        WindowSlot((self.windows.len() - 1) as u16)
    }

    /// The `let` definition `node` names, if it is one.
    fn let_of(&self, node: &Node<'_>) -> Option<(&'s str, &'s Node<'s>)> {
        let NodeKind::Ident(name) = node.kind else { return None };
        self.lets.iter().find(|(n, _)| *n == name).map(|(n, tree)| (*n, tree))
    }

    /// Whether `node` names a `let` whose value is a condition.
    pub(super) fn is_let_condition(&self, node: &Node<'_>) -> bool {
        let mut seen = 0;
        let mut at = self.let_of(node);
        while let Some((_, tree)) = at {
            if tree.is_condition() {
                return true;
            }
            seen += 1;
            if seen > self.lets.len() {
                return false;
            }
            at = self.let_of(tree);
        }
        false
    }

    /// Compiles a `let` definition where its name is used.
    fn expand<T>(
        &mut self,
        node: &Node<'_>,
        name: &'s str,
        tree: &'s Node<'s>,
        f: impl FnOnce(&mut Self, &'s Node<'s>) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        if let Some(from) = self.expanding.iter().position(|n| *n == name) {
            let mut cycle: Vec<&str> = self.expanding[from..].to_vec();
            cycle.push(name);
            return Err(err(
                node.col,
                format!(
                    "`let` definitions refer to each other in a cycle: {}",
                    cycle.join(" -> ")
                ),
            ));
        }
        if self.expanding.len() >= 8 {
            return Err(err(
                node.col,
                "`let` definitions are nested too deeply (at most 8 levels)",
            ));
        }
        self.expanding.push(name);
        let out = f(self, tree);
        self.expanding.pop();
        out
    }

    pub(super) fn cond(&mut self, node: &Node<'_>, place: &str) -> Result<Cond, ExprError> {
        if let Some((name, tree)) = self.let_of(node) {
            if self.is_let_condition(node) {
                return self.expand(node, name, tree, |c, t| c.cond(t, place));
            }
        }
        if let NodeKind::Call { name, args } = &node.kind {
            if let Some(c) = self.ext_cond(node, name, args)? {
                return Ok(c);
            }
        }
        match &node.kind {
            NodeKind::Not(inner) => Ok(Cond::Not(Box::new(self.cond(inner, "after `not`")?))),
            NodeKind::Binary { op, lhs, rhs, .. } if op.is_logical() => {
                let l = self.cond(lhs, &format!("on the left of `{}`", op.symbol()))?;
                let r = self.cond(rhs, &format!("on the right of `{}`", op.symbol()))?;
                let pair = Box::new((l, r));
                Ok(if *op == BinOp::And {
                    Cond::And(pair)
                } else {
                    Cond::Or(pair)
                })
            }
            NodeKind::Binary { op, lhs, rhs, .. } if op.is_comparison() => {
                let outer = self.durations_ok;
                self.durations_ok = functions::mentions_clock(lhs) || functions::mentions_clock(rhs);
                let sides = self
                    .num(lhs, &format!("on the left of `{}`", op.symbol()))
                    .and_then(|l| Ok((l, self.num(rhs, &format!("on the right of `{}`", op.symbol()))?)));
                self.durations_ok = outer;
                let (l, r) = sides?;
                self.explain_side(lhs, &l);
                self.explain_side(rhs, &r);
                let cmp = match op {
                    BinOp::Lt => CmpOp::Lt,
                    BinOp::Le => CmpOp::Le,
                    BinOp::Gt => CmpOp::Gt,
                    BinOp::Ge => CmpOp::Ge,
                    BinOp::Eq => CmpOp::Eq,
                    _ => CmpOp::Ne,
                };
                Ok(match (l, r) {
                    (Num::Rel(rel, field, slot), Num::Lit(v)) if small(v) => {
                        let (num, den) = v.reduced().parts();
                        Cond::RelLit {
                            op: cmp,
                            rel,
                            field,
                            slot,
                            num,
                            den,
                        }
                    }
                    (Num::Lit(v), Num::Rel(rel, field, slot)) if small(v) => {
                        let (num, den) = v.reduced().parts();
                        Cond::RelLit {
                            op: cmp.flip(),
                            rel,
                            field,
                            slot,
                            num,
                            den,
                        }
                    }
                    (l, Num::Lit(v)) => Cond::CmpLit(cmp, Box::new(l), v),
                    (Num::Lit(v), r) => Cond::CmpLit(cmp.flip(), Box::new(r), v),
                    (l, r) => Cond::Cmp(cmp, Box::new((l, r))),
                })
            }
            _ => Err(err(
                node.col,
                format!(
                    "expected a condition {place}, found {}: compare it with something, as in `price > 100`",
                    self.describe(node)
                ),
            )),
        }
    }

    fn explain_side(&mut self, node: &Node<'_>, value: &Num) {
        let name = self.text(node);
        if !self.explain.iter().any(|(n, _)| *n == name) {
            self.explain.push((name, value.clone()));
        }
    }

    pub(super) fn num(&mut self, node: &Node<'_>, place: &str) -> Result<Num, ExprError> {
        if let Some((name, tree)) = self.let_of(node) {
            if self.is_let_condition(node) {
                return Err(err(
                    node.col,
                    format!("expected a number {place}, found `{name}`, a condition (see `let`): use it with `and`, `or`, `not` or `if`"),
                ));
            }
            let value = self.expand(node, name, tree, |c, t| c.num(t, place))?;
            // Alerts report each named value the expression used.
            if !self.explain.iter().any(|(n, _)| n == name) {
                self.explain.push((name.to_string(), value.clone()));
            }
            return Ok(value);
        }
        match &node.kind {
            NodeKind::Number(v) | NodeKind::Fraction(v) => Ok(Num::Lit(*v)),
            NodeKind::Duration(ns) if self.durations_ok => Ratio::new(i128::from(*ns), 1_000_000_000)
                .map(|v| Num::Lit(v.reduced()))
                .ok_or_else(|| err(node.col, "this duration is too long")),
            NodeKind::Duration(_) => Err(err(
                node.col,
                format!(
                    "expected a number {place}, found the duration {}: durations can only be window arguments, as in `max(price, 3s)`",
                    self.quoted(node)
                ),
            )),
            NodeKind::Ident(name) if self.scope == ExprScope::Group && (Field::from_name(name).is_some() || RefField::from_name(name).is_some()) => Err(err(
                node.col,
                format!(
                    "a group rule reads its members: name the member whose `{name}` is meant, as in `{name}(spot)`, or aggregate them, as in `group_median({name})`"
                ),
            )),
            NodeKind::Ident(name) if name.contains('.') => {
                let (step, field) = name.split_once('.').unwrap_or((name, ""));
                match self.binder.as_mut() {
                    Some(bind) => bind(step, field).map(Num::Bound).map_err(|m| err(node.col, m)),
                    None => Err(err(
                        node.col,
                        format!("`{name}` reads a step of a pattern (`step.field`): only a pattern's steps have names"),
                    )),
                }
            }
            NodeKind::Ident(name) if RefField::from_name(name).is_some() => {
                Ok(Num::Reference(RefField::from_name(name).unwrap_or(RefField::PriorClose)))
            }
            NodeKind::Ident(name) => match Field::from_name(name) {
                Some(field) => {
                    self.read_field(field);
                    Ok(Num::Last(field))
                }
                None if FUNCTIONS.contains(name) => Err(err(
                    node.col,
                    format!("`{name}` is a function: call it with its arguments, as in `{}`", example(name)),
                )),
                None => Err(unknown_field(node.col, name)),
            },
            NodeKind::Call { name, args } => self.call(node, name, args),
            NodeKind::Neg(inner) => {
                let x = self.num(inner, "after `-`")?;
                match x {
                    Num::Lit(v) => v
                        .neg()
                        .map(Num::Lit)
                        .ok_or_else(|| err(node.col, "this number is too large")),
                    x => Ok(Num::Neg(Box::new(x))),
                }
            }
            NodeKind::Binary { op, op_col, lhs, rhs } if !node.is_condition() => {
                let l = self.num(lhs, &format!("on the left of `{}`", op.symbol()))?;
                let r = self.num(rhs, &format!("on the right of `{}`", op.symbol()))?;
                if *op == BinOp::Div && is_zero(&r) {
                    return Err(err(*op_col, "division by zero"));
                }
                if let (Num::Lit(a), Num::Lit(b)) = (&l, &r) {
                    let folded = match op {
                        BinOp::Add => a.add(*b),
                        BinOp::Sub => a.sub(*b),
                        BinOp::Mul => a.mul(*b),
                        _ => a.div(*b),
                    };
                    return folded
                        .map(|v| Num::Lit(v.reduced()))
                        .ok_or_else(|| err(*op_col, "this constant is too large to compute exactly"));
                }
                // A constant factor of a per-period mean joins its factor:
                // `5 * mean(volume(1s), 5m)` is one multiplication.
                let scaled = match (op, &l, &r) {
                    (BinOp::Mul, Num::Lit(k), Num::PeriodMean { slot, per })
                    | (BinOp::Mul, Num::PeriodMean { slot, per }, Num::Lit(k)) => {
                        per.mul(*k).map(|per| (*slot, per))
                    }
                    (BinOp::Div, Num::PeriodMean { slot, per }, Num::Lit(k)) => per.div(*k).map(|per| (*slot, per)),
                    _ => None,
                };
                if let Some((slot, per)) = scaled {
                    return Ok(Num::PeriodMean { slot, per: per.reduced() });
                }
                let pair = Box::new((l, r));
                Ok(match op {
                    BinOp::Add => Num::Add(pair),
                    BinOp::Sub => Num::Sub(pair),
                    BinOp::Mul => Num::Mul(pair),
                    _ => Num::Div(pair),
                })
            }
            _ => Err(err(
                node.col,
                format!(
                    "expected a number {place}, found {}: conditions can only be combined with `and`, `or` and `not`",
                    self.describe(node)
                ),
            )),
        }
    }

    fn arity(&self, node: &Node<'_>, name: &str, args: &[Node<'_>], want: usize) -> Result<(), ExprError> {
        if args.len() == want {
            return Ok(());
        }
        let what = match want {
            1 if name == "abs" => "1 argument (a number)",
            1 => "1 argument (a window)",
            _ => "2 arguments (a field and a window)",
        };
        Err(err(
            node.col,
            format!(
                "`{name}` takes {what}, as in `{}`, but was given {}",
                example(name),
                args.len()
            ),
        ))
    }

    /// The first argument of a window function: a field name.
    fn field_arg(&self, node: &Node<'_>, function: &str) -> Result<Field, ExprError> {
        if let NodeKind::Ident(name) = node.kind {
            return Field::from_name(name).ok_or_else(|| unknown_field(node.col, name));
        }
        Err(err(
            node.col,
            format!(
                "the first argument of `{function}` must be a field name ({FIELD_LIST}), found {}",
                self.describe(node)
            ),
        ))
    }

    /// A window argument: a positive duration literal, in nanoseconds.
    fn window_arg(&self, node: &Node<'_>, function: &str) -> Result<i64, ExprError> {
        let expected = format!("expected a duration such as `3s` as the window of `{function}`");
        match &node.kind {
            NodeKind::Duration(ns) if *ns > 0 => Ok(*ns),
            NodeKind::Duration(_) => Err(err(
                node.col,
                format!("the window of `{function}` must be longer than zero"),
            )),
            NodeKind::Neg(inner) if matches!(inner.kind, NodeKind::Duration(_)) => Err(err(
                node.col,
                format!("the window of `{function}` must be a positive duration"),
            )),
            NodeKind::Number(_) => Err(err(
                node.col,
                format!(
                    "{expected}, found the number {}: a duration needs a unit (ns, us, ms, s, m, h or d)",
                    self.quoted(node)
                ),
            )),
            NodeKind::Binary { .. } | NodeKind::Neg(_) if !node.is_condition() && contains_duration(node) => Err(err(
                node.col,
                format!(
                    "{expected}, found {}: arithmetic on durations is not supported",
                    self.quoted(node)
                ),
            )),
            _ => Err(err(node.col, format!("{expected}, found {}", self.describe(node)))),
        }
    }

    /// A value of a member or for an aggregate: a field or a reference
    /// price name.
    fn source_arg(&mut self, node: &Node<'_>, function: &str) -> Result<Source, ExprError> {
        if let NodeKind::Ident(name) = node.kind {
            if let Some(field) = Field::from_name(name) {
                self.read_field(field);
                return Ok(Source::Market(field));
            }
            if let Some(field) = RefField::from_name(name) {
                return Ok(Source::Reference(field));
            }
            return Err(unknown_field(node.col, name));
        }
        Err(err(
            node.col,
            format!(
                "the first argument of `{function}` must be a field name ({FIELD_LIST}) or a reference price (prior_close, settlement, tick_size), found {}",
                self.describe(node)
            ),
        ))
    }

    /// A product name: the member of a group, or a filter of an aggregate.
    fn product_arg(&self, node: &Node<'_>, function: &str) -> Result<Product, ExprError> {
        if let NodeKind::Ident(name) = node.kind {
            if let Some(product) = Product::from_name(name) {
                return Ok(product);
            }
        }
        Err(err(
            node.col,
            format!(
                "expected a product ({}) in `{function}`, found {}",
                Product::NAMES,
                self.describe(node)
            ),
        ))
    }

    /// The error for something only a group rule can read.
    fn group_only(&self, node: &Node<'_>) -> ExprError {
        err(
            node.col,
            format!(
                "{} reads the members of a group: give the rule `group = \"underlying\"` (or `\"group:NAME\"`)",
                self.quoted(node)
            ),
        )
    }

    /// `price(spot)` and aggregates such as `group_median(price, spot)`.
    fn group_call(&mut self, node: &Node<'_>, name: &str, args: &[Node<'_>]) -> Result<Option<Num>, ExprError> {
        if let Some(op) = AggOp::from_name(name) {
            if self.scope != ExprScope::Group {
                return Err(self.group_only(node));
            }
            if args.is_empty() || args.len() > 2 {
                return Err(err(
                    node.col,
                    format!(
                        "`{name}` takes a field and, optionally, a product, as in `{name}(price)` or `{name}(price, spot)`, but was given {}",
                        args.len()
                    ),
                ));
            }
            let source = self.source_arg(&args[0], name)?;
            let product = args.get(1).map(|p| self.product_arg(p, name)).transpose()?;
            return Ok(Some(Num::Aggregate { op, source, product }));
        }
        let is_value = Field::from_name(name).is_some() || RefField::from_name(name).is_some();
        if is_value && args.len() == 1 && matches!(args[0].kind, NodeKind::Ident(a) if Product::from_name(a).is_some())
        {
            if self.scope != ExprScope::Group {
                return Err(self.group_only(node));
            }
            let product = self.product_arg(&args[0], name)?;
            let source = match Field::from_name(name) {
                Some(field) => {
                    self.read_field(field);
                    Source::Market(field)
                }
                None => Source::Reference(RefField::from_name(name).unwrap_or(RefField::PriorClose)),
            };
            return Ok(Some(Num::Member(source, product)));
        }
        Ok(None)
    }

    fn call(&mut self, node: &Node<'_>, name: &str, args: &[Node<'_>]) -> Result<Num, ExprError> {
        if let Some(num) = self.group_call(node, name, args)? {
            return Ok(num);
        }
        if let Some(num) = self.ext_num(node, name, args)? {
            return Ok(num);
        }
        if self.scope == ExprScope::Group && name != "abs" {
            return Err(err(
                node.col,
                format!(
                    "`{name}(...)` reads one instrument's windows, which a group rule does not keep: use members' newest values, as in `price(spot)`, and aggregates, as in `group_median(price)`"
                ),
            ));
        }
        let plain = |c: &mut Self, needs: WindowNeeds| -> Result<(Field, WindowSlot), ExprError> {
            c.arity(node, name, args, 2)?;
            let field = c.field_arg(&args[0], name)?;
            let span = c.window_arg(&args[1], name)?;
            Ok((field, c.window(field, span, needs)))
        };
        let both = WindowNeeds::MAX.union(WindowNeeds::MIN);
        let whole_window = ["sum", "count", "first", "mean", "change", "vwap", "volume"];
        if self.env.lookback_resume && whole_window.contains(&name) {
            return Err(err(
                node.col,
                format!(
                    "`{name}(...)` cannot restart its window after a resume: with `lookback = \"resume\"` the rule's window functions are those of a window's high and low (max, min, drawdown, rally, range)"
                ),
            ));
        }
        Ok(match name {
            "max" => Num::Max(plain(self, WindowNeeds::MAX)?.1),
            "min" => Num::Min(plain(self, WindowNeeds::MIN)?.1),
            "sum" => Num::Sum(plain(self, WindowNeeds::SLOTS)?.1),
            "count" => Num::Count(plain(self, WindowNeeds::SLOTS)?.1),
            "first" => Num::First(plain(self, WindowNeeds::SLOTS)?.1),
            "mean" => {
                self.arity(node, name, args, 2)?;
                if let NodeKind::Call { name: inner, args: inner_args } = &args[0].kind {
                    return self.period_mean(&args[0], inner, inner_args, &args[1]);
                }
                Num::Mean(plain(self, WindowNeeds::SLOTS)?.1)
            }
            "drawdown" => {
                let (f, slot) = plain(self, WindowNeeds::MAX)?;
                Num::Rel(Rel::Drawdown, f, slot)
            }
            "rally" => {
                let (f, slot) = plain(self, WindowNeeds::MIN)?;
                Num::Rel(Rel::Rally, f, slot)
            }
            "change" => {
                let (f, slot) = plain(self, WindowNeeds::SLOTS)?;
                Num::Rel(Rel::Change, f, slot)
            }
            "range" => {
                let (f, slot) = plain(self, both)?;
                Num::Rel(Rel::Range, f, slot)
            }
            "vwap" | "volume" => {
                self.arity(node, name, args, 1)?;
                let span = self.window_arg(&args[0], name)?;
                if name == "vwap" {
                    Num::Vwap(self.window(Field::Price, span, WindowNeeds::SLOTS))
                } else {
                    Num::Sum(self.window(Field::Size, span, WindowNeeds::SLOTS))
                }
            }
            "abs" => {
                self.arity(node, name, args, 1)?;
                match self.num(&args[0], "as the argument of `abs`")? {
                    Num::Lit(v) => Num::Lit(v.abs().ok_or_else(|| err(node.col, "this number is too large"))?),
                    x => Num::Abs(Box::new(x)),
                }
            }
            _ if Field::from_name(name).is_some() => {
                return Err(err(
                    node.col,
                    format!(
                        "`{name}` is a field, not a function: write `{name}` alone for its newest value, or use a window function such as `max({name}, 3s)`"
                    ),
                ))
            }
            _ => return Err(unknown_function(node.col, name)),
        })
    }

    /// `mean(sum(f, W), L)` or `mean(volume(W), L)`: `sum(f, L) × W / L`.
    fn period_mean(
        &mut self,
        inner_node: &Node<'_>,
        inner: &str,
        inner_args: &[Node<'_>],
        span_node: &Node<'_>,
    ) -> Result<Num, ExprError> {
        let (field, period) = match inner {
            "sum" => {
                self.arity(inner_node, inner, inner_args, 2)?;
                (self.field_arg(&inner_args[0], inner)?, self.window_arg(&inner_args[1], inner)?)
            }
            "volume" => {
                self.arity(inner_node, inner, inner_args, 1)?;
                (Field::Size, self.window_arg(&inner_args[0], inner)?)
            }
            _ if !FUNCTIONS.contains(&inner) && Field::from_name(inner).is_none() => {
                return Err(unknown_function(inner_node.col, inner))
            }
            _ => {
                return Err(err(
                    inner_node.col,
                    format!(
                        "`mean` cannot take `{inner}(...)`: its first argument is a field, as in `mean(price, 5m)`, or a per-period sum, as in `mean(sum(size, 1s), 5m)` or `mean(volume(1s), 5m)`"
                    ),
                ))
            }
        };
        let span = self.window_arg(span_node, "mean")?;
        if period > span {
            return Err(err(
                inner_node.col,
                format!(
                    "the period of `{inner}` ({}) is longer than the window of `mean` ({})",
                    crate::rules::units::format_duration(period),
                    crate::rules::units::format_duration(span)
                ),
            ));
        }
        let per = Ratio::new(i128::from(period), i128::from(span))
            .map(Ratio::reduced)
            .ok_or_else(|| err(span_node.col, "the window of `mean` must be longer than zero"))?;
        Ok(Num::PeriodMean {
            slot: self.window(field, span, WindowNeeds::SLOTS),
            per,
        })
    }
}

fn contains_duration(node: &Node<'_>) -> bool {
    match &node.kind {
        NodeKind::Duration(_) => true,
        NodeKind::Neg(inner) => contains_duration(inner),
        NodeKind::Binary { lhs, rhs, .. } => contains_duration(lhs) || contains_duration(rhs),
        _ => false,
    }
}

fn example(name: &str) -> &'static str {
    match name {
        "max" => "max(price, 3s)",
        "min" => "min(price, 3s)",
        "sum" => "sum(size, 1s)",
        "count" => "count(price, 1s)",
        "mean" => "mean(price, 5m)",
        "first" => "first(price, 1m)",
        "vwap" => "vwap(1m)",
        "volume" => "volume(1s)",
        "drawdown" => "drawdown(price, 3s)",
        "rally" => "rally(price, 3s)",
        "change" => "change(price, 1m)",
        "range" => "range(price, 1m)",
        _ => "abs(change(price, 1m))",
    }
}

fn lowercase_hint(name: &str) -> &'static str {
    let lower = name.to_lowercase();
    if lower != name
        && (Field::from_name(&lower).is_some()
            || FUNCTIONS.contains(&lower.as_str())
            || ["and", "or", "not"].contains(&lower.as_str()))
    {
        "; names are lowercase"
    } else {
        ""
    }
}

fn unknown_field(column: usize, name: &str) -> ExprError {
    err(
        column,
        format!("unknown field `{name}` (known: {FIELD_LIST}){}", lowercase_hint(name)),
    )
}

fn unknown_function(column: usize, name: &str) -> ExprError {
    err(
        column,
        format!(
            "unknown function `{name}` (known: {FUNCTION_LIST}){}",
            lowercase_hint(name)
        ),
    )
}
