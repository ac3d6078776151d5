//! Precedence-climbing parser from tokens to [`Expr`].
//!
//! Precedence, loosest first (as ActiveMQ's grammar, except that `NOT` sits
//! between `AND` and the comparisons as in SQL and the JMS spec, where
//! ActiveMQ binds it as tightly as unary minus):
//!
//! | level | operators                                            |
//! |-------|------------------------------------------------------|
//! | 1     | `OR`                                                 |
//! | 2     | `AND`                                                |
//! | 3     | prefix `NOT`                                         |
//! | 4     | `=` `<>` `IS [NOT] NULL`                             |
//! | 5     | `<` `<=` `>` `>=` `[NOT] LIKE/BETWEEN/IN`            |
//! | 6     | `+` `-`                                              |
//! | 7     | `*` `/` `%`                                          |
//! | 8     | prefix `+` `-`                                       |
//!
//! Every recursion into a parenthesis or a prefix operator counts against
//! [`SELECTOR_DEPTH_MAX`], and so does every level of the resulting tree, so
//! hostile input fails with [`SelectorError::TooDeep`] long before the stack
//! is at risk.

use std::collections::HashSet;

use crate::ast::{ArithOp, CmpOp, Expr, SignOp};
use crate::error::SelectorError;
use crate::lexer::{char_index, syntax_error, Token, TokenKind, I64_MIN_MAGNITUDE};
use crate::like::LikePattern;
use crate::value::Value;
use crate::SELECTOR_DEPTH_MAX;

const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_NOT: u8 = 3;
const PREC_EQUALITY: u8 = 4;
const PREC_COMPARISON: u8 = 5;
const PREC_ADDITIVE: u8 = 6;
const PREC_MULTIPLICATIVE: u8 = 7;

/// What the parser knows statically about an expression's type, used to
/// reject selectors such as `a + 1` (not a condition) or `TRUE < 3` at parse
/// time, as ActiveMQ does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Always boolean: comparisons, logic, `TRUE`/`FALSE`.
    Boolean,
    /// Never boolean: arithmetic, numeric and string literals.
    Scalar,
    /// The `NULL` literal.
    Null,
    /// Only known per message: identifiers.
    Dynamic,
}

/// A parsed subexpression with the facts the parser checks.
struct Parsed {
    expr: Expr,
    kind: Kind,
    /// Height of `expr` as a tree (a leaf is 1).
    height: usize,
    /// Byte offset where the subexpression starts, for error messages.
    start_byte: usize,
}

/// Parses a token stream (ending in `End`) into an expression, or `None` for
/// an empty selector.
pub(crate) fn parse(text: &str, tokens: &[Token]) -> Result<Option<Expr>, SelectorError> {
    let mut parser = Parser {
        text,
        tokens,
        next: 0,
    };
    if parser.peek().kind == TokenKind::End {
        return Ok(None);
    }
    let parsed = parser.expression(PREC_OR, 0)?;
    let token = parser.peek();
    if token.kind != TokenKind::End {
        return Err(parser.error_at(
            token.start_byte,
            format!(
                "expected an operator or end of selector, found {}",
                token.kind.describe()
            ),
        ));
    }
    parser.require_condition(&parsed, "a selector")?;
    Ok(Some(parsed.expr))
}

