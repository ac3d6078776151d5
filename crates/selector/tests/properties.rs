//! Property tests: the parser never panics, and LIKE agrees with a naive
//! reference matcher.

use ferromq_selector::{Selector, Value};
use proptest::prelude::*;

/// Naive recursive LIKE over chars with ActiveMQ's escape rule (the escape
/// only escapes `%`, `_` or itself). Exponential in the worst case, so only
/// used on short inputs.
fn reference_like(pattern: &[char], input: &[char], escape: Option<char>) -> bool {
    match pattern.split_first() {
        None => input.is_empty(),
        Some((&c, rest)) if Some(c) == escape => match rest.split_first() {
            Some((&next, after)) if next == '%' || next == '_' || Some(next) == escape => {
                input.first() == Some(&next) && reference_like(after, &input[1..], escape)
            }
            _ => input.first() == Some(&c) && reference_like(rest, &input[1..], escape),
        },
        Some(('%', rest)) => {
            (0..=input.len()).any(|skip| reference_like(rest, &input[skip..], escape))
        }
        Some(('_', rest)) => !input.is_empty() && reference_like(rest, &input[1..], escape),
        Some((&c, rest)) => input.first() == Some(&c) && reference_like(rest, &input[1..], escape),
    }
}

fn selector_like(pattern: &str, input: &str, escape: bool) -> bool {
    let text = if escape {
        format!("s LIKE '{pattern}' ESCAPE '!'")
    } else {
        format!("s LIKE '{pattern}'")
    };
    let selector = Selector::parse(&text).unwrap();
    selector.matches(&[("s", Value::from(input))])
}

const TOKENS: &[&str] = &[
    "a", "b", "JMSType", "1", "2.5", "0x1F", "017", "'x'", "''''", "(", ")", "=", "<>", "<", "<=",
    ">", ">=", "+", "-", "*", "/", "%", "AND", "OR", "NOT", "BETWEEN", "LIKE", "ESCAPE", "IN",
    "IS", "NULL", "TRUE", "FALSE", ",", "--", "/*", "*/", "'", "1e", ".",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = Selector::parse(&text);
    }

    #[test]
    fn parse_and_match_never_panic_on_token_soup(
        picks in proptest::collection::vec(0..TOKENS.len(), 0..24),
        a in any::<i64>(),
        b in any::<f64>(),
    ) {
        let text: Vec<&str> = picks.iter().map(|&i| TOKENS[i]).collect();
        let text = text.join(" ");
        if let Ok(selector) = Selector::parse(&text) {
            let props = [
                ("a", Value::Long(a)),
                ("b", Value::Double(b)),
                ("JMSType", Value::from("x")),
            ];
            let _ = selector.matches(&props);
            let _ = selector.matches(&());
        }
    }

    #[test]
    fn like_agrees_with_reference(
        pattern in "[ab%_!]{0,8}",
        input in "[ab%_!]{0,10}",
        escape in any::<bool>(),
    ) {
        let pattern_chars: Vec<char> = pattern.chars().collect();
        let input_chars: Vec<char> = input.chars().collect();
        let expected = reference_like(&pattern_chars, &input_chars, escape.then_some('!'));
        prop_assert_eq!(selector_like(&pattern, &input, escape), expected);
    }

    #[test]
    fn long_comparisons_agree_with_rust(a in any::<i64>(), b in any::<i64>()) {
        let props = [("a", Value::Long(a)), ("b", Value::Long(b))];
        prop_assert_eq!(Selector::parse("a < b").unwrap().matches(&props), a < b);
        prop_assert_eq!(Selector::parse("a = b").unwrap().matches(&props), a == b);
        prop_assert_eq!(Selector::parse("a >= b").unwrap().matches(&props), a >= b);
    }

    #[test]
    fn stomp_string_numbers_compare_like_numbers(a in any::<i64>(), b in any::<i64>()) {
        let props = [("a", Value::String(a.to_string())), ("b", Value::Long(b))];
        prop_assert_eq!(Selector::parse("a < b").unwrap().matches(&props), a < b);
        prop_assert_eq!(Selector::parse("a = b").unwrap().matches(&props), a == b);
    }
}
