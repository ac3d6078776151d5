//! JMS message selectors for ferromq, evaluated the way Apache ActiveMQ 5.x
//! evaluates them.
//!
//! A selector is a condition in the SQL-92 subset defined by JMS 1.1 §3.8.1:
//!
//! ```
//! use ferromq_selector::{Selector, Value};
//!
//! let selector = Selector::parse("JMSType = 'car' AND color IN ('red', 'blue') AND weight > 2500")?;
//! let message = [
//!     ("JMSType", Value::from("car")),
//!     ("color", Value::from("red")),
//!     ("weight", Value::Long(3000)),
//! ];
//! assert!(selector.matches(&message));
//! # Ok::<(), ferromq_selector::SelectorError>(())
//! ```
//!
//! # Syntax
//!
//! * Literals: `'strings'` with `''` for a quote; exact numerics in decimal,
//!   hex (`0x1F`) or octal (`017`, a leading zero means octal as in Java and
//!   ActiveMQ), each with an optional `L`; approximate numerics (`1.5`, `1e3`,
//!   `.5`, `5.`, optional `f`/`d` suffix); `TRUE`, `FALSE`, `NULL`.
//! * Identifiers start with a letter, `_` or `$` and continue with letters,
//!   digits, `_` or `$` (Java identifier rules; ActiveMQ accepts only the
//!   ASCII subset). They are case-sensitive. `.` and `-` are not identifier
//!   characters, so a STOMP header named `content-type` cannot be selected on
//!   (`content-type` parses as a subtraction), exactly as in ActiveMQ.
//! * Keywords are case-insensitive and reserved: `AND OR NOT BETWEEN LIKE
//!   ESCAPE IN IS NULL TRUE FALSE`. ActiveMQ's `XPATH`/`XQUERY` extensions are
//!   refused with a clear error.
//! * Operators, loosest first: `OR`; `AND`; `NOT`; `=` `<>` `IS [NOT] NULL`;
//!   `<` `<=` `>` `>=` `[NOT] BETWEEN x AND y` `[NOT] IN ('a', ...)`
//!   `[NOT] LIKE 'pattern' [ESCAPE 'c']`; `+` `-`; `*` `/` `%`; unary `+`
//!   `-`. `NOT` binds as in SQL and JMS (`NOT a = 1` is `NOT (a = 1)`), where
//!   ActiveMQ's grammar binds it as tightly as unary minus.
//! * `--` line comments and `/* */` block comments are skipped, as in
//!   ActiveMQ.
//! * An empty (or all-whitespace) selector means "no selector" per JMS and
//!   matches every message.
//!
//! Some nonsense is refused at parse time, as ActiveMQ does: a selector or an
//! `AND`/`OR`/`NOT` operand that cannot be boolean (`a + 1`, `'x'`),
//! arithmetic or ordering on a boolean (`TRUE < 3`), and `= NULL` (use
//! `IS NULL`).
//!
//! # Evaluation
//!
//! [`Selector::matches`] is true only when the condition is TRUE; FALSE and
//! UNKNOWN both reject. A missing property is SQL NULL, and NULL operands make
//! comparisons, arithmetic, `LIKE`, `IN` and `BETWEEN` UNKNOWN; `NOT`, `AND`
//! and `OR` follow SQL three-valued logic (`FALSE AND UNKNOWN` is FALSE,
//! `TRUE OR UNKNOWN` is TRUE, `NOT UNKNOWN` is UNKNOWN). So `a <> 'x'` does
//! not match a message without `a`; write `a IS NULL OR a <> 'x'` for that.
//!
//! * **Numbers**: longs and doubles compare by exact numeric value (a long is
//!   never rounded through a double to compare). `+ - *` on two longs stay
//!   exact; on overflow the result is promoted to a double instead of
//!   wrapping as Java does. `/` always yields a double (`7 / 2 = 3.5`), as in
//!   ActiveMQ; `%` on two longs stays a long. Division or remainder by zero is
//!   UNKNOWN rather than infinity.
//! * **Strings** support `=` and `<>` as JMS requires, and also `<`, `<=`,
//!   `>`, `>=` (ordered by Unicode code point) as ActiveMQ allows. `LIKE`
//!   works on strings only; on another type it is FALSE (so `NOT LIKE` is
//!   TRUE), and `IN` on a non-string is UNKNOWN, both as in ActiveMQ. `_`
//!   matches one character; an escape character only escapes `%`, `_` or
//!   itself, otherwise it stands for itself (ActiveMQ's leniency).
//! * **Booleans** support only `=` and `<>`; ordering comparisons on them are
//!   FALSE.
//! * **Non-like types** (a boolean against a number): `=` and the orderings
//!   are FALSE and `<>` is TRUE, as in ActiveMQ.
//! * An identifier used directly as a condition (`WHERE urgent`) is its
//!   boolean value; a non-boolean value is FALSE, as in ActiveMQ.
//!
//! # STOMP string coercion (ferromq specific)
//!
//! STOMP headers always arrive as strings, so `priority > 5` would never
//! match a STOMP message under strict JMS typing. As ActiveMQ's STOMP support
//! does in practice, when one operand of a comparison, `BETWEEN`, or
//! arithmetic is a string and the other a number, the string is parsed as a
//! number: an `i64` if it is an integer in range, else an `f64`. Only plain
//! decimal text is accepted (digits, sign, `.`, exponent; no whitespace, hex,
//! `NaN` or `Infinity`). If it does not parse, the result is UNKNOWN. The
//! same applies to `=`/`<>` between a string and a number, to unary minus on
//! a string, and, for booleans, to a string `true`/`false` (any case) meeting
//! a boolean or used directly as a condition; any other string there is
//! UNKNOWN. String concatenation with `+` (an ActiveMQ quirk) is not
//! supported: `+` on strings is numeric.
//!
//! # Bounds
//!
//! Selectors longer than [`SELECTOR_BYTES_MAX`] are refused
//! ([`SelectorError::TooLong`]), as is nesting deeper than
//! [`SELECTOR_DEPTH_MAX`] ([`SelectorError::TooDeep`]): parentheses, prefix
//! operators and long chains of arithmetic or comparisons all count, while
//! `AND`/`OR` chains are flattened and do not. Parsing and evaluation
//! therefore use bounded stack on any input. `LIKE` patterns are compiled
//! once and matched in O(pattern × input) time; `IN` lists become hash sets.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod ast;
mod error;
mod eval;
mod lexer;
mod like;
mod parser;
mod value;

