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

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(crate::config::DEFAULT_BODY_LIMIT, |s| s.body_limit);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(ApiError::PayloadTooLarge(limit));
            }
            let mut bytes = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| ApiError::MalformedBody(e.to_string()))?;
                if bytes.len() + chunk.len() > limit {
                    return Err(ApiError::PayloadTooLarge(limit));
                }
                bytes.extend_from_slice(&chunk);
            }
            serde_json::from_slice(&bytes)
                .map(JsonBody)
                .map_err(|e| ApiError::MalformedBody(e.to_string()))
        })
    }
}
