//! Parse errors name the right position, and hostile input hits the length
//! and depth limits instead of the stack.

use ferromq_selector::{Selector, SelectorError, Value, SELECTOR_BYTES_MAX, SELECTOR_DEPTH_MAX};

/// The position and message of a syntax error, failing the test otherwise.
fn syntax_error(text: &str) -> (usize, String) {
    match Selector::parse(text) {
        Err(SelectorError::Syntax { position, message }) => (position, message),
        other => panic!("{text:?} should be a syntax error, got {other:?}"),
    }
}

#[test]
fn missing_right_operand_points_at_the_end() {
    let (position, message) = syntax_error("a = ");
    assert_eq!(position, 4);
    assert!(message.contains("expected an expression"), "{message}");
    assert!(message.contains("end of selector"), "{message}");
}

#[test]
fn double_equals_points_at_the_second_equals() {
    let (position, message) = syntax_error("a == 1");
    assert_eq!(position, 3);
    assert!(message.contains("`=`"), "{message}");
}

#[test]
fn unclosed_quote_points_at_the_opening_quote() {
    let (position, message) = syntax_error("a = 'abc");
    assert_eq!(position, 4);
    assert!(message.contains("unterminated string"), "{message}");
}

#[test]
fn empty_in_list_points_at_the_closing_paren() {
    let (position, message) = syntax_error("a IN ()");
    assert_eq!(position, 6);
    assert!(message.contains("string literal"), "{message}");
}

#[test]
fn in_list_accepts_only_string_literals() {
    assert_eq!(syntax_error("a IN (1, 2)").0, 6);
    assert_eq!(syntax_error("a IN ('x' 'y')").0, 10);
    assert_eq!(syntax_error("a IN 'x'").0, 5);
}

#[test]
fn assorted_syntax_errors_have_positions() {
    for (text, position) in [
        ("", usize::MAX), // placeholder, skipped below
        ("a = 1 b", 6),
        ("(a = 1", 6),
        ("a = 1)", 5),
        ("a BETWEEN 1 OR 2", 12),
        ("a LIKE b", 7),
        ("a LIKE 'x' ESCAPE 'ab'", 18),
        ("a LIKE 'x' ESCAPE ''", 18),
        ("a IS 1", 5),
        ("a != 1", 2),
        ("a = \"x\"", 4),
        ("a = 1 AND", 9),
        ("NOT", 3),
        ("a = # 1", 4),
        ("a.b = 1", 1),
    ] {
        if text.is_empty() {
            continue;
        }
        assert_eq!(syntax_error(text).0, position, "{text:?}");
    }
}

#[test]
fn type_errors_are_caught_at_parse_time() {
    for (text, position) in [
        ("a + 1", 0),         // not a condition
        ("'x'", 0),           // not a condition
        ("a = 1 AND 2", 10),  // AND operand not boolean
        ("NOT 5", 4),         // NOT operand not boolean
        ("TRUE < 3", 0),      // ordering a boolean
        ("a > (b = 1)", 4),   // ordering a condition
        ("(a = 1) + 1", 0),   // arithmetic on a condition
        ("a = NULL", 4),      // use IS NULL
        ("NULL <> a", 0),     // use IS NOT NULL
        ("a = NOT b", 4),     // NOT inside a comparison
        ("XPATH '//x'", 0),   // unsupported extension
        ("TRUE LIKE 'x'", 0), // LIKE on a condition
    ] {
        assert_eq!(syntax_error(text).0, position, "{text:?}");
    }
}

#[test]
fn error_positions_are_character_indexes() {
    // `é` is two bytes but one character.
    assert_eq!(syntax_error("'é' = = 1").0, 6);
}

#[test]
fn selectors_over_the_length_limit_are_too_long() {
    let text = format!("a = '{}'", "x".repeat(SELECTOR_BYTES_MAX));
    assert_eq!(
        Selector::parse(&text).unwrap_err(),
        SelectorError::TooLong {
            length_bytes: text.len(),
            length_bytes_max: SELECTOR_BYTES_MAX
        }
    );
    // Exactly at the limit is still accepted.
    let padding = SELECTOR_BYTES_MAX - "a = ''".len();
    let text = format!("a = '{}'", "x".repeat(padding));
    assert_eq!(text.len(), SELECTOR_BYTES_MAX);
    let selector = Selector::parse(&text).unwrap();
    assert!(selector.matches(&[("a", Value::String("x".repeat(padding)))]));
}

fn assert_too_deep(text: &str) {
    match Selector::parse(text) {
        Err(SelectorError::TooDeep { depth_max, .. }) => assert_eq!(depth_max, SELECTOR_DEPTH_MAX),
        other => panic!("expected TooDeep, got {other:?}"),
    }
}

#[test]
fn hundred_thousand_open_parens_are_refused_without_stack_overflow() {
    // 100k bytes trips the length limit before any parsing happens...
    assert!(matches!(
        Selector::parse(&"(".repeat(100_000)),
        Err(SelectorError::TooLong { .. })
    ));
    // ...so the deepest hostile input that reaches the parser is ~64k parens.
    assert_too_deep(&"(".repeat(SELECTOR_BYTES_MAX));
    assert_too_deep(&format!(
        "{}a = 1{}",
        "(".repeat(30_000),
        ")".repeat(30_000)
    ));
}

#[test]
fn long_prefix_operator_chains_are_too_deep() {
    assert_too_deep(&format!("{}a", "NOT ".repeat(16_000)));
    assert_too_deep(&format!("{}1 = 1", "- ".repeat(30_000)));
    assert_too_deep(&format!("{}1 = 1", "+".repeat(SELECTOR_BYTES_MAX - 5)));
}

#[test]
fn long_arithmetic_and_comparison_chains_are_too_deep() {
    assert_too_deep(&format!("a{} = 1", " + a".repeat(10_000)));
    assert_too_deep(&format!("a{}", " = TRUE".repeat(9_000)));
}

#[test]
fn nesting_just_under_the_limit_parses_and_evaluates() {
    // Each paren level and the comparison itself count; stay just inside.
    let depth = SELECTOR_DEPTH_MAX - 2;
    let text = format!("{}a = 1{}", "(".repeat(depth), ")".repeat(depth));
    let selector = Selector::parse(&text).unwrap();
    assert!(selector.matches(&[("a", Value::Long(1))]));
    let text = format!(
        "{}a = 1{}",
        "(".repeat(SELECTOR_DEPTH_MAX + 1),
        ")".repeat(SELECTOR_DEPTH_MAX + 1)
    );
    assert_too_deep(&text);
}

#[test]
fn long_or_chains_do_not_count_as_depth() {
    // A realistic long list of alternatives must not trip the depth limit.
    let terms: Vec<String> = (0..4_000).map(|i| format!("id = {i}")).collect();
    let text = terms.join(" OR ");
    let selector = Selector::parse(&text).unwrap();
    assert!(selector.matches(&[("id", Value::Long(3_999))]));
    assert!(!selector.matches(&[("id", Value::Long(4_000))]));
    let text = terms.join(" AND ");
    assert!(Selector::parse(&text).is_ok());
}
