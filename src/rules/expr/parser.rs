//! Recursive-descent parser: tokens to an untyped syntax tree.
//!
//! Precedence, loosest first: `or`, `and`, `not`, comparison (not
//! chaining), `+ -`, `* /`, unary `-`.

use super::lexer::{Tok, Token};
use super::ratio::Ratio;
use super::{ExprError, MAX_DEPTH, MAX_NODES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub(super) fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }

    pub(super) fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }

    pub(super) fn is_logical(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or)
    }

    fn comparison(tok: Tok) -> Option<BinOp> {
        Some(match tok {
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::EqEq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub(super) enum NodeKind<'a> {
    Number(Ratio),
    Fraction(Ratio),
    Duration(i64),
    Ident(&'a str),
    Call {
        name: &'a str,
        args: Vec<Node<'a>>,
    },
    Neg(Box<Node<'a>>),
    Not(Box<Node<'a>>),
    Binary {
        op: BinOp,
        op_col: usize,
        lhs: Box<Node<'a>>,
        rhs: Box<Node<'a>>,
    },
}

#[derive(Debug)]
pub(super) struct Node<'a> {
    pub kind: NodeKind<'a>,
    /// 1-based column of the node's first character (its `(` if it was
    /// written in parentheses).
    pub col: usize,
    /// Byte range of the node's source text, parentheses included.
    pub start: usize,
    pub end: usize,
    /// Levels of nodes from here down (a leaf is 1).
    pub depth: usize,
    /// The text the node was parsed from (the rule's `when`, or one of
    /// its `let` definitions).
    pub src: &'a str,
}

impl Node<'_> {
    /// Whether the node is a condition (comparison, `and`, `or`, `not`).
    pub(super) fn is_condition(&self) -> bool {
        match &self.kind {
            NodeKind::Not(_) => true,
            NodeKind::Binary { op, .. } => op.is_comparison() || op.is_logical(),
            _ => false,
        }
    }
}

pub(super) fn parse<'a>(src: &'a str, tokens: &[Token]) -> Result<Node<'a>, ExprError> {
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        nodes: 0,
        nesting: 0,
    };
    let root = parser.or()?;
    let t = parser.peek();
    if t.tok != Tok::End {
        let message = if t.tok == Tok::RParen {
            "unmatched `)`".to_string()
        } else {
            format!(
                "expected an operator or the end of the expression, found `{}`",
                parser.text(t)
            )
        };
        return Err(ExprError { column: t.col, message });
    }
    Ok(root)
}

struct Parser<'a, 't> {
    src: &'a str,
    tokens: &'t [Token],
    pos: usize,
    nodes: usize,
    nesting: usize,
}

