//! The API's one error type, rendered as RFC 9457 problem documents.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::actors::Failure;
use crate::config::RETRY_AFTER_SECS;
use crate::domain::ledger::Refusal;
use crate::domain::validate::FieldError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every error the API answers with. Internal details are logged, never sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400 `malformed_body`: the body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedBody(String),
    /// 400 `missing_idempotency_key`.
    #[error("checkout needs an Idempotency-Key header")]
    MissingIdempotencyKey,
    /// 401 `unauthorized`: no token, or an unknown one.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403 `forbidden`: a valid token without the right.
    #[error("this key may not do that")]
    Forbidden,
    /// 404 with a resource-specific code (`product_not_found`, `order_not_found`, …).
    #[error("{1}")]
    NotFound(&'static str, &'static str),
    /// 405 `method_not_allowed`.
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    /// 409 with a specific code (`sold_out`, `sku_taken`, …).
    #[error("{detail}")]
    Conflict {
        code: &'static str,
        title: &'static str,
        detail: String,
    },
    /// 413 `payload_too_large`.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 422 `validation_failed`, naming the fields.
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    /// 422 with a specific code (`webhook_url_forbidden`): well-formed, but refused.
    #[error("{detail}")]
    Unprocessable {
        code: &'static str,
        title: &'static str,
        detail: String,
    },
    /// 422 `idempotency_key_reused`: the key came with another request before.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// 429 `rate_limited`: over a rate limit; retry after `Retry-After`.
    #[error(
        "over the rate limit of {limit} requests per second; retry after {retry_after_secs} s"
    )]
    RateLimited { limit: u32, retry_after_secs: u64 },
    /// 503 `overloaded`: a queue is full; retry after `Retry-After`.
    #[error("the service is at capacity; retry shortly")]
    Overloaded,
    /// 503 `unavailable`: the database cannot be reached, or the deadline passed before
    /// the work could start; nothing was done and nothing will be.
    #[error("the service cannot reach its database; nothing was done, retry shortly")]
    Unavailable,
    /// 503 `outcome_unknown`: the change was sent to the database but its outcome could
    /// not be learnt in time; a retry (with the same Idempotency-Key) learns it.
    #[error(
        "the outcome could not be learnt in time; retry with the same Idempotency-Key to learn it"
    )]
    OutcomeUnknown,
}

