//! Junk is refused at the front door, in memory, before any route, actor or query sees
//! it: a path segment that no id can be (control characters, bad UTF-8, overlong, odd
//! characters) is a 404, a query value with control characters, bad UTF-8 or an absurd
//! length is a 422. PostgreSQL rejects NUL in text, and an error from it reads as an
//! outage (503): NUL must never reach it.

use percent_encoding::percent_decode_str;

use super::errors::ApiError;
use crate::domain::validate::FieldError;

/// The longest id any resource has (`prd_` + 32 hex digits is 36); longer is no id.
pub const MAX_ID_LEN: usize = 64;
/// The longest query value accepted (a cursor, a `?fields=` list, a customer id).
pub const MAX_QUERY_VALUE_LEN: usize = 1024;

/// Whether `id` can be one of ours: 1–64 ASCII letters, digits and `_`. Anything else
/// cannot name a resource, so it is not looked up.
pub fn is_plausible_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks a request's path and query before anything serves it.
pub fn check_request(path: &str, query: &str) -> Result<(), ApiError> {
    check_path(path)?;
    check_query(query)
}

/// Every segment of an `/api/v1/` path is a literal word or an id: both fit
/// [`is_plausible_id`] (undecoded, since no id has a character that needs escaping).
fn check_path(path: &str) -> Result<(), ApiError> {
    // The routes' own segments that are not shaped like an id.
    const LITERALS: [&str; 2] = ["openapi.json", "rotate-secret"];
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return Ok(());
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let junk = segments.iter().position(|segment| {
        !segment.is_empty() && !is_plausible_id(segment) && !LITERALS.contains(segment)
    });
    match junk {
        None => Ok(()),
        // The same 404 as an unknown id of that collection: an id that cannot exist
        // does not exist.
        Some(i) => Err(match i.checked_sub(1).map(|p| segments[p]) {
            Some("products") => ApiError::NotFound("product_not_found", "no such product"),
            Some("orders") => ApiError::NotFound("order_not_found", "no such order"),
            Some("stores") => ApiError::NotFound("store_not_found", "no such store"),
            Some("webhooks") => ApiError::NotFound("webhook_not_found", "no such webhook endpoint"),
            Some("deliveries") => ApiError::NotFound("delivery_not_found", "no such delivery"),
            _ => ApiError::NotFound("not_found", "no such resource"),
        }),
    }
}

/// Every query value (and name), decoded, is UTF-8 without control characters and of a
/// sane length.
fn check_query(query: &str) -> Result<(), ApiError> {
    if query.is_empty() {
        return Ok(());
    }
    let mut errors = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let field = match decode(name) {
            Ok(n) if n.len() <= 64 && !n.chars().any(char::is_control) => n,
            _ => {
                errors.push(FieldError::new(
                    "query",
                    "has a parameter name that is not printable UTF-8",
                ));
                continue;
            }
        };
        match decode(value) {
            Err(()) => errors.push(FieldError::new(field, "must be valid UTF-8")),
            Ok(v) if v.chars().any(char::is_control) => errors.push(FieldError::new(
                field,
                "must not contain control characters",
            )),
            Ok(v) if v.len() > MAX_QUERY_VALUE_LEN => errors.push(FieldError::new(
                field,
                format!("must be at most {MAX_QUERY_VALUE_LEN} bytes"),
            )),
            Ok(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// A query component, `+` as space, percent-decoded; `Err` if not UTF-8.
fn decode(part: &str) -> Result<String, ()> {
    let spaced = part.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_paths_and_queries() {
        assert!(is_plausible_id("prd_0190abcdef"));
        assert!(!is_plausible_id(""));
        assert!(!is_plausible_id(&"a".repeat(65)));
        assert!(!is_plausible_id("a\0"));
        assert!(check_path("/api/v1/products/prd_1/stock").is_ok());
        assert!(check_path("/api/v1/openapi.json").is_ok());
        assert!(check_path("/api/v1/products/%00").is_err());
        assert!(check_path("/api/v1/orders/%FF/confirm").is_err());
        assert!(check_path("/healthz").is_ok());
        assert!(check_query("status=live&limit=5").is_ok());
        assert!(check_query("customer_id=%00").is_err());
        assert!(check_query("customer_id=%FF").is_err());
        assert!(check_query("%00=1").is_err());
        assert!(check_query(&format!("cursor={}", "x".repeat(2000))).is_err());
        assert!(check_query("customer_id=J%C3%BCrgen+M").is_ok());
    }
}
