//! The OpenAPI 3 document, generated from the handlers' annotations.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::openapi_responses::ProblemResponses;

#[derive(OpenApi)]
#[openapi(
    info(title = "flashsale", description = "Flash-sale checkout backend. The reference: docs/API.md; this document as a page: /api/v1/docs."),
    paths(
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        super::stores::create_store,
        super::stores::get_store,
        super::cluster::cluster,
        super::products::create_product,
        super::products::get_product,
        super::products::get_stock,
        super::products::restock_product,
        super::products::patch_product,
        super::products::list_products,
        super::products::drops,
        super::checkout::checkout,
        super::checkout::product_checkout,
        super::orders::get_order,
        super::queue::join,
        super::queue::status,
        super::orders::list,
        super::orders::confirm,
        super::orders::cancel,
        openapi_json,
        super::docs::docs_page,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::get,
        super::webhooks::patch,
        super::webhooks::delete,
        super::webhooks::rotate_secret,
        super::webhooks::deliveries,
        super::webhooks::retry,
        super::webhooks::events,
    ),
    components(schemas(crate::domain::validate::FieldError, Problem)),
    modifiers(&BearerAuth, &ProblemResponses)
)]
pub struct ApiDoc;

/// An RFC 9457 problem document, as every error is sent.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    status: u16,
    /// Stable, machine-readable: `sold_out`, `validation_failed`, …
    code: String,
    title: String,
    detail: String,
    /// With 422 `validation_failed`: the fields at fault.
    errors: Option<Vec<crate::domain::validate::FieldError>>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("FLASHSALE_METRICS_TOKEN, when it is set"))
                    .build(),
            ),
        );
    }
}

/// This document (OpenAPI 3); `/api/v1/docs` is the same as an HTML page.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses(
    (status = 200, description = "The OpenAPI 3 document", content_type = "application/json"),
    (status = 503, description = "overloaded: shed with the other reads under load",
        body = Problem, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
