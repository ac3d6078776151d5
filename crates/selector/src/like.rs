//! SQL `LIKE` patterns, compiled once at parse time and matched in
//! O(pattern × input) time.
//!
//! ActiveMQ translates patterns into `java.util.regex` with lazy `.*?`, which
//! can backtrack badly; the greedy single-backtrack-point wildcard algorithm
//! used here never revisits more than one `%` and is linear in practice.

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Matches exactly this character.
    Char(char),
    /// `_`: matches any one character.
    One,
    /// `%`: matches any run of characters, including none. Runs of `%` are
    /// collapsed into one at compile time.
    Many,
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LikePattern {
    pieces: Vec<Piece>,
}

impl LikePattern {
    /// Compiles `pattern`, where `escape` (if any) makes the following `%`,
    /// `_` or escape character literal.
    ///
    /// As in ActiveMQ, an escape character followed by anything else (or by
    /// nothing) stands for itself rather than being an error.
    pub(crate) fn compile(pattern: &str, escape: Option<char>) -> LikePattern {
        let mut pieces = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                if let Some(&next) = chars.peek() {
                    if next == '%' || next == '_' || Some(next) == escape {
                        chars.next();
                        pieces.push(Piece::Char(next));
                        continue;
                    }
                }
                pieces.push(Piece::Char(c));
                continue;
            }
            match c {
                '%' => {
                    if pieces.last() != Some(&Piece::Many) {
                        pieces.push(Piece::Many);
                    }
                }
                '_' => pieces.push(Piece::One),
                other => pieces.push(Piece::Char(other)),
            }
        }
        LikePattern { pieces }
    }

    /// Whether `input` matches the whole pattern. `_` matches one Unicode
    /// scalar value (Java matches one UTF-16 unit; they differ only for
    /// characters outside the Basic Multilingual Plane).
    pub(crate) fn matches(&self, input: &str) -> bool {
        let pieces = &self.pieces;
        let next_char = |at: usize| input.get(at..).and_then(|rest| rest.chars().next());
        let mut piece = 0;
        let mut at = 0;
        // Where to resume after the most recent `%`: the piece after it and
        // the input offset it has swallowed up to. Only the latest `%` needs
        // remembering, which is what keeps the matcher polynomial.
        let mut resume: Option<(usize, usize)> = None;
        loop {
            if let Some(current) = pieces.get(piece) {
                match current {
                    Piece::Many => {
                        resume = Some((piece + 1, at));
                        piece += 1;
                        continue;
                    }
                    Piece::One => {
                        if let Some(c) = next_char(at) {
                            at += c.len_utf8();
                            piece += 1;
                            continue;
                        }
                    }
                    Piece::Char(expected) => {
                        if let Some(c) = next_char(at).filter(|c| c == expected) {
                            at += c.len_utf8();
                            piece += 1;
                            continue;
                        }
                    }
                }
            } else if at == input.len() {
                return true;
            }
            // Mismatch (or pattern used up with input left): let the last `%`
            // swallow one more character and retry from just after it.
            let Some((resume_piece, swallowed_to)) = resume else {
                return false;
            };
            let Some(c) = next_char(swallowed_to) else {
                return false;
            };
            let swallowed_to = swallowed_to + c.len_utf8();
            resume = Some((resume_piece, swallowed_to));
            piece = resume_piece;
            at = swallowed_to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(pattern: &str, input: &str) -> bool {
        LikePattern::compile(pattern, None).matches(input)
    }

    #[test]
    fn percent_matches_any_run_including_empty() {
        assert!(like("12%3", "123"));
        assert!(like("12%3", "12993"));
        assert!(!like("12%3", "1234"));
        assert!(like("%", ""));
        assert!(like("%%", "abc"));
        assert!(like("a%b%c", "aXXbYYc"));
        assert!(!like("a%b%c", "aXXbYY"));
    }

    #[test]
    fn underscore_matches_exactly_one_character() {
        assert!(like("l_se", "lose"));
        assert!(!like("l_se", "loose"));
        assert!(!like("_", ""));
        assert!(like("_", "é"));
        assert!(like("__", "日本"));
    }

    #[test]
    fn escape_makes_wildcards_literal() {
        let pattern = LikePattern::compile("100\\%", Some('\\'));
        assert!(pattern.matches("100%"));
        assert!(!pattern.matches("1000"));
        let pattern = LikePattern::compile("\\_foo", Some('\\'));
        assert!(pattern.matches("_foo"));
        assert!(!pattern.matches("xfoo"));
        let pattern = LikePattern::compile("a\\\\b", Some('\\'));
        assert!(pattern.matches("a\\b"));
        // An escape before an ordinary character stands for itself.
        let pattern = LikePattern::compile("a\\b", Some('\\'));
        assert!(pattern.matches("a\\b"));
        let pattern = LikePattern::compile("a\\", Some('\\'));
        assert!(pattern.matches("a\\"));
    }

    #[test]
    fn pathological_pattern_finishes_quickly() {
        // Exponential matchers take ages on this; ours does ~n*m steps.
        let pattern = "%a".repeat(30) + "b";
        let input = "a".repeat(5_000);
        assert!(!like(&pattern, &input));
    }
}
