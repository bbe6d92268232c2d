//! The answers every operation shares, added to the OpenAPI document in one place (a
//! utoipa `Modify`), so that no handler has to repeat them and none can forget one.
//!
//! From what an operation declares, [`ProblemResponses`] adds:
//!
//! | the operation | gets |
//! |---|---|
//! | under `/api/v1` | 422 `validation_failed` (a query value that is junk is refused at the door), 503 `overloaded`/`unavailable` with `Retry-After` |
//! | `security(("bearer" = []))` | 401 `unauthorized` with `WWW-Authenticate`, 403 `forbidden`, 429 `rate_limited` with `Retry-After` and `RateLimit-Limit`/`-Remaining`/`-Reset` |
//! | a path parameter | 404 (the resource's `…_not_found`) |
//! | a request body | 400 `malformed_body`, 413 `payload_too_large`, 422 `validation_failed` |
//!
//! and gives every 4xx/5xx answer that has no content of its own the problem document
//! (`application/problem+json`, schema `Problem`) and its headers. A new operation
//! therefore declares only its success answers and the errors peculiar to it, e.g.
//! `(status = 409, description = "sku_taken")`: the shared ones follow from its security,
//! parameters and body. An answer declared with its own content (say `/readyz`'s
//! text/plain 503) is left as it is; a description given for a status is kept.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::Modify;

use super::errors::PROBLEM_JSON;

/// See the module documentation.
pub struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let api = path.starts_with("/api/v1/") && path != "/api/v1/openapi.json";
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_shared(operation, api);
            }
            if path == "/api/v1/openapi.json" {
                if let Some(get) = &mut item.get {
                    ensure(
                        get,
                        "503",
                        "`overloaded`: shed under load; retry after `Retry-After`",
                    );
                    fill_problems(get);
                }
            }
        }
    }
}

/// The shared answers of `operation` (see the module documentation).
fn add_shared(operation: &mut Operation, api: bool) {
    let bearer = operation.security.as_ref().is_some_and(|requirements| {
        serde_json::to_value(requirements)
            .map(|v| v.to_string().contains("\"bearer\""))
            .unwrap_or(false)
    });
    let params = operation.parameters.as_deref().unwrap_or_default();
    let has_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
    let has_body = operation.request_body.is_some();
    if api {
        ensure(
            operation,
            "422",
            "`validation_failed`: a parameter or field at fault, named in `errors`",
        );
        ensure(
            operation,
            "503",
            "`overloaded` (shed or a full queue) or `unavailable` (the database is away): nothing was done; retry after `Retry-After`",
        );
    }
    if bearer {
        ensure(
            operation,
            "401",
            "`unauthorized`: no bearer token, or an unknown one",
        );
        ensure(
            operation,
            "403",
            "`forbidden`: this key's role may not do this",
        );
        ensure(
            operation,
            "429",
            "`rate_limited`: over a rate limit; retry after `Retry-After`",
        );
    }
    if has_path {
        ensure(
            operation,
            "404",
            "not found (`…_not_found`): no such resource in the caller's store",
        );
    }
    if has_body {
        ensure(operation, "400", "`malformed_body`: the body is not JSON");
        ensure(
            operation,
            "413",
            "`payload_too_large`: the body is over the size limit",
        );
    }
    fill_problems(operation);
}

/// Adds an answer for `status` unless the operation declares one.
fn ensure(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
}

/// Every error answer without content of its own: the problem document, and the
/// headers its status carries.
fn fill_problems(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let is_error = status.starts_with('4') || status.starts_with('5');
        if !is_error || !response.content.is_empty() {
            continue;
        }
        let described = std::mem::take(&mut response.description);
        let mut filled = ResponseBuilder::new()
            .description(if described.is_empty() {
                "a problem document".to_owned()
            } else {
                described
            })
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(
                        Ref::from_schema_name("Problem"),
                    )))
                    .build(),
            );
        for (name, header) in std::mem::take(&mut response.headers) {
            filled = filled.header(name, header);
        }
        for (name, description, integer) in problem_headers(status) {
            if !response.headers.contains_key(name) {
                filled = filled.header(name, header(description, integer));
            }
        }
        *response = filled.build();
    }
}

/// The headers an error status carries: (name, description, is an integer).
fn problem_headers(status: &str) -> Vec<(&'static str, &'static str, bool)> {
    match status {
        "401" => vec![("WWW-Authenticate", "`Bearer`", false)],
        "429" => vec![
            ("Retry-After", "seconds to wait before retrying", true),
            (
                "RateLimit-Limit",
                "requests per second this instance allows: in a cluster, its share of the store's limit (the limit divided by the live instances, at least 1)",
                true,
            ),
            (
                "RateLimit-Remaining",
                "requests left in this window (0)",
                true,
            ),
            ("RateLimit-Reset", "seconds until the window resets", true),
        ],
        "503" => vec![("Retry-After", "seconds to wait before retrying", true)],
        _ => vec![],
    }
}

/// A response header of type string or integer.
pub fn header(description: &str, integer: bool) -> utoipa::openapi::header::Header {
    let kind = if integer { Type::Integer } else { Type::String };
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(kind))
        .description(Some(description))
        .build()
}
