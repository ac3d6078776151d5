//! Splits selector text into tokens.
//!
//! The token set follows ActiveMQ's `SelectorParser.jj`: case-insensitive
//! keywords, `'...'` strings with `''` as the quote escape, decimal / hex /
//! octal exact numerics with an optional `L`, approximate numerics, and SQL
//! `--` line and `/* */` block comments.

use crate::error::SelectorError;

/// Magnitude of `i64::MIN`; a decimal literal of exactly this value is only
/// valid directly after a unary minus.
pub(crate) const I64_MIN_MAGNITUDE: u64 = 1 << 63;

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// An identifier (property or header name), case preserved.
    Ident(String),
    /// A string literal with `''` already collapsed to `'`.
    Str(String),
    /// A decimal exact numeric; kept unsigned so that `-9223372036854775808`
    /// can be folded to `i64::MIN` by the parser.
    Decimal(u64),
    /// A hex or octal exact numeric, already range-checked.
    Long(i64),
    /// An approximate numeric (or a decimal too large for 64 bits).
    Double(f64),
    And,
    Or,
    Not,
    Between,
    Like,
    Escape,
    In,
    Is,
    Null,
    True,
    False,
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    /// End of input; always the last token.
    End,
}

impl TokenKind {
    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenKind::Ident(name) => format!("identifier `{name}`"),
            TokenKind::Str(_) => "a string literal".to_owned(),
            TokenKind::Decimal(_) | TokenKind::Long(_) | TokenKind::Double(_) => {
                "a numeric literal".to_owned()
            }
            TokenKind::And => "`AND`".to_owned(),
            TokenKind::Or => "`OR`".to_owned(),
            TokenKind::Not => "`NOT`".to_owned(),
            TokenKind::Between => "`BETWEEN`".to_owned(),
            TokenKind::Like => "`LIKE`".to_owned(),
            TokenKind::Escape => "`ESCAPE`".to_owned(),
            TokenKind::In => "`IN`".to_owned(),
            TokenKind::Is => "`IS`".to_owned(),
            TokenKind::Null => "`NULL`".to_owned(),
            TokenKind::True => "`TRUE`".to_owned(),
            TokenKind::False => "`FALSE`".to_owned(),
            TokenKind::LParen => "`(`".to_owned(),
            TokenKind::RParen => "`)`".to_owned(),
            TokenKind::Comma => "`,`".to_owned(),
            TokenKind::Eq => "`=`".to_owned(),
            TokenKind::Ne => "`<>`".to_owned(),
            TokenKind::Lt => "`<`".to_owned(),
            TokenKind::Le => "`<=`".to_owned(),
            TokenKind::Gt => "`>`".to_owned(),
            TokenKind::Ge => "`>=`".to_owned(),
            TokenKind::Plus => "`+`".to_owned(),
            TokenKind::Minus => "`-`".to_owned(),
            TokenKind::Star => "`*`".to_owned(),
            TokenKind::Slash => "`/`".to_owned(),
            TokenKind::Percent => "`%`".to_owned(),
            TokenKind::End => "end of selector".to_owned(),
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    pub(crate) start_byte: usize,
}

/// Builds a syntax error at a byte offset, reported as a character index.
pub(crate) fn syntax_error(text: &str, at_byte: usize, message: String) -> SelectorError {
    SelectorError::Syntax {
        position: char_index(text, at_byte),
        message,
    }
}

/// Converts a byte offset into a character index for error reports; errors
/// are cold, so the linear scan does not matter.
pub(crate) fn char_index(text: &str, at_byte: usize) -> usize {
    text.get(..at_byte)
        .map_or_else(|| text.chars().count(), |prefix| prefix.chars().count())
}

