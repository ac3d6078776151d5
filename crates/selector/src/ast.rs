//! The compiled form of a selector.
//!
//! Trees are at most [`crate::SELECTOR_DEPTH_MAX`] deep (the parser enforces
//! it), so recursive evaluation, cloning and dropping are bounded. `AND` and
//! `OR` are n-ary so that long `a = 1 OR a = 2 OR ...` lists stay shallow.

use std::collections::HashSet;

use crate::like::LikePattern;
use crate::value::Value;

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// Prefix sign operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignOp {
    Plus,
    Minus,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One node of the compiled expression.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    /// A literal value (never a NULL).
    Literal(Value),
    /// The `NULL` literal.
    Null,
    /// A property or header reference.
    Property(String),
    /// `+x` / `-x`.
    Sign(SignOp, Box<Expr>),
    /// `x op y` for arithmetic.
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    /// `x op y` for comparisons.
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// `x IS [NOT] NULL`.
    IsNull { operand: Box<Expr>, negated: bool },
    /// `x [NOT] LIKE 'pattern' [ESCAPE 'c']`.
    Like {
        operand: Box<Expr>,
        pattern: LikePattern,
        negated: bool,
    },
    /// `x [NOT] IN ('a', 'b', ...)`.
    In {
        operand: Box<Expr>,
        set: HashSet<String>,
        negated: bool,
    },
    /// `x [NOT] BETWEEN low AND high`.
    Between {
        operand: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    /// `NOT x`.
    Not(Box<Expr>),
    /// `a AND b AND ...`, two or more operands.
    And(Vec<Expr>),
    /// `a OR b OR ...`, two or more operands.
    Or(Vec<Expr>),
}
