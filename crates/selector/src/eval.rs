//! Evaluates a compiled selector against one message with SQL three-valued
//! logic.
//!
//! Recursion here is bounded by the tree depth, which the parser caps at
//! [`crate::SELECTOR_DEPTH_MAX`].

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::ast::{ArithOp, CmpOp, Expr, SignOp};
use crate::value::{PropertySource, Value};

/// A three-valued SQL truth value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Truth {
    True,
    False,
    /// The SQL UNKNOWN that NULL operands produce.
    Unknown,
}

impl Truth {
    fn from_bool(value: bool) -> Truth {
        if value {
            Truth::True
        } else {
            Truth::False
        }
    }

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Unknown => Truth::Unknown,
        }
    }

    fn and(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::False, _) | (_, Truth::False) => Truth::False,
            (Truth::True, Truth::True) => Truth::True,
            _ => Truth::Unknown,
        }
    }

    fn or(self, other: Truth) -> Truth {
        match (self, other) {
            (Truth::True, _) | (_, Truth::True) => Truth::True,
            (Truth::False, Truth::False) => Truth::False,
            _ => Truth::Unknown,
        }
    }
}

/// A value during evaluation; literals are borrowed from the tree rather than
/// cloned per message.
#[derive(Debug, Clone, PartialEq)]
enum Val<'a> {
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(Cow<'a, str>),
}

impl<'a> Val<'a> {
    fn borrowed(value: &'a Value) -> Val<'a> {
        match value {
            Value::Bool(b) => Val::Bool(*b),
            Value::Long(n) => Val::Long(*n),
            Value::Double(d) => Val::Double(*d),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
        }
    }

    fn owned(value: Value) -> Val<'a> {
        match value {
            Value::Bool(b) => Val::Bool(b),
            Value::Long(n) => Val::Long(n),
            Value::Double(d) => Val::Double(d),
            Value::String(s) => Val::Str(Cow::Owned(s)),
        }
    }
}

/// A numeric operand after any string coercion.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Long(i64),
    Double(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 is inherent in mixing longs and doubles.
            Num::Long(n) => n as f64,
            Num::Double(d) => d,
        }
    }

    fn is_zero(self) -> bool {
        match self {
            Num::Long(n) => n == 0,
            Num::Double(d) => d == 0.0,
        }
    }
}

impl From<Num> for Val<'_> {
    fn from(num: Num) -> Self {
        match num {
            Num::Long(n) => Val::Long(n),
            Num::Double(d) => Val::Double(d),
        }
    }
}

/// Parses a string operand as a number for the STOMP coercion rule: `i64`
/// when it is an integer in range, else `f64`; `None` when it is not a plain
/// decimal number (no whitespace, hex, `NaN` or `inf` spellings).
fn parse_number(text: &str) -> Option<Num> {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !plain {
        return None;
    }
    if let Ok(n) = text.parse::<i64>() {
        return Some(Num::Long(n));
    }
    text.parse::<f64>().ok().map(Num::Double)
}

/// Parses a string operand as a boolean: `true` / `false` in any case.
fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Turns an operand into a number; `None` (UNKNOWN) for booleans and strings
/// that do not parse.
fn number(value: Val<'_>) -> Option<Num> {
    match value {
        Val::Long(n) => Some(Num::Long(n)),
        Val::Double(d) => Some(Num::Double(d)),
        Val::Str(s) => parse_number(&s),
        Val::Bool(_) => None,
    }
}