impl<'a> Parser<'a, '_> {
    fn peek(&self) -> Token {
        self.tokens[self.pos]
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens[self.pos];
        if t.tok != Tok::End {
            self.pos += 1;
        }
        t
    }

    fn text(&self, t: Token) -> &'a str {
        &self.src[t.start..t.end]
    }

    fn node(
        &mut self,
        kind: NodeKind<'a>,
        col: usize,
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<Node<'a>, ExprError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ExprError {
                column: col,
                message: format!("the expression is too long (at most {MAX_NODES} values, operators and calls)"),
            });
        }
        if depth > MAX_DEPTH {
            return Err(too_deep(col));
        }
        Ok(Node {
            kind,
            col,
            start,
            end,
            depth,
            src: self.src,
        })
    }

    fn enter(&mut self, col: usize) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(too_deep(col));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn binary(&mut self, op: BinOp, op_col: usize, lhs: Node<'a>, rhs: Node<'a>) -> Result<Node<'a>, ExprError> {
        let (col, start, end) = (lhs.col, lhs.start, rhs.end);
        let depth = 1 + lhs.depth.max(rhs.depth);
        self.node(
            NodeKind::Binary {
                op,
                op_col,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            col,
            start,
            end,
            depth,
        )
    }

    fn or(&mut self) -> Result<Node<'a>, ExprError> {
        let mut lhs = self.and()?;
        while self.peek().tok == Tok::Or {
            let op = self.bump();
            let rhs = self.and()?;
            lhs = self.binary(BinOp::Or, op.col, lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<Node<'a>, ExprError> {
        let mut lhs = self.not()?;
        while self.peek().tok == Tok::And {
            let op = self.bump();
            let rhs = self.not()?;
            lhs = self.binary(BinOp::And, op.col, lhs, rhs)?;
        }
        Ok(lhs)
    }

    fn not(&mut self) -> Result<Node<'a>, ExprError> {
        if self.peek().tok != Tok::Not {
            return self.comparison();
        }
        let op = self.bump();
        self.enter(op.col)?;
        let inner = self.not()?;
        self.leave();
        let (end, depth) = (inner.end, inner.depth + 1);
        self.node(NodeKind::Not(Box::new(inner)), op.col, op.start, end, depth)
    }

    fn comparison(&mut self) -> Result<Node<'a>, ExprError> {
        let lhs = self.additive()?;
        let Some(op) = BinOp::comparison(self.peek().tok) else {
            return Ok(lhs);
        };
        let op_tok = self.bump();
        let rhs = self.additive()?;
        let t = self.peek();
        if BinOp::comparison(t.tok).is_some() {
            return Err(ExprError {
                column: t.col,
                message: format!(
                    "comparisons do not chain: write `a < b and b < c` instead of `a < b < c` (found a second `{}`)",
                    self.text(t)
                ),
            });
        }
        self.binary(op, op_tok.col, lhs, rhs)
    }

    fn additive(&mut self) -> Result<Node<'a>, ExprError> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek().tok {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(lhs),
            };
            let op_tok = self.bump();
            let rhs = self.multiplicative()?;
            lhs = self.binary(op, op_tok.col, lhs, rhs)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node<'a>, ExprError> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek().tok {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                _ => return Ok(lhs),
            };
            let op_tok = self.bump();
            let rhs = self.unary()?;
            lhs = self.binary(op, op_tok.col, lhs, rhs)?;
        }
    }

    fn unary(&mut self) -> Result<Node<'a>, ExprError> {
        if self.peek().tok != Tok::Minus {
            return self.primary();
        }
        let op = self.bump();
        self.enter(op.col)?;
        let inner = self.unary()?;
        self.leave();
        let (end, depth) = (inner.end, inner.depth + 1);
        self.node(NodeKind::Neg(Box::new(inner)), op.col, op.start, end, depth)
    }

    fn primary(&mut self) -> Result<Node<'a>, ExprError> {
        let t = self.bump();
        let leaf = |kind| (kind, t.col, t.start, t.end, 1);
        let (kind, col, start, end, depth) = match t.tok {
            Tok::Number(v) => leaf(NodeKind::Number(v)),
            Tok::Fraction(v) => leaf(NodeKind::Fraction(v)),
            Tok::Duration(ns) => leaf(NodeKind::Duration(ns)),
            Tok::Ident if self.peek().tok == Tok::LParen => return self.call(t),
            Tok::Ident => leaf(NodeKind::Ident(self.text(t))),
            Tok::LParen => {
                self.enter(t.col)?;
                let mut inner = self.or()?;
                self.leave();
                let close = self.bump();
                if close.tok != Tok::RParen {
                    return Err(self.expected_close(t, close));
                }
                inner.col = t.col;
                inner.start = t.start;
                inner.end = close.end;
                return Ok(inner);
            }
            _ => {
                let found = match t.tok {
                    Tok::End => "the end of the expression".to_string(),
                    _ => format!("`{}`", self.text(t)),
                };
                return Err(ExprError {
                    column: t.col,
                    message: format!("expected a number, a field, a function call or `(`, found {found}"),
                });
            }
        };
        self.node(kind, col, start, end, depth)
    }

    fn call(&mut self, name: Token) -> Result<Node<'a>, ExprError> {
        let open = self.bump();
        self.enter(open.col)?;
        let mut args = Vec::new();
        let close = if self.peek().tok == Tok::RParen {
            self.bump()
        } else {
            loop {
                args.push(self.or()?);
                let t = self.bump();
                match t.tok {
                    Tok::Comma => continue,
                    Tok::RParen => break t,
                    _ => {
                        let found = match t.tok {
                            Tok::End => "the end of the expression".to_string(),
                            _ => format!("`{}`", self.text(t)),
                        };
                        return Err(ExprError {
                            column: t.col,
                            message: format!(
                                "expected `,` or `)` after an argument of `{}`, found {found}",
                                self.text(name)
                            ),
                        });
                    }
                }
            }
        };
        self.leave();
        let depth = 1 + args.iter().map(|a| a.depth).max().unwrap_or(0);
        let kind = NodeKind::Call {
            name: self.text(name),
            args,
        };
        self.node(kind, name.col, name.start, close.end, depth)
    }

    fn expected_close(&self, open: Token, found: Token) -> ExprError {
        let found_text = match found.tok {
            Tok::End => "the end of the expression".to_string(),
            _ => format!("`{}`", self.text(found)),
        };
        ExprError {
            column: found.col,
            message: format!(
                "expected `)` to close the `(` at column {}, found {found_text}",
                open.col
            ),
        }
    }
}

fn too_deep(col: usize) -> ExprError {
    ExprError {
        column: col,
        message: format!("the expression is nested too deeply (at most {MAX_DEPTH} levels)"),
    }
}