struct Parser<'a> {
    text: &'a str,
    tokens: &'a [Token],
    /// Index of the next unconsumed token; never past the `End` token.
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &'a Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.next.min(last)]
    }

    fn peek_second(&self) -> &'a TokenKind {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[(self.next + 1).min(last)].kind
    }

    fn advance(&mut self) -> &'a Token {
        let token = self.peek();
        if token.kind != TokenKind::End {
            self.next += 1;
        }
        token
    }

    fn error_at(&self, at_byte: usize, message: String) -> SelectorError {
        syntax_error(self.text, at_byte, message)
    }

    fn too_deep(&self, at_byte: usize) -> SelectorError {
        SelectorError::TooDeep {
            position: char_index(self.text, at_byte),
            depth_max: SELECTOR_DEPTH_MAX,
        }
    }

    fn expect(&mut self, kind: &TokenKind, what: &str) -> Result<&'a Token, SelectorError> {
        let token = self.peek();
        if &token.kind == kind {
            Ok(self.advance())
        } else {
            Err(self.error_at(
                token.start_byte,
                format!("expected {what}, found {}", token.kind.describe()),
            ))
        }
    }

    /// Wraps a new node over children of the given heights, enforcing the
    /// tree-height limit that keeps evaluation recursion bounded.
    fn node(
        &self,
        expr: Expr,
        kind: Kind,
        child_height: usize,
        start_byte: usize,
        at_byte: usize,
    ) -> Result<Parsed, SelectorError> {
        let height = child_height + 1;
        if height > SELECTOR_DEPTH_MAX {
            return Err(self.too_deep(at_byte));
        }
        Ok(Parsed {
            expr,
            kind,
            height,
            start_byte,
        })
    }

    fn require_condition(&self, parsed: &Parsed, context: &str) -> Result<(), SelectorError> {
        if parsed.kind == Kind::Scalar {
            return Err(self.error_at(
                parsed.start_byte,
                format!("{context} must be a condition, but this expression is not boolean"),
            ));
        }
        Ok(())
    }

    fn require_scalar(&self, parsed: &Parsed, context: &str) -> Result<(), SelectorError> {
        match parsed.kind {
            Kind::Boolean => Err(self.error_at(
                parsed.start_byte,
                format!("{context} needs a numeric or string operand, found a condition"),
            )),
            Kind::Null => Err(self.error_at(
                parsed.start_byte,
                format!("{context} cannot take a NULL literal"),
            )),
            Kind::Scalar | Kind::Dynamic => Ok(()),
        }
    }

    /// Parses operators at `min_prec` or tighter; `nesting` counts the
    /// parentheses and prefix operators around this point.
    ///
    /// This function, [`Parser::prefix`], [`Parser::primary`] and the infix
    /// helpers recurse into each other once per nesting level, so each is
    /// kept small: unoptimized builds give every local its own stack slot,
    /// and one fat function here once cost ~10 KiB of stack per level.
    fn expression(&mut self, min_prec: u8, nesting: usize) -> Result<Parsed, SelectorError> {
        let mut left = self.prefix(min_prec, nesting)?;
        loop {
            let Some(prec) = self.infix_precedence() else {
                return Ok(left);
            };
            if prec < min_prec {
                return Ok(left);
            }
            left = self.infix(prec, left, nesting)?;
        }
    }

    /// The precedence of the next token as an infix operator, if it is one.
    fn infix_precedence(&self) -> Option<u8> {
        Some(match &self.peek().kind {
            TokenKind::Or => PREC_OR,
            TokenKind::And => PREC_AND,
            TokenKind::Eq | TokenKind::Ne | TokenKind::Is => PREC_EQUALITY,
            TokenKind::Lt
            | TokenKind::Le
            | TokenKind::Gt
            | TokenKind::Ge
            | TokenKind::Like
            | TokenKind::Between
            | TokenKind::In => PREC_COMPARISON,
            TokenKind::Not
                if matches!(
                    self.peek_second(),
                    TokenKind::Like | TokenKind::Between | TokenKind::In
                ) =>
            {
                PREC_COMPARISON
            }
            TokenKind::Plus | TokenKind::Minus => PREC_ADDITIVE,
            TokenKind::Star | TokenKind::Slash | TokenKind::Percent => PREC_MULTIPLICATIVE,
            _ => return None,
        })
    }

    /// Consumes one infix operator (known to be one) and its right side.
    #[inline(never)]
    fn infix(&mut self, prec: u8, left: Parsed, nesting: usize) -> Result<Parsed, SelectorError> {
        let token = self.advance();
        let at = token.start_byte;
        match &token.kind {
            TokenKind::Or => self.logical(true, left, prec, nesting, at),
            TokenKind::And => self.logical(false, left, prec, nesting, at),
            TokenKind::Is => self.is_null(left, at),
            TokenKind::Not => {
                let keyword = &self.advance().kind;
                self.predicate(keyword, true, left, nesting, at)
            }
            TokenKind::Like | TokenKind::Between | TokenKind::In => {
                self.predicate(&token.kind, false, left, nesting, at)
            }
            TokenKind::Eq => self.equality(CmpOp::Eq, left, prec, nesting, at),
            TokenKind::Ne => self.equality(CmpOp::Ne, left, prec, nesting, at),
            TokenKind::Lt => self.ordering(CmpOp::Lt, left, prec, nesting, at),
            TokenKind::Le => self.ordering(CmpOp::Le, left, prec, nesting, at),
            TokenKind::Gt => self.ordering(CmpOp::Gt, left, prec, nesting, at),
            TokenKind::Ge => self.ordering(CmpOp::Ge, left, prec, nesting, at),
            TokenKind::Plus => self.arithmetic(ArithOp::Add, left, prec, nesting, at),
            TokenKind::Minus => self.arithmetic(ArithOp::Sub, left, prec, nesting, at),
            TokenKind::Star => self.arithmetic(ArithOp::Mul, left, prec, nesting, at),
            TokenKind::Slash => self.arithmetic(ArithOp::Div, left, prec, nesting, at),
            _ => self.arithmetic(ArithOp::Mod, left, prec, nesting, at),
        }
    }

    #[inline(never)]
    fn equality(
        &mut self,
        op: CmpOp,
        left: Parsed,
        prec: u8,
        nesting: usize,
        at: usize,
    ) -> Result<Parsed, SelectorError> {
        let right = self.expression(prec + 1, nesting)?;
        for operand in [&left, &right] {
            if operand.kind == Kind::Null {
                return Err(self.error_at(
                    operand.start_byte,
                    "`=` and `<>` cannot compare with NULL; use IS [NOT] NULL".to_owned(),
                ));
            }
        }
        self.binary_compare(op, left, right, at)
    }

    #[inline(never)]
    fn ordering(
        &mut self,
        op: CmpOp,
        left: Parsed,
        prec: u8,
        nesting: usize,
        at: usize,
    ) -> Result<Parsed, SelectorError> {
        let right = self.expression(prec + 1, nesting)?;
        self.require_scalar(&left, "an ordering comparison")?;
        self.require_scalar(&right, "an ordering comparison")?;
        self.binary_compare(op, left, right, at)
    }

    #[inline(never)]
    fn arithmetic(
        &mut self,
        op: ArithOp,
        left: Parsed,
        prec: u8,
        nesting: usize,
        at: usize,
    ) -> Result<Parsed, SelectorError> {
        let right = self.expression(prec + 1, nesting)?;
        self.require_scalar(&left, "arithmetic")?;
        self.require_scalar(&right, "arithmetic")?;
        let height = left.height.max(right.height);
        let start = left.start_byte;
        let expr = Expr::Arith(op, Box::new(left.expr), Box::new(right.expr));
        self.node(expr, Kind::Scalar, height, start, at)
    }

    fn binary_compare(
        &self,
        op: CmpOp,
        left: Parsed,
        right: Parsed,
        at: usize,
    ) -> Result<Parsed, SelectorError> {
        let height = left.height.max(right.height);
        let start = left.start_byte;
        let expr = Expr::Compare(op, Box::new(left.expr), Box::new(right.expr));
        self.node(expr, Kind::Boolean, height, start, at)
    }

    /// Builds `left OR right` / `left AND right`, flattening chains of the
    /// same operator so that long lists do not deepen the tree.
    #[inline(never)]
    fn logical(
        &mut self,
        is_or: bool,
        left: Parsed,
        prec: u8,
        nesting: usize,
        at: usize,
    ) -> Result<Parsed, SelectorError> {
        self.require_condition(&left, "an operand of AND/OR")?;
        let right = self.expression(prec + 1, nesting)?;
        self.require_condition(&right, "an operand of AND/OR")?;
        let start = left.start_byte;
        let (mut operands, left_height) = match (is_or, left.expr) {
            (true, Expr::Or(operands)) | (false, Expr::And(operands)) => {
                (operands, left.height.saturating_sub(1))
            }
            (_, expr) => (vec![expr], left.height),
        };
        operands.push(right.expr);
        let expr = if is_or {
            Expr::Or(operands)
        } else {
            Expr::And(operands)
        };
        self.node(
            expr,
            Kind::Boolean,
            left_height.max(right.height),
            start,
            at,
        )
    }

    fn is_null(&mut self, left: Parsed, at: usize) -> Result<Parsed, SelectorError> {
        let negated = self.peek().kind == TokenKind::Not;
        if negated {
            self.advance();
        }
        self.expect(&TokenKind::Null, "NULL after IS")?;
        let (height, start) = (left.height, left.start_byte);
        let expr = Expr::IsNull {
            operand: Box::new(left.expr),
            negated,
        };
        self.node(expr, Kind::Boolean, height, start, at)
    }

    /// Parses the rest of `[NOT] LIKE`, `[NOT] BETWEEN` or `[NOT] IN` after
    /// its keyword.
    fn predicate(
        &mut self,
        keyword: &TokenKind,
        negated: bool,
        left: Parsed,
        nesting: usize,
        at: usize,
    ) -> Result<Parsed, SelectorError> {
        match keyword {
            TokenKind::Like => self.like(negated, left, at),
            TokenKind::In => self.in_list(negated, left, at),
            _ => self.between(negated, left, nesting, at),
        }
    }

    #[inline(never)]
    fn like(&mut self, negated: bool, left: Parsed, at: usize) -> Result<Parsed, SelectorError> {
        self.require_scalar(&left, "LIKE")?;
        let pattern = self.string_literal("a pattern string after LIKE")?;
        let mut escape = None;
        if self.peek().kind == TokenKind::Escape {
            self.advance();
            let escape_at = self.peek().start_byte;
            let text = self.string_literal("an escape string after ESCAPE")?;
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => escape = Some(c),
                _ => {
                    return Err(
                        self.error_at(escape_at, "ESCAPE must be exactly one character".to_owned())
                    )
                }
            }
        }
        let (height, start) = (left.height, left.start_byte);
        let expr = Expr::Like {
            operand: Box::new(left.expr),
            pattern: LikePattern::compile(&pattern, escape),
            negated,
        };
        self.node(expr, Kind::Boolean, height, start, at)
    }

    #[inline(never)]
    fn in_list(&mut self, negated: bool, left: Parsed, at: usize) -> Result<Parsed, SelectorError> {
        self.require_scalar(&left, "IN")?;
        self.expect(&TokenKind::LParen, "`(` after IN")?;
        let mut set = HashSet::new();
        loop {
            set.insert(self.string_literal("a string literal in the IN list")?);
            if self.peek().kind == TokenKind::Comma {
                self.advance();
            } else {
                break;
            }
        }
        self.expect(&TokenKind::RParen, "`,` or `)` in the IN list")?;
        let (height, start) = (left.height, left.start_byte);
        let expr = Expr::In {
            operand: Box::new(left.expr),
            set,
            negated,
        };
        self.node(expr, Kind::Boolean, height, start, at)
    }

    #[inline(never)]
    fn between(
        &mut self,
        negated: bool,
        left: Parsed,
        nesting: usize,
        at: usize,
    ) -> Result<Parsed, SelectorError> {
        self.require_scalar(&left, "BETWEEN")?;
        let low = self.expression(PREC_ADDITIVE, nesting)?;
        self.require_scalar(&low, "BETWEEN")?;
        self.expect(&TokenKind::And, "AND in BETWEEN")?;
        let high = self.expression(PREC_ADDITIVE, nesting)?;
        self.require_scalar(&high, "BETWEEN")?;
        let height = left.height.max(low.height).max(high.height);
        let start = left.start_byte;
        let expr = Expr::Between {
            operand: Box::new(left.expr),
            low: Box::new(low.expr),
            high: Box::new(high.expr),
            negated,
        };
        self.node(expr, Kind::Boolean, height, start, at)
    }

    fn string_literal(&mut self, what: &str) -> Result<String, SelectorError> {
        let token = self.peek();
        match &token.kind {
            TokenKind::Str(s) => {
                self.advance();
                Ok(s.clone())
            }
            other => Err(self.error_at(
                token.start_byte,
                format!("expected {what}, found {}", other.describe()),
            )),
        }
    }

    /// Parses prefix operators and primaries.
    fn prefix(&mut self, min_prec: u8, nesting: usize) -> Result<Parsed, SelectorError> {
        let nesting = nesting + 1;
        if nesting > SELECTOR_DEPTH_MAX {
            return Err(self.too_deep(self.peek().start_byte));
        }
        match &self.peek().kind {
            TokenKind::Not => self.not_prefix(min_prec, nesting),
            TokenKind::Minus => self.sign_prefix(SignOp::Minus, nesting),
            TokenKind::Plus => self.sign_prefix(SignOp::Plus, nesting),
            _ => self.primary(nesting),
        }
    }

    #[inline(never)]
    fn not_prefix(&mut self, min_prec: u8, nesting: usize) -> Result<Parsed, SelectorError> {
        let at = self.advance().start_byte;
        if min_prec > PREC_NOT {
            return Err(self.error_at(
                at,
                "NOT cannot appear inside a comparison or arithmetic here; add parentheses"
                    .to_owned(),
            ));
        }
        // Parsing at NOT's own level lets `NOT NOT a` nest while stopping
        // before AND/OR.
        let operand = self.expression(PREC_NOT, nesting)?;
        self.require_condition(&operand, "the operand of NOT")?;
        let height = operand.height;
        self.node(
            Expr::Not(Box::new(operand.expr)),
            Kind::Boolean,
            height,
            at,
            at,
        )
    }

    #[inline(never)]
    fn sign_prefix(&mut self, op: SignOp, nesting: usize) -> Result<Parsed, SelectorError> {
        let at = self.advance().start_byte;
        // `-9223372036854775808` is the one decimal literal whose magnitude
        // does not fit in i64 on its own.
        if op == SignOp::Minus && self.peek().kind == TokenKind::Decimal(I64_MIN_MAGNITUDE) {
            self.advance();
            return self.node(
                Expr::Literal(Value::Long(i64::MIN)),
                Kind::Scalar,
                0,
                at,
                at,
            );
        }
        let operand = self.prefix(PREC_MULTIPLICATIVE + 1, nesting)?;
        self.require_scalar(&operand, "a sign")?;
        // Fold signs on numeric literals so `-5` is a constant.
        let folded = match (&operand.expr, op) {
            (Expr::Literal(Value::Long(n)), SignOp::Minus) => n.checked_neg().map(Value::Long),
            (Expr::Literal(Value::Double(d)), SignOp::Minus) => Some(Value::Double(-d)),
            (Expr::Literal(v @ (Value::Long(_) | Value::Double(_))), SignOp::Plus) => {
                Some(v.clone())
            }
            _ => None,
        };
        match folded {
            Some(value) => self.node(Expr::Literal(value), Kind::Scalar, 0, at, at),
            None => {
                let height = operand.height;
                self.node(
                    Expr::Sign(op, Box::new(operand.expr)),
                    Kind::Scalar,
                    height,
                    at,
                    at,
                )
            }
        }
    }

    #[inline(never)]
    fn parenthesized(&mut self, at: usize, nesting: usize) -> Result<Parsed, SelectorError> {
        let inner = self.expression(PREC_OR, nesting)?;
        self.expect(&TokenKind::RParen, "`)`")?;
        Ok(Parsed {
            start_byte: at,
            ..inner
        })
    }

    fn primary(&mut self, nesting: usize) -> Result<Parsed, SelectorError> {
        let token = self.advance();
        let at = token.start_byte;
        let (expr, kind) = match &token.kind {
            TokenKind::LParen => return self.parenthesized(at, nesting),
            TokenKind::Ident(name) => {
                if name.eq_ignore_ascii_case("XPATH") || name.eq_ignore_ascii_case("XQUERY") {
                    return Err(
                        self.error_at(at, format!("{name} selectors are not supported by ferromq"))
                    );
                }
                (Expr::Property(name.clone()), Kind::Dynamic)
            }
            TokenKind::Str(s) => (Expr::Literal(Value::String(s.clone())), Kind::Scalar),
            TokenKind::Decimal(n) => {
                let value = i64::try_from(*n)
                    .map(Value::Long)
                    // Only 2^63 itself can get here (larger literals lex as
                    // doubles); without a leading minus it is out of range.
                    .unwrap_or(Value::Double(*n as f64));
                (Expr::Literal(value), Kind::Scalar)
            }
            TokenKind::Long(n) => (Expr::Literal(Value::Long(*n)), Kind::Scalar),
            TokenKind::Double(d) => (Expr::Literal(Value::Double(*d)), Kind::Scalar),
            TokenKind::True => (Expr::Literal(Value::Bool(true)), Kind::Boolean),
            TokenKind::False => (Expr::Literal(Value::Bool(false)), Kind::Boolean),
            TokenKind::Null => (Expr::Null, Kind::Null),
            other => {
                return Err(self.error_at(
                    at,
                    format!("expected an expression, found {}", other.describe()),
                ))
            }
        };
        self.node(expr, kind, 0, at, at)
    }
}
