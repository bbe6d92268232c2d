//! Query parameters, checked like bodies: unknown or malformed ones are a 422 naming them.

use serde_json::Value;

use super::errors::ApiError;
use crate::domain::validate::FieldError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The parameters of one request.
pub struct Params {
    pairs: Vec<(String, String)>,
    known: Vec<&'static str>,
    errors: Vec<FieldError>,
}

impl Params {
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
            ApiError::Validation(vec![FieldError::new(
                "query",
                "is not a valid query string",
            )])
        })?;
        Ok(Params {
            pairs,
            known: Vec::new(),
            errors: Vec::new(),
        })
    }

    /// The value of `name`, if given (once).
    pub fn text(&mut self, name: &'static str) -> Option<String> {
        self.known.push(name);
        let mut values = self
            .pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone());
        let first = values.next();
        if values.next().is_some() {
            self.errors
                .push(FieldError::new(name, "must be given at most once"));
        }
        first.filter(|v| !v.is_empty())
    }

    /// `name` if it is one of `allowed`.
    pub fn one_of(&mut self, name: &'static str, allowed: &[&str]) -> Option<String> {
        let value = self.text(name)?;
        if allowed.contains(&value.as_str()) {
            Some(value)
        } else {
            self.errors.push(FieldError::new(
                name,
                format!("must be one of {}", allowed.join(", ")),
            ));
            None
        }
    }

    /// An RFC 3339 timestamp.
    pub fn timestamp(&mut self, name: &'static str) -> Option<chrono::DateTime<chrono::Utc>> {
        let value = self.text(name)?;
        match chrono::DateTime::parse_from_rfc3339(&value) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(_) => {
                self.errors.push(FieldError::new(
                    name,
                    "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z",
                ));
                None
            }
        }
    }

    /// `?limit=`: 1–200, default 50.
    pub fn limit(&mut self) -> i64 {
        match self.text("limit").map(|v| v.parse::<i64>()) {
            None => DEFAULT_LIMIT,
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                self.errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ));
                DEFAULT_LIMIT
            }
        }
    }

    /// `?fields=a,b`: names out of `allowed`.
    pub fn fields(&mut self, allowed: &[&str]) -> Option<Vec<String>> {
        let value = self.text("fields")?;
        let fields: Vec<String> = value
            .split(',')
            .map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .collect();
        let unknown: Vec<&str> = fields
            .iter()
            .map(String::as_str)
            .filter(|f| !allowed.contains(f))
            .collect();
        if fields.is_empty() || !unknown.is_empty() {
            self.errors.push(FieldError::new(
                "fields",
                format!("unknown field(s): {}", unknown.join(", ")),
            ));
            return None;
        }
        Some(fields)
    }

    /// Every problem found, unknown parameters included.
    pub fn finish(self) -> Result<(), ApiError> {
        let mut errors = self.errors;
        for (k, _) in &self.pairs {
            if !self.known.contains(&k.as_str()) && !errors.iter().any(|e| e.field == *k) {
                errors.push(FieldError::new(k.clone(), "is not a known parameter"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// Keeps only `fields` of a JSON object (all of them when `None`).
pub fn pick(value: Value, fields: Option<&[String]>) -> Value {
    match (value, fields) {
        (Value::Object(map), Some(fields)) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| fields.iter().any(|f| f == k))
                .collect(),
        ),
        (value, _) => value,
    }
}