#[derive(Serialize)]
struct Problem<'a> {
    status: u16,
    code: &'a str,
    title: &'a str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedBody(_) => "malformed_body",
            ApiError::MissingIdempotencyKey => "missing_idempotency_key",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(code, _) => code,
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { code, .. } => code,
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unprocessable { code, .. } => code,
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable => "unavailable",
            ApiError::OutcomeUnknown => "outcome_unknown",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::MalformedBody(_) => "Malformed body",
            ApiError::MissingIdempotencyKey => "Missing Idempotency-Key",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden => "Forbidden",
            ApiError::NotFound(..) => "Not found",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Conflict { title, .. } => title,
            ApiError::PayloadTooLarge(_) => "Payload too large",
            ApiError::Validation(_) => "Validation failed",
            ApiError::Unprocessable { title, .. } => title,
            ApiError::IdempotencyKeyReused => "Idempotency key reused",
            ApiError::RateLimited { .. } => "Rate limited",
            ApiError::Overloaded => "Overloaded",
            ApiError::Unavailable => "Unavailable",
            ApiError::OutcomeUnknown => "Outcome unknown",
        }
    }

    /// The problem document as bytes (also what an idempotent replay sends again).
    pub fn body(&self) -> Vec<u8> {
        let errors = match self {
            ApiError::Validation(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let problem = Problem {
            status: self.status_code().as_u16(),
            code: self.code(),
            title: self.title(),
            detail: self.to_string(),
            errors,
        };
        serde_json::to_vec(&problem).unwrap_or_default()
    }

    /// 409 `idempotency_in_progress`: the first request with this key is still running.
    pub fn idempotency_in_progress() -> Self {
        ApiError::Conflict {
            code: "idempotency_in_progress",
            title: "Idempotent request in progress",
            detail: "a request with this Idempotency-Key is still being served; retry shortly"
                .into(),
        }
    }

    /// A 409 for a refusal of the sale's rules.
    pub fn refused(refusal: Refusal) -> Self {
        let (code, title, detail) = match refusal {
            Refusal::SaleNotStarted => (
                "sale_not_started",
                "Sale not started",
                "the sale has not started yet".to_owned(),
            ),
            Refusal::SaleEnded => ("sale_ended", "Sale ended", "the sale has ended".to_owned()),
            Refusal::SoldOut => (
                "sold_out",
                "Sold out",
                "nothing is left of this product".to_owned(),
            ),
            Refusal::InsufficientStock { available } => (
                "insufficient_stock",
                "Insufficient stock",
                format!("only {available} left, fewer than asked for"),
            ),
            Refusal::HoldExpired => (
                "hold_expired",
                "Hold expired",
                "the payment hold lapsed and its stock went back on sale".to_owned(),
            ),
            Refusal::WaitingRoomTokenRequired => (
                "waiting_room_token_required",
                "Waiting room token required",
                "this drop admits buyers through its waiting room: join it, and check out with the \
                 Waiting-Room-Token it gives once admitted"
                    .to_owned(),
            ),
            Refusal::NoWaitingRoom => (
                "no_waiting_room",
                "No waiting room",
                "this product has no waiting room".to_owned(),
            ),
            Refusal::QueueNotOpen => (
                "queue_not_open",
                "Queue not open",
                "the waiting room has not opened yet".to_owned(),
            ),
            Refusal::OrderCancelled => (
                "order_cancelled",
                "Order cancelled",
                "the order was cancelled".to_owned(),
            ),
            Refusal::CustomerLimitExceeded { limit, held } => (
                "customer_limit_exceeded",
                "Customer limit exceeded",
                format!("at most {limit} per customer; this customer already has {held}"),
            ),
        };
        ApiError::Conflict {
            code,
            title,
            detail,
        }
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::NotFound => ApiError::NotFound("product_not_found", "no such product"),
            Failure::Overloaded => ApiError::Overloaded,
            Failure::Unavailable => ApiError::Unavailable,
            Failure::OutcomeUnknown => ApiError::OutcomeUnknown,
            Failure::KeyReused => ApiError::IdempotencyKeyReused,
            Failure::Refused(r) => ApiError::refused(r),
        }
    }
}

impl From<crate::actors::limits::Limited> for ApiError {
    fn from(l: crate::actors::limits::Limited) -> Self {
        // Whole seconds, rounded up: never tell a client to come back too early.
        let secs = l.retry_after.as_secs() + u64::from(l.retry_after.subsec_nanos() > 0);
        ApiError::RateLimited {
            limit: l.limit,
            retry_after_secs: secs.max(1),
        }
    }
}

impl From<Vec<FieldError>> for ApiError {
    fn from(errors: Vec<FieldError>) -> Self {
        ApiError::Validation(errors)
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        tracing::warn!(error = %e, "database error");
        ApiError::Unavailable
    }
}

impl From<crate::db::replica::ReadError> for ApiError {
    fn from(e: crate::db::replica::ReadError) -> Self {
        match e {
            crate::db::replica::ReadError::Pool(e) => e.into(),
            crate::db::replica::ReadError::Db(e) => e.into(),
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        tracing::warn!(error = %e, "no database connection");
        ApiError::Unavailable
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody(_) | ApiError::MissingIdempotencyKey => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(..) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_)
            | ApiError::Unprocessable { .. }
            | ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded | ApiError::Unavailable | ApiError::OutcomeUnknown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        match self {
            ApiError::Overloaded | ApiError::Unavailable | ApiError::OutcomeUnknown => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RateLimited {
                limit,
                retry_after_secs,
            } => {
                let wait = retry_after_secs.to_string();
                response
                    .insert_header((header::RETRY_AFTER, wait.clone()))
                    .insert_header(("RateLimit-Limit", limit.to_string()))
                    .insert_header(("RateLimit-Remaining", "0"))
                    .insert_header(("RateLimit-Reset", wait));
            }
            _ => {}
        }
        response.body(self.body())
    }
}
