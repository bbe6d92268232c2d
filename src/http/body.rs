//! Request bodies: size-limited, then parsed as JSON (any JSON; validation is the
//! handler's, field by field). The Content-Type is not insisted on: what parses as JSON
//! is JSON, so `curl -d` works as well as any client.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde_json::Value;

use super::errors::ApiError;
use super::AppState;

/// A JSON body no larger than the configured limit.
pub struct JsonBody(pub Value);

impl JsonBody {
    /// Parses `bytes` as JSON (400 `malformed_body` if it is not).
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::MalformedBody(e.to_string()))
    }
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let read = RawBody::read(req, payload);
        Box::pin(async move { JsonBody::parse(&read.await?.0) })
    }
}

/// A body no larger than the configured limit, unparsed: for a handler that parses its
/// common shape itself, without a JSON tree (checkout), and falls back to [`JsonBody`]'s.
pub struct RawBody(pub web::Bytes);

impl RawBody {
    fn read(
        req: &HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> impl Future<Output = Result<Self, ApiError>> {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(crate::config::DEFAULT_BODY_LIMIT, |s| s.body_limit);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let mut payload = payload.take();
        async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            let next = |chunk: Option<Result<web::Bytes, _>>| {
                chunk
                    .transpose()
                    .map_err(|e: actix_web::error::PayloadError| {
                        ApiError::MalformedBody(e.to_string())
                    })
            };
            // A body that came in one chunk (the usual case) is kept as it is, uncopied.
            let Some(first) = next(payload.next().await)? else {
                return Ok(RawBody(web::Bytes::new()));
            };
            if first.len() > limit {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            let Some(second) = next(payload.next().await)? else {
                return Ok(RawBody(first));
            };
            // Sized for the declared body (within bounds), so that it is copied once.
            let mut bytes = web::BytesMut::with_capacity(
                declared
                    .unwrap_or(0)
                    .max(first.len() + second.len())
                    .min(limit)
                    .min(16 * 1024),
            );
            let mut chunk = Some(first);
            let mut after = Some(second);
            while let Some(part) = chunk {
                if bytes.len() + part.len() > limit {
                    return Err(ApiError::PayloadTooLarge(limit));
                }
                bytes.extend_from_slice(&part);
                chunk = match after.take() {
                    Some(part) => Some(part),
                    None => next(payload.next().await)?,
                };
            }
            Ok(RawBody(bytes.freeze()))
        }
    }
}

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        Box::pin(Self::read(req, payload))
    }
}
