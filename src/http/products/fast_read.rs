//! The front door's read of a product's page and stock, without actix's router.

use std::sync::{Arc, LazyLock};

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest, ResponseError};

use super::super::auth::Caller;
use super::super::errors::ApiError;
use super::super::AppState;
use super::{product_page, product_stock};

/// The two reads a drop's buyers send most: a product's page and its stock. The front door
/// serves them itself, without actix's router, when their id is plain (ASCII letters,
/// digits and `_`, as ids are): the router's regex captures, its scope and resource
/// layers and the `Path` extractor cost about a seventh of a page read's CPU. Every other
/// request, and these with any other id, take the routes in [`super::super::configure`], which
/// serve them with the same functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HotRead {
    /// `GET /api/v1/products/{id}`
    Page,
    /// `GET /api/v1/products/{id}/stock`
    Stock,
}

impl HotRead {
    /// Where the id starts in their paths.
    const PREFIX: &'static str = "/api/v1/products/";

    /// The hot read `req` asks for, if any.
    pub fn of(req: &ServiceRequest) -> Option<HotRead> {
        if req.method() != Method::GET {
            return None;
        }
        let rest = req.path().strip_prefix(Self::PREFIX)?;
        let (read, id) = match rest.split_once('/') {
            None => (HotRead::Page, rest),
            Some((id, "stock")) => (HotRead::Stock, id),
            Some(_) => return None,
        };
        let plain = crate::http::junk::is_plausible_id(id);
        plain.then_some(read)
    }

    /// The product id in the path of a request that [`HotRead::of`] took.
    fn id(path: &str) -> &str {
        let rest = path.get(Self::PREFIX.len()..).unwrap_or_default();
        rest.split_once('/').map_or(rest, |(id, _)| id)
    }

    /// Its route's metrics label, the same as the router's for it.
    pub fn label(self) -> &'static Arc<str> {
        static PAGE: LazyLock<Arc<str>> =
            LazyLock::new(|| Arc::from(format!("{}{}", super::super::API, super::super::PRODUCT)));
        static STOCK: LazyLock<Arc<str>> = LazyLock::new(|| {
            Arc::from(format!(
                "{}{}",
                super::super::API,
                super::super::PRODUCT_STOCK
            ))
        });
        match self {
            HotRead::Page => &PAGE,
            HotRead::Stock => &STOCK,
        }
    }

    /// Serves `req`, which [`HotRead::of`] found to be this read: authenticated and
    /// answered as its route would.
    pub async fn serve(self, req: ServiceRequest) -> ServiceResponse {
        let (req, mut payload) = req.into_parts();
        let answer = match (
            Caller::from_request(&req, &mut payload).await,
            app_state(&req),
        ) {
            (Ok(caller), Some(state)) => {
                let id = Self::id(req.path());
                match self {
                    HotRead::Page => product_page(&req, state, &caller, id).await,
                    HotRead::Stock => product_stock(state, &caller, id).await,
                }
            }
            (Err(e), _) => Err(e),
            (_, None) => Err(ApiError::Unavailable),
        };
        let response = answer.unwrap_or_else(|e| e.error_response());
        ServiceResponse::new(req, response)
    }
}

fn app_state(req: &HttpRequest) -> Option<&AppState> {
    req.app_data::<web::Data<AppState>>().map(|s| &***s)
}