/// Tokenizes the whole text; the result always ends with [`TokenKind::End`].
///
/// The caller has already bounded the text length, so the token vector is
/// bounded too.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, SelectorError> {
    let mut lexer = Lexer { text, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let done = token.kind == TokenKind::End;
        tokens.push(token);
        if done {
            return Ok(tokens);
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    /// Byte offset of the next unread character; always on a char boundary.
    pos: usize,
}

/// Java identifier start as JMS defines it; ActiveMQ itself only accepts
/// ASCII letters, so this is a superset.
fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_ident_part(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// The whitespace set of ActiveMQ's grammar.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{000C}')
}

fn keyword(word: &str) -> Option<TokenKind> {
    // Keywords are few and short; comparing case-insensitively avoids an
    // allocation per identifier.
    const KEYWORDS: [(&str, TokenKind); 11] = [
        ("AND", TokenKind::And),
        ("OR", TokenKind::Or),
        ("NOT", TokenKind::Not),
        ("BETWEEN", TokenKind::Between),
        ("LIKE", TokenKind::Like),
        ("ESCAPE", TokenKind::Escape),
        ("IN", TokenKind::In),
        ("IS", TokenKind::Is),
        ("NULL", TokenKind::Null),
        ("TRUE", TokenKind::True),
        ("FALSE", TokenKind::False),
    ];
    KEYWORDS
        .iter()
        .find(|(spelling, _)| spelling.eq_ignore_ascii_case(word))
        .map(|(_, kind)| kind.clone())
}

impl Lexer<'_> {
    fn peek_char(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn peek_char_at(&self, byte_offset: usize) -> Option<char> {
        self.text.get(self.pos + byte_offset..)?.chars().next()
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, at_byte: usize, message: String) -> SelectorError {
        syntax_error(self.text, at_byte, message)
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) -> Result<(), SelectorError> {
        loop {
            let rest = self.rest();
            if let Some(c) = rest.chars().next().filter(|c| is_space(*c)) {
                self.pos += c.len_utf8();
            } else if rest.starts_with("--") {
                // ActiveMQ wants a newline after a line comment; accepting end
                // of input as well is harmless and friendlier.
                self.pos += rest.find(['\n', '\r']).unwrap_or(rest.len());
            } else if let Some(body) = rest.strip_prefix("/*") {
                match body.find("*/") {
                    Some(end) => self.pos += 2 + end + 2,
                    None => {
                        return Err(self.error(self.pos, "unterminated `/*` comment".to_owned()))
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    fn next_token(&mut self) -> Result<Token, SelectorError> {
        self.skip_trivia()?;
        let start_byte = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Token {
                kind: TokenKind::End,
                start_byte,
            });
        };
        let kind = if c == '\'' {
            self.string()?
        } else if c.is_ascii_digit()
            || (c == '.' && self.peek_char_at(1).is_some_and(|d| d.is_ascii_digit()))
        {
            self.number()?
        } else if is_ident_start(c) {
            let len = self
                .rest()
                .find(|c: char| !is_ident_part(c))
                .unwrap_or(self.rest().len());
            let word = &self.text[self.pos..self.pos + len];
            self.pos += len;
            keyword(word).unwrap_or_else(|| TokenKind::Ident(word.to_owned()))
        } else {
            self.punctuation(c)?
        };
        Ok(Token { kind, start_byte })
    }

    fn punctuation(&mut self, c: char) -> Result<TokenKind, SelectorError> {
        let next = self.peek_char_at(1);
        let (kind, len) = match (c, next) {
            ('<', Some('>')) => (TokenKind::Ne, 2),
            ('<', Some('=')) => (TokenKind::Le, 2),
            ('>', Some('=')) => (TokenKind::Ge, 2),
            ('<', _) => (TokenKind::Lt, 1),
            ('>', _) => (TokenKind::Gt, 1),
            ('=', _) => (TokenKind::Eq, 1),
            ('(', _) => (TokenKind::LParen, 1),
            (')', _) => (TokenKind::RParen, 1),
            (',', _) => (TokenKind::Comma, 1),
            ('+', _) => (TokenKind::Plus, 1),
            ('-', _) => (TokenKind::Minus, 1),
            ('*', _) => (TokenKind::Star, 1),
            ('/', _) => (TokenKind::Slash, 1),
            ('%', _) => (TokenKind::Percent, 1),
            ('!', Some('=')) => {
                return Err(self.error(
                    self.pos,
                    "`!=` is not a selector operator; use `<>`".to_owned(),
                ))
            }
            ('"', _) => {
                return Err(self.error(
                    self.pos,
                    "string literals use single quotes, not `\"`".to_owned(),
                ))
            }
            _ => return Err(self.error(self.pos, format!("unexpected character `{c}`"))),
        };
        self.pos += len;
        Ok(kind)
    }

    /// Reads `'...'`, collapsing `''` into one quote.
    fn string(&mut self) -> Result<TokenKind, SelectorError> {
        let open = self.pos;
        self.pos += 1;
        let mut value = String::new();
        loop {
            let rest = self.rest();
            let Some(quote) = rest.find('\'') else {
                return Err(self.error(open, "unterminated string literal".to_owned()));
            };
            value.push_str(&rest[..quote]);
            self.pos += quote + 1;
            if self.peek_char() == Some('\'') {
                value.push('\'');
                self.pos += 1;
            } else {
                return Ok(TokenKind::Str(value));
            }
        }
    }

    fn count_while(&self, from_byte: usize, pred: impl Fn(char) -> bool) -> usize {
        self.text[from_byte..]
            .find(|c: char| !pred(c))
            .unwrap_or(self.text.len() - from_byte)
    }

    /// Reads a numeric literal, taking the longest match as JavaCC does.
    fn number(&mut self) -> Result<TokenKind, SelectorError> {
        let start = self.pos;
        let rest = self.rest();
        if rest.len() > 1 && rest.starts_with('0') && matches!(rest.as_bytes()[1], b'x' | b'X') {
            let digits = self.count_while(start + 2, |c| c.is_ascii_hexdigit());
            if digits == 0 {
                return Err(self.error(start, "hex literal needs digits after `0x`".to_owned()));
            }
            let text = &self.text[start + 2..start + 2 + digits];
            self.pos = start + 2 + digits;
            let value = i64::from_str_radix(text, 16).map_err(|_| {
                self.error(
                    start,
                    "hex literal does not fit in a 64-bit signed long".to_owned(),
                )
            })?;
            self.integer_suffix();
            return self.finish_number(TokenKind::Long(value));
        }

        let int_digits = self.count_while(start, |c| c.is_ascii_digit());
        let mut end = start + int_digits;
        let mut is_float = false;
        if self.text[end..].starts_with('.') {
            is_float = true;
            end += 1;
            end += self.count_while(end, |c| c.is_ascii_digit());
        }
        if matches!(self.text.as_bytes().get(end), Some(b'e' | b'E')) {
            let mut exp_end = end + 1;
            if matches!(self.text.as_bytes().get(exp_end), Some(b'+' | b'-')) {
                exp_end += 1;
            }
            let exp_digits = self.count_while(exp_end, |c| c.is_ascii_digit());
            if exp_digits == 0 {
                return Err(self.error(end, "exponent needs digits".to_owned()));
            }
            is_float = true;
            end = exp_end + exp_digits;
        }
        let literal = &self.text[start..end];
        self.pos = end;

        if is_float {
            // Rust's float parser accepts exactly the digit forms the lexer let
            // through; values beyond f64 become infinity, as in Java.
            let value: f64 = literal
                .parse()
                .map_err(|_| self.error(start, format!("invalid numeric literal `{literal}`")))?;
            self.float_suffix();
            return self.finish_number(TokenKind::Double(value));
        }

        if literal.len() > 1 && literal.starts_with('0') {
            let value = i64::from_str_radix(&literal[1..], 8).map_err(|_| {
                self.error(
                    start,
                    format!("invalid octal literal `{literal}` (a leading 0 means octal)"),
                )
            })?;
            self.integer_suffix();
            return self.finish_number(TokenKind::Long(value));
        }

        let kind =
            match literal.parse::<u64>() {
                Ok(value) => TokenKind::Decimal(value),
                // Too large for 64 bits: ActiveMQ keeps a BigDecimal; the nearest
                // double is the closest this crate's value model gets.
                Err(_) => TokenKind::Double(literal.parse::<f64>().map_err(|_| {
                    self.error(start, format!("invalid numeric literal `{literal}`"))
                })?),
            };
        if self.float_suffix() {
            let value = match kind {
                TokenKind::Decimal(v) => v as f64,
                other => return self.finish_number(other),
            };
            return self.finish_number(TokenKind::Double(value));
        }
        self.integer_suffix();
        self.finish_number(kind)
    }

    /// Consumes an optional `l`/`L`.
    fn integer_suffix(&mut self) {
        if matches!(self.peek_char(), Some('l' | 'L')) {
            self.pos += 1;
        }
    }

    /// Consumes an optional Java float suffix; reports whether there was one.
    fn float_suffix(&mut self) -> bool {
        if matches!(self.peek_char(), Some('f' | 'F' | 'd' | 'D')) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Rejects `12abc`: a number must not run straight into a word.
    fn finish_number(&self, kind: TokenKind) -> Result<TokenKind, SelectorError> {
        match self.peek_char() {
            Some(c) if is_ident_part(c) || c == '.' => Err(self.error(
                self.pos,
                format!("unexpected `{c}` directly after a numeric literal"),
            )),
            _ => Ok(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn numeric_literal_forms_tokenize_to_their_values() {
        assert_eq!(kinds("57")[0], TokenKind::Decimal(57));
        assert_eq!(kinds("57L")[0], TokenKind::Decimal(57));
        assert_eq!(kinds("0x1F")[0], TokenKind::Long(31));
        assert_eq!(kinds("0X1fL")[0], TokenKind::Long(31));
        assert_eq!(kinds("017")[0], TokenKind::Long(15));
        assert_eq!(kinds("0")[0], TokenKind::Decimal(0));
        assert_eq!(kinds("00")[0], TokenKind::Long(0));
        assert_eq!(kinds("1.5")[0], TokenKind::Double(1.5));
        assert_eq!(kinds("1e3")[0], TokenKind::Double(1000.0));
        assert_eq!(kinds("1E-2")[0], TokenKind::Double(0.01));
        assert_eq!(kinds(".5")[0], TokenKind::Double(0.5));
        assert_eq!(kinds("5.")[0], TokenKind::Double(5.0));
        assert_eq!(kinds("5.e1")[0], TokenKind::Double(50.0));
        assert_eq!(kinds("2.5f")[0], TokenKind::Double(2.5));
        assert_eq!(kinds("2.5D")[0], TokenKind::Double(2.5));
        assert_eq!(kinds("09.5")[0], TokenKind::Double(9.5));
        assert_eq!(
            kinds("9223372036854775808")[0],
            TokenKind::Decimal(I64_MIN_MAGNITUDE)
        );
        assert_eq!(
            kinds("99999999999999999999")[0],
            TokenKind::Double(99999999999999999999.0)
        );
    }

    #[test]
    fn bad_numeric_literals_are_rejected_with_positions() {
        for (text, position) in [
            ("a = 09", 4),
            ("0x", 0),
            ("1e", 1),
            ("12abc", 2),
            ("0x8000000000000000", 0),
        ] {
            match tokenize(text) {
                Err(SelectorError::Syntax { position: p, .. }) => assert_eq!(p, position, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn doubled_quotes_collapse_and_keywords_ignore_case() {
        assert_eq!(kinds("'it''s'")[0], TokenKind::Str("it's".to_owned()));
        assert_eq!(kinds("''''")[0], TokenKind::Str("'".to_owned()));
        assert_eq!(kinds("''")[0], TokenKind::Str(String::new()));
        assert_eq!(kinds("aNd")[0], TokenKind::And);
        assert_eq!(kinds("Null")[0], TokenKind::Null);
        assert_eq!(kinds("JMSType")[0], TokenKind::Ident("JMSType".to_owned()));
        assert_eq!(kinds("$a_1")[0], TokenKind::Ident("$a_1".to_owned()));
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(
            kinds("a /* x */ = -- y\n 1"),
            vec![
                TokenKind::Ident("a".to_owned()),
                TokenKind::Eq,
                TokenKind::Decimal(1),
                TokenKind::End
            ]
        );
        assert!(tokenize("a /* open").is_err());
    }

    #[test]
    fn error_positions_count_characters_not_bytes() {
        match tokenize("'é' = 'x") {
            Err(SelectorError::Syntax { position, .. }) => assert_eq!(position, 6),
            other => panic!("{other:?}"),
        }
    }
}
