//! Field-by-field validation of JSON bodies, collecting every problem at once so that a
//! 422 names all the fields at fault (serde stops at the first).

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// One field at fault, as sent in a 422's `errors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Whether a field must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
}
pub use Presence::{Optional, Required};

/// Reads typed fields out of one JSON object.
pub struct Fields<'a> {
    prefix: String,
    object: &'a Map<String, Value>,
    seen: Vec<&'static str>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// `value` must be an object.
    pub fn new(value: &'a Value) -> Result<Self, Vec<FieldError>> {
        Self::nested(String::new(), value)
    }

    fn nested(prefix: String, value: &'a Value) -> Result<Self, Vec<FieldError>> {
        match value {
            Value::Object(object) => Ok(Fields {
                prefix,
                object,
                seen: Vec::new(),
                errors: Vec::new(),
            }),
            _ => {
                let field = if prefix.is_empty() {
                    "body".to_owned()
                } else {
                    prefix.trim_end_matches('.').to_owned()
                };
                Err(vec![FieldError::new(field, "must be a JSON object")])
            }
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn fail(&mut self, name: &str, message: impl Into<String>) {
        let field = self.path(name);
        self.errors.push(FieldError::new(field, message));
    }

    /// The raw value; `None` when absent (an error if required) or null.
    fn raw(&mut self, name: &'static str, presence: Presence) -> Option<&'a Value> {
        self.seen.push(name);
        match self.object.get(name) {
            None if presence == Required => {
                self.fail(name, "is required");
                None
            }
            Some(Value::Null) if presence == Required => {
                self.fail(name, "must not be null");
                None
            }
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A string of `len` characters, trimmed of nothing: what was sent is what is kept.
    pub fn string(
        &mut self,
        name: &'static str,
        presence: Presence,
        len: RangeInclusive<usize>,
    ) -> Option<String> {
        let value = self.raw(name, presence)?;
        let Some(s) = value.as_str() else {
            self.fail(name, "must be a string");
            return None;
        };
        let n = s.chars().count();
        if !len.contains(&n) {
            self.fail(
                name,
                format!("must be {} to {} characters long", len.start(), len.end()),
            );
            return None;
        }
        if s.chars().any(char::is_control) {
            self.fail(name, "must not contain control characters");
            return None;
        }
        Some(s.to_owned())
    }

    /// An integer within `range`.
    pub fn int(
        &mut self,
        name: &'static str,
        presence: Presence,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let value = self.raw(name, presence)?;
        let Some(n) = value.as_i64() else {
            self.fail(name, "must be an integer");
            return None;
        };
        if !range.contains(&n) {
            self.fail(
                name,
                format!("must be between {} and {}", range.start(), range.end()),
            );
            return None;
        }
        Some(n)
    }

    pub fn bool(&mut self, name: &'static str, presence: Presence) -> Option<bool> {
        let value = self.raw(name, presence)?;
        let b = value.as_bool();
        if b.is_none() {
            self.fail(name, "must be true or false");
        }
        b
    }

    /// An RFC 3339 timestamp.
    pub fn timestamp(&mut self, name: &'static str, presence: Presence) -> Option<DateTime<Utc>> {
        let value = self.raw(name, presence)?;
        match value.as_str().map(DateTime::parse_from_rfc3339) {
            Some(Ok(t)) => Some(t.with_timezone(&Utc)),
            _ => {
                self.fail(
                    name,
                    "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z",
                );
                None
            }
        }
    }

    /// A non-empty array of strings, each one of `allowed`; duplicates are dropped.
    pub fn string_set(
        &mut self,
        name: &'static str,
        presence: Presence,
        allowed: &[&str],
    ) -> Option<Vec<String>> {
        let value = self.raw(name, presence)?;
        let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
            self.fail(name, "must be a non-empty array of strings");
            return None;
        };
        let mut out: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            match item.as_str() {
                Some(s) if allowed.contains(&s) => {
                    if !out.iter().any(|o| o == s) {
                        out.push(s.to_owned());
                    }
                }
                _ => {
                    self.fail(name, format!("each must be one of: {}", allowed.join(", ")));
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A nested object, read by `read` with its own `Fields`.
    pub fn object<T>(
        &mut self,
        name: &'static str,
        presence: Presence,
        read: impl FnOnce(&mut Fields<'a>) -> Option<T>,
    ) -> Option<T> {
        let value = self.raw(name, presence)?;
        match Fields::nested(format!("{}.", self.path(name)), value) {
            Ok(mut inner) => {
                let out = read(&mut inner);
                let inner_errors = inner.into_errors();
                let ok = inner_errors.is_empty();
                self.errors.extend(inner_errors);
                if ok {
                    out
                } else {
                    None
                }
            }
            Err(errors) => {
                self.errors.extend(errors);
                None
            }
        }
    }

    /// Whether `name` was sent at all (PATCH: absent leaves a field alone).
    pub fn present(&self, name: &str) -> bool {
        self.object.contains_key(name)
    }

    /// Whether `name` was sent as `null`.
    pub fn is_null(&self, name: &str) -> bool {
        self.object.get(name).is_some_and(Value::is_null)
    }

    /// Adds a rule that spans fields.
    pub fn check(&mut self, ok: bool, name: &'static str, message: &str) {
        if !ok {
            self.fail(name, message);
        }
    }

    fn into_errors(mut self) -> Vec<FieldError> {
        let mut unknown: Vec<&String> = self
            .object
            .keys()
            .filter(|k| !self.seen.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            let field = self.path(key);
            self.errors
                .push(FieldError::new(field, "is not a known field"));
        }
        self.errors
    }

    /// Every error found, unknown fields included; `Ok` when there are none.
    pub fn finish(self) -> Result<(), Vec<FieldError>> {
        let errors = self.into_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_problem_with_its_path() {
        let body =
            json!({"quantity": 0, "name": 5, "extra": true, "consent": {"marketing": "yes"}});
        let mut f = Fields::new(&body).unwrap();
        assert_eq!(f.int("quantity", Required, 1..=100), None);
        assert_eq!(f.string("name", Required, 1..=10), None);
        assert_eq!(f.string("sku", Required, 1..=10), None);
        let consent = f.object("consent", Required, |c| {
            let terms = c.string("terms_version", Required, 1..=5);
            let marketing = c.bool("marketing", Required);
            Some((terms?, marketing?))
        });
        assert_eq!(consent, None);
        let fields: Vec<String> = f
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "quantity",
                "name",
                "sku",
                "consent.terms_version",
                "consent.marketing",
                "extra"
            ]
        );
    }

    #[test]
    fn accepts_good_values() {
        let body = json!({"n": 3, "s": "abc", "t": "2026-01-01T00:00:00+02:00", "o": null});
        let mut f = Fields::new(&body).unwrap();
        assert_eq!(f.int("n", Required, 1..=3), Some(3));
        assert_eq!(f.string("s", Required, 1..=3).as_deref(), Some("abc"));
        assert_eq!(
            f.timestamp("t", Required).unwrap().to_rfc3339(),
            "2025-12-31T22:00:00+00:00"
        );
        assert_eq!(f.string("o", Optional, 1..=3), None);
        assert!(f.finish().is_ok());
        assert!(Fields::new(&json!([1])).is_err());
    }
}
