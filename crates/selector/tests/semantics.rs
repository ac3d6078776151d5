//! Evaluation semantics: operators, precedence, three-valued logic, NULLs,
//! coercion and literals.

use std::collections::HashMap;

use ferromq_selector::{PropertySource, Selector, Value};

fn selector(text: &str) -> Selector {
    match Selector::parse(text) {
        Ok(selector) => selector,
        Err(error) => panic!("{text:?} should parse: {error}"),
    }
}

/// The three-valued result of `text` against `props`: `Some(true)` for TRUE,
/// `Some(false)` for FALSE, `None` for UNKNOWN (neither the condition nor its
/// negation matches).
fn truth(text: &str, props: &[(&str, Value)]) -> Option<bool> {
    let positive = selector(text).matches(&props);
    // The newline keeps a trailing `--` comment from swallowing the `)`.
    let negative = selector(&format!("NOT ({text}\n)")).matches(&props);
    assert!(!(positive && negative), "{text:?} is both TRUE and FALSE");
    match (positive, negative) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

fn is_true(text: &str, props: &[(&str, Value)]) -> bool {
    truth(text, props) == Some(true)
}

const NONE: &[(&str, Value)] = &[];

#[test]
fn equality_and_inequality_on_each_type() {
    let props = [
        ("s", Value::from("red")),
        ("n", Value::Long(5)),
        ("d", Value::Double(2.5)),
        ("b", Value::Bool(true)),
    ];
    assert_eq!(truth("s = 'red'", &props), Some(true));
    assert_eq!(
        truth("s = 'Red'", &props),
        Some(false),
        "strings are case-sensitive"
    );
    assert_eq!(truth("s <> 'blue'", &props), Some(true));
    assert_eq!(truth("n = 5", &props), Some(true));
    assert_eq!(truth("n <> 5", &props), Some(false));
    assert_eq!(truth("d = 2.5", &props), Some(true));
    assert_eq!(
        truth("n = 5.0", &props),
        Some(true),
        "long vs double compares numerically"
    );
    assert_eq!(truth("b = TRUE", &props), Some(true));
    assert_eq!(truth("b <> FALSE", &props), Some(true));
}

#[test]
fn ordering_comparisons_on_numbers() {
    let props = [("n", Value::Long(5)), ("d", Value::Double(2.5))];
    for (text, expected) in [
        ("n < 6", true),
        ("n < 5", false),
        ("n <= 5", true),
        ("n <= 4", false),
        ("n > 4", true),
        ("n > 5", false),
        ("n >= 5", true),
        ("n >= 6", false),
        ("d < n", true),
        ("d > 2", true),
        ("d >= 2.5", true),
        ("n > 4.99", true),
    ] {
        assert_eq!(truth(text, &props), Some(expected), "{text}");
    }
}

#[test]
fn strings_order_lexicographically_as_activemq_allows() {
    let props = [("s", Value::from("banana"))];
    assert_eq!(truth("s > 'apple'", &props), Some(true));
    assert_eq!(truth("s < 'cherry'", &props), Some(true));
    assert_eq!(truth("s < 'apple'", &props), Some(false));
    assert_eq!(truth("s >= 'banana'", &props), Some(true));
}

#[test]
fn booleans_only_support_equality() {
    let props = [("b", Value::Bool(true)), ("c", Value::Bool(false))];
    assert_eq!(truth("b = c", &props), Some(false));
    assert_eq!(
        truth("b > c", &props),
        Some(false),
        "ordering booleans is FALSE"
    );
}

#[test]
fn non_like_types_compare_false_except_not_equal() {
    let props = [("b", Value::Bool(true)), ("n", Value::Long(1))];
    assert_eq!(truth("b = n", &props), Some(false));
    assert_eq!(truth("b <> n", &props), Some(true));
    assert_eq!(truth("b < n", &props), Some(false));
}

#[test]
fn and_binds_tighter_than_or() {
    let props = [
        ("a", Value::Bool(true)),
        ("b", Value::Bool(false)),
        ("c", Value::Bool(false)),
    ];
    // a OR (b AND c) is TRUE; (a OR b) AND c would be FALSE.
    assert!(is_true("a OR b AND c", &props));
    assert!(!is_true("(a OR b) AND c", &props));
    // c AND b OR a is (c AND b) OR a.
    assert!(is_true("c AND b OR a", &props));
}

#[test]
fn not_binds_looser_than_comparison_and_tighter_than_and() {
    let props = [("n", Value::Long(1)), ("f", Value::Bool(false))];
    assert!(is_true("NOT n = 2", &props));
    assert!(!is_true("NOT n = 1", &props));
    // (NOT f) AND n = 1, not NOT (f AND n = 1) (which would also be TRUE), so
    // use OR to tell them apart: (NOT f) OR ... vs NOT (f OR n = 1).
    assert!(is_true("NOT f OR n = 1", &props));
    assert!(!is_true("NOT (f OR n = 1)", &props));
    assert!(is_true("NOT NOT n = 1", &props));
}

#[test]
fn arithmetic_precedence_and_associativity() {
    for text in [
        "1 + 2 * 3 = 7",
        "(1 + 2) * 3 = 9",
        "10 - 4 - 3 = 3",
        "8 / 4 / 2 = 1",
        "-2 * 3 = -6",
        "- (2 + 3) = -5",
        "2 * -3 = -6",
        "+4 = 4",
        "7 % 3 = 1",
        "1 + 6 % 4 = 3",
        "- - 5 = 5",
    ] {
        assert!(is_true(text, NONE), "{text}");
    }
}

#[test]
fn arithmetic_promotes_to_double() {
    let props = [("a", Value::Long(7)), ("x", Value::Double(0.5))];
    assert!(is_true("a / 2 = 3.5", &props), "division is always double");
    assert!(is_true("a + x = 7.5", &props));
    assert!(is_true("a * 2 = 14", &props));
    assert!(is_true("a - x > 6", &props));
    assert!(is_true("-a = -7", &props));
    assert!(is_true("-x = -0.5", &props));
}

#[test]
fn long_overflow_promotes_instead_of_wrapping() {
    assert!(is_true(
        "9223372036854775807 + 1 > 9223372036854775807",
        NONE
    ));
    // Wrapping would make this i64::MAX; promotion keeps it negative (the
    // double rounds to -2^63, so it is not strictly below i64::MIN).
    assert!(is_true("-9223372036854775808 - 1 < 0", NONE));
    assert!(is_true("9223372036854775807 * 2 > 0", NONE));
    let props = [("m", Value::Long(i64::MIN))];
    assert!(is_true("-m > 0", &props), "negating i64::MIN must not wrap");
}

#[test]
fn division_or_remainder_by_zero_is_unknown() {
    let props = [
        ("a", Value::Long(7)),
        ("z", Value::Long(0)),
        ("zd", Value::Double(0.0)),
    ];
    assert_eq!(truth("a / z > 0", &props), None);
    assert_eq!(truth("a / zd > 0", &props), None);
    assert_eq!(truth("a % z = 0", &props), None);
    assert_eq!(truth("a / 0 = 1 OR TRUE", &props), Some(true));
}

#[test]
fn long_and_double_compare_exactly() {
    // 2^53 + 1 is not representable as a double.
    let props = [("d", Value::Double(9_007_199_254_740_992.0))];
    assert_eq!(truth("d = 9007199254740993", &props), Some(false));
    assert_eq!(truth("d < 9007199254740993", &props), Some(true));
    assert_eq!(truth("d = 9007199254740992", &props), Some(true));
}

#[test]
fn missing_property_is_null_and_comparisons_are_unknown() {
    for text in [
        "missing = 1",
        "missing <> 1",
        "missing < 1",
        "missing = 'x'",
        "missing + 1 = 2",
        "-missing = 1",
        "missing",
        "1 = missing",
    ] {
        assert_eq!(truth(text, NONE), None, "{text}");
    }
    assert!(!selector("missing <> 'x'").matches(&()));
}

#[test]
fn three_valued_and_or_not_tables() {
    let props = [("t", Value::Bool(true)), ("f", Value::Bool(false))];
    // `u` is missing, hence UNKNOWN.
    let cases = [
        ("t AND t", Some(true)),
        ("t AND f", Some(false)),
        ("t AND u", None),
        ("f AND u", Some(false)),
        ("u AND f", Some(false)),
        ("u AND u", None),
        ("t OR u", Some(true)),
        ("u OR t", Some(true)),
        ("f OR u", None),
        ("f OR f", Some(false)),
        ("u OR u", None),
        ("NOT u", None),
        ("NOT t", Some(false)),
        ("NOT f", Some(true)),
    ];
    for (text, expected) in cases {
        assert_eq!(truth(text, &props), expected, "{text}");
    }
}

#[test]
fn is_null_and_is_not_null() {
    let props = [("a", Value::Long(1))];
    assert_eq!(truth("a IS NULL", &props), Some(false));
    assert_eq!(truth("a IS NOT NULL", &props), Some(true));
    assert_eq!(truth("b IS NULL", &props), Some(true));
    assert_eq!(truth("b IS NOT NULL", &props), Some(false));
    assert_eq!(truth("b + 1 IS NULL", &props), Some(true));
    assert_eq!(truth("NULL IS NULL", &props), Some(true));
    assert!(is_true("b IS NULL OR b <> 'x'", &props));
}

#[test]
fn like_with_percent_underscore_and_escape() {
    let props = [
        ("price", Value::from("100%")),
        ("word", Value::from("lose")),
        ("path", Value::from("a_b")),
    ];
    assert!(is_true(r"price LIKE '100\%' ESCAPE '\'", &props));
    assert_eq!(
        truth(r"'1000' LIKE '100\%' ESCAPE '\'", &props),
        Some(false)
    );
    assert!(is_true("price LIKE '100%'", &props));
    assert!(is_true("word LIKE 'l_se'", &props));
    assert_eq!(truth("word LIKE 'l_ose'", &props), Some(false));
    assert!(is_true("word NOT LIKE 'x%'", &props));
    assert!(is_true("path LIKE 'a!_b' ESCAPE '!'", &props));
    assert_eq!(truth("'axb' LIKE 'a!_b' ESCAPE '!'", &props), Some(false));
    assert!(is_true("word LIKE '%'", &props));
    assert!(is_true("word like 'LO%' OR word LIKE 'lo%'", &props));
    assert_eq!(
        truth("word LIKE 'LO%'", &props),
        Some(false),
        "LIKE is case-sensitive"
    );
}

#[test]
fn like_on_null_is_unknown_and_on_non_string_is_false() {
    let props = [("n", Value::Long(5))];
    assert_eq!(truth("missing LIKE '%'", &props), None);
    assert_eq!(truth("missing NOT LIKE '%'", &props), None);
    assert_eq!(truth("n LIKE '5'", &props), Some(false));
    assert_eq!(truth("n NOT LIKE '5'", &props), Some(true));
}

#[test]
fn in_and_not_in_including_null() {
    let props = [("c", Value::from("red")), ("n", Value::Long(1))];
    assert_eq!(truth("c IN ('red', 'green')", &props), Some(true));
    assert_eq!(truth("c IN ('blue')", &props), Some(false));
    assert_eq!(truth("c NOT IN ('blue', 'green')", &props), Some(true));
    assert_eq!(truth("c NOT IN ('red')", &props), Some(false));
    assert_eq!(truth("missing IN ('red')", &props), None);
    assert_eq!(truth("missing NOT IN ('red')", &props), None);
    assert_eq!(
        truth("n IN ('1')", &props),
        None,
        "IN on a non-string is UNKNOWN"
    );
    let many: Vec<String> = (0..100).map(|i| format!("'v{i}'")).collect();
    let text = format!("c IN ({}, 'red')", many.join(", "));
    assert_eq!(truth(&text, &props), Some(true));
}

#[test]
fn between_and_not_between() {
    let props = [("n", Value::Long(5)), ("s", Value::from("m"))];
    for (text, expected) in [
        ("n BETWEEN 1 AND 10", Some(true)),
        ("n BETWEEN 5 AND 5", Some(true)),
        ("n BETWEEN 6 AND 10", Some(false)),
        ("n BETWEEN 4.5 AND 5.5", Some(true)),
        ("n NOT BETWEEN 1 AND 4", Some(true)),
        ("n NOT BETWEEN 5 AND 10", Some(false)),
        ("n BETWEEN 1 + 3 AND 2 * 3", Some(true)),
        ("missing BETWEEN 1 AND 10", None),
        ("missing NOT BETWEEN 1 AND 10", None),
        ("n BETWEEN missing AND 10", None),
        ("n BETWEEN missing AND 4", Some(false)),
        ("n NOT BETWEEN missing AND 4", Some(true)),
        ("s BETWEEN 'a' AND 'z'", Some(true)),
        ("n BETWEEN 1 AND 10 AND s = 'm'", Some(true)),
    ] {
        assert_eq!(truth(text, &props), expected, "{text}");
    }
}

#[test]
fn stomp_string_headers_coerce_to_numbers() {
    let props = [
        ("priority", Value::from("5")),
        ("ratio", Value::from("2.5")),
        ("name", Value::from("abc")),
        ("count", Value::Long(5)),
    ];
    assert_eq!(truth("priority > 3", &props), Some(true));
    assert_eq!(truth("priority = 5", &props), Some(true));
    assert_eq!(truth("priority <> 5", &props), Some(false));
    assert_eq!(truth("priority = 5.0", &props), Some(true));
    assert_eq!(truth("priority < 3", &props), Some(false));
    assert_eq!(truth("ratio < 3", &props), Some(true));
    assert_eq!(truth("priority BETWEEN 1 AND 9", &props), Some(true));
    assert_eq!(truth("priority + 1 = 6", &props), Some(true));
    assert_eq!(truth("-priority = -5", &props), Some(true));
    assert_eq!(truth("count = '5'", &props), Some(true));
    assert_eq!(truth("'7' > count", &props), Some(true));
    // Unparseable strings make the comparison UNKNOWN, not FALSE.
    assert_eq!(truth("name > 3", &props), None);
    assert_eq!(truth("name = 3", &props), None);
    assert_eq!(truth("name <> 3", &props), None);
    assert_eq!(truth("name + 1 = 1", &props), None);
    // Two strings still compare as strings.
    assert_eq!(truth("priority = '5.0'", &props), Some(false));
}

#[test]
fn stomp_string_headers_coerce_to_booleans() {
    let props = [
        ("urgent", Value::from("TRUE")),
        ("quiet", Value::from("false")),
        ("other", Value::from("yes")),
        ("flag", Value::Bool(true)),
        ("n", Value::Long(1)),
    ];
    assert_eq!(truth("urgent = TRUE", &props), Some(true));
    assert_eq!(truth("quiet = FALSE", &props), Some(true));
    assert_eq!(truth("urgent", &props), Some(true));
    assert_eq!(truth("quiet", &props), Some(false));
    assert_eq!(truth("other", &props), None);
    assert_eq!(truth("other = TRUE", &props), None);
    assert_eq!(truth("flag", &props), Some(true));
    assert_eq!(
        truth("n", &props),
        Some(false),
        "a number as a condition is FALSE"
    );
}

#[test]
fn exact_and_approximate_literal_forms() {
    for (text, value) in [
        ("a = 0x1F", Value::Long(31)),
        ("a = 0X1f", Value::Long(31)),
        ("a = 017", Value::Long(15)),
        ("a = 0", Value::Long(0)),
        ("a = 10L", Value::Long(10)),
        ("a = 1e3", Value::Long(1000)),
        ("a = 1E+3", Value::Double(1000.0)),
        ("a = 15e-1", Value::Double(1.5)),
        ("a = .5", Value::Double(0.5)),
        ("a = 5.", Value::Long(5)),
        ("a = 2.5f", Value::Double(2.5)),
        ("a = 2.5d", Value::Double(2.5)),
        ("a = -9223372036854775808", Value::Long(i64::MIN)),
        ("a = 9223372036854775807", Value::Long(i64::MAX)),
        ("a = -0x10", Value::Long(-16)),
    ] {
        let props = [("a", value.clone())];
        assert_eq!(truth(text, &props), Some(true), "{text} with {value:?}");
    }
    assert_eq!(truth("a = 0x1F", &[("a", Value::Long(30))]), Some(false));
}

#[test]
fn quotes_inside_string_literals() {
    let props = [("a", Value::from("it's")), ("q", Value::from("'"))];
    assert!(is_true("a = 'it''s'", &props));
    assert!(is_true("q = ''''", &props));
    assert!(is_true("'' = ''", &props));
    assert!(is_true("a LIKE '%''s'", &props));
}

#[test]
fn keywords_are_case_insensitive() {
    let props = [("a", Value::Long(2)), ("s", Value::from("x"))];
    for text in [
        "a between 1 and 3",
        "a BeTwEeN 1 AnD 3 aNd s iS nOt NuLl",
        "s in ('x') or false",
        "s NOT like 'y%' escape '!'",
        "not FALSE",
        "True",
        "missing is null",
    ] {
        assert!(is_true(text, &props), "{text}");
    }
}

#[test]
fn identifiers_follow_java_rules_and_are_case_sensitive() {
    let props = [
        ("JMSPriority", Value::Long(7)),
        ("JMSType", Value::from("car")),
        ("$dollar", Value::Long(1)),
        ("_under9", Value::Long(2)),
        ("größe", Value::Long(3)),
        ("ANDROID", Value::Long(4)),
    ];
    assert!(is_true("JMSPriority > 4 AND JMSType = 'car'", &props));
    assert_eq!(
        truth("jmspriority > 4", &props),
        None,
        "identifiers are case-sensitive"
    );
    assert!(is_true("$dollar = 1 AND _under9 = 2 AND größe = 3", &props));
    assert!(
        is_true("ANDROID = 4", &props),
        "a keyword prefix does not make a keyword"
    );
}

#[test]
fn hyphenated_names_parse_as_subtraction_like_activemq() {
    let props = [("content", Value::Long(10)), ("type", Value::Long(3))];
    assert!(is_true("content-type = 7", &props));
}

#[test]
fn comments_are_ignored() {
    let props = [("a", Value::Long(1))];
    assert!(is_true("a = 1 -- trailing comment", &props));
    assert!(is_true("a /* inline */ = 1", &props));
    assert!(is_true("/* leading */ a = 1", &props));
}

#[test]
fn empty_selector_matches_everything() {
    for text in ["", "   ", "\n\t", "/* just a comment */"] {
        let s = selector(text);
        assert!(s.is_match_all());
        assert!(s.matches(&()));
    }
    assert!(!selector("a = 1").is_match_all());
}

#[test]
fn as_str_and_display_return_the_original_text() {
    let text = "color  =  'red'  /* keep */";
    let s = selector(text);
    assert_eq!(s.as_str(), text);
    assert_eq!(s.to_string(), text);
    let parsed: Selector = text.parse().unwrap();
    assert_eq!(parsed.as_str(), text);
}

#[test]
fn hash_map_and_vec_sources_work() {
    let mut map: HashMap<String, Value> = HashMap::new();
    map.insert("a".to_owned(), Value::Long(3));
    assert!(selector("a = 3").matches(&map));
    assert!(!selector("a = 4").matches(&map));
    let list: Vec<(&str, Value)> = vec![("b", Value::from("x"))];
    assert!(selector("b = 'x'").matches(&list));
    assert_eq!(map.property("zzz"), None);
}

#[test]
fn equality_chains_follow_activemq_grouping() {
    let props = [("a", Value::Long(1)), ("b", Value::Long(2))];
    // (a < b) = TRUE
    assert!(is_true("a < b = TRUE", &props));
    // (a = 1) = (b = 2)
    assert!(is_true("a = 1 = (b = 2)", &props));
}