pub use error::SelectorError;
pub use value::{PropertySource, Value};

/// Longest selector text accepted, in UTF-8 bytes.
pub const SELECTOR_BYTES_MAX: usize = 64 * 1024;

/// Deepest nesting accepted, counting parentheses, prefix operators and
/// levels of the expression tree.
pub const SELECTOR_DEPTH_MAX: usize = 256;

/// A compiled JMS message selector.
///
/// Compile once per consumer with [`Selector::parse`], then call
/// [`Selector::matches`] per message; it is `Send + Sync` and cheap to share.
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    /// `None` for an empty selector, which matches everything.
    root: Option<ast::Expr>,
}

impl Selector {
    /// Parses a selector; errors name the position and what was expected.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.len() > SELECTOR_BYTES_MAX {
            return Err(SelectorError::TooLong {
                length_bytes: text.len(),
                length_bytes_max: SELECTOR_BYTES_MAX,
            });
        }
        let tokens = lexer::tokenize(text)?;
        let root = parser::parse(text, &tokens)?;
        Ok(Selector {
            text: text.to_owned(),
            root,
        })
    }

    /// True only when the expression evaluates to TRUE (FALSE and UNKNOWN both reject).
    pub fn matches(&self, source: &dyn PropertySource) -> bool {
        match &self.root {
            None => true,
            Some(root) => eval::truth(root, source) == eval::Truth::True,
        }
    }

    /// The original text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether this is the empty selector, which matches every message; lets
    /// the broker skip evaluation entirely.
    pub fn is_match_all(&self) -> bool {
        self.root.is_none()
    }
}

impl std::fmt::Display for Selector {
    /// Writes the original text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    /// Same as [`Selector::parse`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Selector::parse(text)
    }
}
