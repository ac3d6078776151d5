//! Typed property values and where the selector reads them from.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// A typed property value as the selector sees it.
///
/// JMS `byte`, `short`, `int` and `long` properties all map to [`Value::Long`];
/// `float` and `double` map to [`Value::Double`]. STOMP headers arrive as
/// [`Value::String`]; see the crate docs for how they meet numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A JMS `boolean`.
    Bool(bool),
    /// An exact numeric (JMS `byte`, `short`, `int`, `long`).
    Long(i64),
    /// An approximate numeric (JMS `float`, `double`).
    Double(f64),
    /// A JMS `String`, or any STOMP header.
    String(String),
}

impl From<bool> for Value {
    /// Wraps a boolean.
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<i64> for Value {
    /// Wraps an exact numeric.
    fn from(value: i64) -> Self {
        Value::Long(value)
    }
}

impl From<i32> for Value {
    /// Widens a JMS `int` to an exact numeric.
    fn from(value: i32) -> Self {
        Value::Long(i64::from(value))
    }
}

impl From<f64> for Value {
    /// Wraps an approximate numeric.
    fn from(value: f64) -> Self {
        Value::Double(value)
    }
}

impl From<&str> for Value {
    /// Copies a string.
    fn from(value: &str) -> Self {
        Value::String(value.to_owned())
    }
}

impl From<String> for Value {
    /// Wraps a string.
    fn from(value: String) -> Self {
        Value::String(value)
    }
}

/// Where the selector reads identifiers from (message headers / JMS fields).
///
/// The broker implements this over its message type so that evaluation reads
/// only the properties a selector names, without building a map per message.
pub trait PropertySource {
    /// The value of an identifier, or None if the message does not have it (SQL NULL).
    fn property(&self, name: &str) -> Option<Value>;
}

impl<S: BuildHasher> PropertySource for HashMap<String, Value, S> {
    fn property(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

impl PropertySource for BTreeMap<String, Value> {
    fn property(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

/// A literal list of `(name, value)` pairs, convenient in tests:
/// `selector.matches(&[("color", Value::from("red"))])`.
/// Lookup is linear, which is fine for a handful of entries.
impl<const N: usize> PropertySource for [(&str, Value); N] {
    fn property(&self, name: &str) -> Option<Value> {
        self.as_slice().property(name)
    }
}

/// Like the array form, for lists built at run time.
impl PropertySource for Vec<(&str, Value)> {
    fn property(&self, name: &str) -> Option<Value> {
        self.as_slice().property(name)
    }
}

/// A borrowed list of pairs; the first entry with a matching name wins.
impl PropertySource for &[(&str, Value)] {
    fn property(&self, name: &str) -> Option<Value> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    }
}

/// A message with no properties at all: every identifier is NULL.
impl PropertySource for () {
    fn property(&self, _name: &str) -> Option<Value> {
        None
    }
}
