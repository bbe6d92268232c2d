//! The front door's part of the cluster: a request whose path names a product
//! (`/api/v1/products/{id}` and everything under it: page, stock, PATCH, restock,
//! checkout by path, waiting room) is forwarded to the product's owner before any
//! route runs, so that the answer is always the owner's. Requests that name their
//! product elsewhere (`POST /checkout`'s body, an order's confirm or cancel) are placed
//! by their handlers ([`super::forward_if_elsewhere`]).

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{web, HttpMessage, ResponseError};
use futures_util::StreamExt;

use super::errors::ApiError;
use super::AppState;
use crate::cluster::forward::{Served, Via};

/// The product id a path names, if it is about one product.
pub fn product_in_path(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/api/v1/products/")?.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// Notes what an earlier instance said about a forwarded request (believed only with
/// the cluster's secret), and forwards a request about another instance's product.
/// `Ok(req)`: serve it here; `Err(answer)`: answered (by the owner, or 503).
pub async fn place(req: ServiceRequest) -> Result<(ServiceRequest, Option<Via>), ServiceResponse> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok((req, None));
    };
    let cluster = state.actors.cluster();
    let via = cluster.via(&req);
    if let Some(via) = &via {
        req.extensions_mut().insert(via.clone());
    }
    let Some(product_id) = product_in_path(req.path()).map(str::to_owned) else {
        return Ok((req, via));
    };
    // Here (the common case): served without touching the body, under a ticket that
    // keeps the shard here until the request is answered.
    if let Some(ticket) = cluster.admit(&product_id) {
        req.extensions_mut().insert(ticket);
        return Ok((req, via));
    }
    // Boxed: the forwarding's future is kilobytes, and inline it would make the front
    // door's future (moved on every request) that much larger.
    Box::pin(place_elsewhere(req, state, product_id, via)).await
}

/// [`place`] for a product whose shard is not held here: the request goes to its owner,
/// unless the shard came here meanwhile.
async fn place_elsewhere(
    mut req: ServiceRequest,
    state: web::Data<AppState>,
    product_id: String,
    via: Option<Via>,
) -> Result<(ServiceRequest, Option<Via>), ServiceResponse> {
    let cluster = state.actors.cluster();
    let body = match read_body(&mut req, state.body_limit).await {
        Ok(body) => body,
        Err(e) => {
            let answer = e.error_response();
            return Err(req.into_response(answer));
        }
    };
    let addr = super::buyer_addr(req.request(), &state);
    let answer = cluster
        .serve_elsewhere(req.request(), &product_id, body.clone(), via.as_ref(), addr)
        .await;
    match answer {
        Ok(Served::There(answer)) => Err(req.into_response(answer)),
        Ok(Served::Here(ticket)) => {
            // Ours after all (the shard came here meanwhile): served here, body restored.
            req.extensions_mut().insert(ticket);
            req.set_payload(actix_web::dev::Payload::from(body));
            Ok((req, via))
        }
        Err(e) => {
            let answer = e.error_response();
            Err(req.into_response(answer))
        }
    }
}

/// The request body, up to the size limit (413 beyond, as the handlers answer).
async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut payload = req.take_payload();
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedBody(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

#[cfg(test)]
mod tests {
    use super::product_in_path;

    #[test]
    fn paths_that_name_a_product() {
        assert_eq!(product_in_path("/api/v1/products/prd_1"), Some("prd_1"));
        assert_eq!(
            product_in_path("/api/v1/products/prd_1/checkout"),
            Some("prd_1")
        );
        assert_eq!(product_in_path("/api/v1/products/"), None);
        assert_eq!(product_in_path("/api/v1/products"), None);
        assert_eq!(product_in_path("/api/v1/checkout"), None);
    }
}