/// Exact ordering of an `i64` against an `f64`, avoiding the rounding that
/// converting large longs to double would introduce.
fn cmp_long_double(long: i64, double: f64) -> Option<Ordering> {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if double.is_nan() {
        return None;
    }
    if double >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if double < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = double.trunc();
    // In range and integral, so the cast is exact.
    let whole_long = whole as i64;
    Some(long.cmp(&whole_long).then_with(|| {
        let fraction = double - whole;
        if fraction > 0.0 {
            Ordering::Less
        } else if fraction < 0.0 {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

fn cmp_numbers(left: Num, right: Num) -> Option<Ordering> {
    match (left, right) {
        (Num::Long(a), Num::Long(b)) => Some(a.cmp(&b)),
        (Num::Double(a), Num::Double(b)) => a.partial_cmp(&b),
        (Num::Long(a), Num::Double(b)) => cmp_long_double(a, b),
        (Num::Double(a), Num::Long(b)) => cmp_long_double(b, a).map(Ordering::reverse),
    }
}

/// The outcome of relating two non-NULL operands.
enum Relation {
    /// The operands are ordered (or equal / unequal for booleans).
    Ordered(Ordering),
    /// Booleans, which only support `=` and `<>`: `Equal` or not.
    BoolEquality(bool),
    /// Non-like types (e.g. boolean vs number): every comparison is FALSE
    /// except `<>`, as in ActiveMQ.
    Incompatible,
    /// A coercion failed or a NaN was involved.
    Unknown,
}

fn relate(left: &Val<'_>, right: &Val<'_>) -> Relation {
    let numeric = |a: Num, b: Num| cmp_numbers(a, b).map_or(Relation::Unknown, Relation::Ordered);
    match (left, right) {
        (Val::Str(a), Val::Str(b)) => Relation::Ordered(a.as_ref().cmp(b.as_ref())),
        (Val::Bool(a), Val::Bool(b)) => Relation::BoolEquality(a == b),
        (Val::Str(s), Val::Bool(b)) | (Val::Bool(b), Val::Str(s)) => parse_bool(s)
            .map_or(Relation::Unknown, |parsed| {
                Relation::BoolEquality(parsed == *b)
            }),
        (Val::Bool(_), _) | (_, Val::Bool(_)) => Relation::Incompatible,
        (Val::Str(s), other) => match (parse_number(s), number(other.clone())) {
            (Some(a), Some(b)) => numeric(a, b),
            _ => Relation::Unknown,
        },
        (other, Val::Str(s)) => match (number(other.clone()), parse_number(s)) {
            (Some(a), Some(b)) => numeric(a, b),
            _ => Relation::Unknown,
        },
        (a, b) => match (number(a.clone()), number(b.clone())) {
            (Some(a), Some(b)) => numeric(a, b),
            _ => Relation::Unknown,
        },
    }
}

fn compare(op: CmpOp, left: Option<&Val<'_>>, right: Option<&Val<'_>>) -> Truth {
    let (Some(left), Some(right)) = (left, right) else {
        return Truth::Unknown;
    };
    match relate(left, right) {
        Relation::Unknown => Truth::Unknown,
        Relation::Incompatible => Truth::from_bool(op == CmpOp::Ne),
        Relation::BoolEquality(equal) => match op {
            CmpOp::Eq => Truth::from_bool(equal),
            CmpOp::Ne => Truth::from_bool(!equal),
            // JMS allows only `=` and `<>` on booleans.
            _ => Truth::False,
        },
        Relation::Ordered(ordering) => Truth::from_bool(match op {
            CmpOp::Eq => ordering == Ordering::Equal,
            CmpOp::Ne => ordering != Ordering::Equal,
            CmpOp::Lt => ordering == Ordering::Less,
            CmpOp::Le => ordering != Ordering::Greater,
            CmpOp::Gt => ordering == Ordering::Greater,
            CmpOp::Ge => ordering != Ordering::Less,
        }),
    }
}

fn arith(op: ArithOp, left: Num, right: Num) -> Option<Num> {
    // Exact long arithmetic while it fits; on overflow the result is
    // promoted to double rather than wrapping as Java does, so ordering
    // comparisons on huge values stay meaningful.
    let longs = match (left, right) {
        (Num::Long(a), Num::Long(b)) => Some((a, b)),
        _ => None,
    };
    let (a, b) = (left.as_f64(), right.as_f64());
    let result = match op {
        ArithOp::Add => longs
            .and_then(|(x, y)| x.checked_add(y))
            .map_or(Num::Double(a + b), Num::Long),
        ArithOp::Sub => longs
            .and_then(|(x, y)| x.checked_sub(y))
            .map_or(Num::Double(a - b), Num::Long),
        ArithOp::Mul => longs
            .and_then(|(x, y)| x.checked_mul(y))
            .map_or(Num::Double(a * b), Num::Long),
        // ActiveMQ always divides in double (7 / 2 = 3.5).
        ArithOp::Div if right.is_zero() => return None,
        ArithOp::Div => Num::Double(a / b),
        ArithOp::Mod if right.is_zero() => return None,
        // Only i64::MIN % -1 overflows, and its true remainder is 0.
        ArithOp::Mod => match longs {
            Some((x, y)) => Num::Long(x.checked_rem(y).unwrap_or(0)),
            None => Num::Double(a % b),
        },
    };
    Some(result)
}

fn negate(num: Num) -> Num {
    match num {
        Num::Long(n) => n.checked_neg().map_or(Num::Double(-(n as f64)), Num::Long),
        Num::Double(d) => Num::Double(-d),
    }
}

/// Evaluates an expression in a boolean context.
pub(crate) fn truth(expr: &Expr, source: &dyn PropertySource) -> Truth {
    match expr {
        Expr::Literal(Value::Bool(b)) => Truth::from_bool(*b),
        Expr::Not(operand) => truth(operand, source).not(),
        Expr::And(operands) => {
            let mut result = Truth::True;
            for operand in operands {
                result = result.and(truth(operand, source));
                if result == Truth::False {
                    break;
                }
            }
            result
        }
        Expr::Or(operands) => {
            let mut result = Truth::False;
            for operand in operands {
                result = result.or(truth(operand, source));
                if result == Truth::True {
                    break;
                }
            }
            result
        }
        Expr::Compare(op, left, right) => {
            let Some(left) = value(left, source) else {
                return Truth::Unknown;
            };
            let right = value(right, source);
            compare(*op, Some(&left), right.as_ref())
        }
        Expr::IsNull { operand, negated } => {
            Truth::from_bool(value(operand, source).is_none() != *negated)
        }
        Expr::Like {
            operand,
            pattern,
            negated,
        } => match value(operand, source) {
            None => Truth::Unknown,
            Some(Val::Str(s)) => Truth::from_bool(pattern.matches(&s) != *negated),
            // ActiveMQ: LIKE on a non-string is FALSE, so NOT LIKE is TRUE.
            Some(_) => Truth::from_bool(*negated),
        },
        Expr::In {
            operand,
            set,
            negated,
        } => match value(operand, source) {
            Some(Val::Str(s)) => Truth::from_bool(set.contains(s.as_ref()) != *negated),
            // ActiveMQ: IN on NULL or on a non-string is UNKNOWN either way.
            _ => Truth::Unknown,
        },
        Expr::Between {
            operand,
            low,
            high,
            negated,
        } => {
            let Some(operand) = value(operand, source) else {
                return Truth::Unknown;
            };
            let low = value(low, source);
            let high = value(high, source);
            if *negated {
                compare(CmpOp::Lt, Some(&operand), low.as_ref()).or(compare(
                    CmpOp::Gt,
                    Some(&operand),
                    high.as_ref(),
                ))
            } else {
                compare(CmpOp::Ge, Some(&operand), low.as_ref()).and(compare(
                    CmpOp::Le,
                    Some(&operand),
                    high.as_ref(),
                ))
            }
        }
        Expr::Literal(_) | Expr::Null | Expr::Property(_) | Expr::Sign(..) | Expr::Arith(..) => {
            match value(expr, source) {
                None => Truth::Unknown,
                Some(Val::Bool(b)) => Truth::from_bool(b),
                // STOMP: a header reading "true"/"false" works as a boolean.
                Some(Val::Str(s)) => parse_bool(&s).map_or(Truth::Unknown, Truth::from_bool),
                // ActiveMQ casts any other non-boolean to FALSE.
                Some(Val::Long(_) | Val::Double(_)) => Truth::False,
            }
        }
    }
}

/// Evaluates an expression in a value context; `None` is SQL NULL.
fn value<'e>(expr: &'e Expr, source: &dyn PropertySource) -> Option<Val<'e>> {
    match expr {
        Expr::Literal(v) => Some(Val::borrowed(v)),
        Expr::Null => None,
        Expr::Property(name) => source.property(name).map(Val::owned),
        Expr::Sign(op, operand) => {
            let num = number(value(operand, source)?)?;
            Some(Val::from(match op {
                SignOp::Plus => num,
                SignOp::Minus => negate(num),
            }))
        }
        Expr::Arith(op, left, right) => {
            let left = number(value(left, source)?)?;
            let right = number(value(right, source)?)?;
            arith(*op, left, right).map(Val::from)
        }
        Expr::Not(_)
        | Expr::And(_)
        | Expr::Or(_)
        | Expr::Compare(..)
        | Expr::IsNull { .. }
        | Expr::Like { .. }
        | Expr::In { .. }
        | Expr::Between { .. } => match truth(expr, source) {
            Truth::True => Some(Val::Bool(true)),
            Truth::False => Some(Val::Bool(false)),
            Truth::Unknown => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_double_ordering_is_exact_beyond_2_pow_53() {
        let big = (1_i64 << 53) + 1;
        // As a double, `big` rounds to 2^53 and would compare equal.
        assert_eq!(
            cmp_long_double(big, (1_i64 << 53) as f64),
            Some(Ordering::Greater)
        );
        assert_eq!(cmp_long_double(i64::MAX, 9.3e18), Some(Ordering::Less));
        assert_eq!(cmp_long_double(i64::MIN, -9.3e18), Some(Ordering::Greater));
        assert_eq!(
            cmp_long_double(i64::MIN, -9_223_372_036_854_775_808.0),
            Some(Ordering::Equal)
        );
        assert_eq!(cmp_long_double(1, 1.5), Some(Ordering::Less));
        assert_eq!(cmp_long_double(-1, -1.5), Some(Ordering::Greater));
        assert_eq!(cmp_long_double(2, 2.0), Some(Ordering::Equal));
        assert_eq!(cmp_long_double(0, f64::INFINITY), Some(Ordering::Less));
        assert_eq!(cmp_long_double(0, f64::NAN), None);
    }

    #[test]
    fn three_valued_tables_match_sql() {
        use Truth::{False as F, True as T, Unknown as U};
        let all = [T, F, U];
        let and_table = [[T, F, U], [F, F, F], [U, F, U]];
        let or_table = [[T, T, T], [T, F, U], [T, U, U]];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a.and(*b), and_table[i][j], "{a:?} AND {b:?}");
                assert_eq!(a.or(*b), or_table[i][j], "{a:?} OR {b:?}");
            }
        }
        assert_eq!(T.not(), F);
        assert_eq!(F.not(), T);
        assert_eq!(U.not(), U);
    }

    #[test]
    fn string_number_parsing_is_strict() {
        assert_eq!(parse_number("42"), Some(Num::Long(42)));
        assert_eq!(parse_number("-7"), Some(Num::Long(-7)));
        assert_eq!(parse_number("2.5"), Some(Num::Double(2.5)));
        assert_eq!(parse_number("1e3"), Some(Num::Double(1000.0)));
        assert_eq!(
            parse_number("99999999999999999999"),
            Some(Num::Double(1e20))
        );
        for bad in [
            "", " 1", "1 ", "0x10", "NaN", "inf", "abc", "1.2.3", "+", ".",
        ] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn long_overflow_promotes_to_double_and_division_by_zero_is_unknown() {
        assert_eq!(
            arith(ArithOp::Add, Num::Long(i64::MAX), Num::Long(1)),
            Some(Num::Double(i64::MAX as f64 + 1.0))
        );
        assert_eq!(
            arith(ArithOp::Mul, Num::Long(i64::MIN), Num::Long(-1)),
            Some(Num::Double(9_223_372_036_854_775_808.0))
        );
        assert_eq!(
            arith(ArithOp::Mod, Num::Long(i64::MIN), Num::Long(-1)),
            Some(Num::Long(0))
        );
        assert_eq!(arith(ArithOp::Div, Num::Long(1), Num::Long(0)), None);
        assert_eq!(
            arith(ArithOp::Div, Num::Double(1.0), Num::Double(0.0)),
            None
        );
        assert_eq!(arith(ArithOp::Mod, Num::Long(1), Num::Long(0)), None);
        assert_eq!(
            negate(Num::Long(i64::MIN)),
            Num::Double(9_223_372_036_854_775_808.0)
        );
    }
}
