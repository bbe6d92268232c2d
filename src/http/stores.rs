//! Stores (the operator's).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::auth::Caller;
use super::body::JsonBody;
use super::errors::ApiError;
use super::AppState;
use crate::db::stores::{find_store, insert_store, Store, StoreKeys};
use crate::domain::ids::KeyRole;
use crate::domain::validate::{FieldError, Fields, Required};

pub const PLANS: &[&str] = &["free", "pro", "enterprise"];

/// `POST /stores` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreateStoreRequest {
    /// 1–200 characters, none a control character.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    name: String,
    /// `free`, `pro` or `enterprise`: the store's request-rate tier.
    #[schema(pattern = "^(free|pro|enterprise)$")]
    plan: String,
}

/// A new store with its keys, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedStore {
    #[serde(flatten)]
    store: Store,
    api_keys: StoreKeys,
}

fn parse_create_store(body: &serde_json::Value) -> Result<(String, String), Vec<FieldError>> {
    let mut f = Fields::new(body)?;
    let name = f.string("name", Required, 1..=200);
    let plan = f.string("plan", Required, 1..=20);
    if let Some(plan) = &plan {
        f.check(
            PLANS.contains(&plan.as_str()),
            "plan",
            "must be one of free, pro, enterprise",
        );
    }
    f.finish()?;
    Ok((name.unwrap_or_default(), plan.unwrap_or_default()))
}

/// Creates a store and its two keys (operator only).
#[utoipa::path(post, path = "/api/v1/stores", tag = "stores", request_body = CreateStoreRequest,
    security(("bearer" = [])),
    responses((status = 201, body = CreatedStore), (status = 401), (status = 403), (status = 422)))]
pub async fn create_store(
    state: web::Data<AppState>,
    caller: Caller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    caller.require_operator()?;
    let (name, plan) = parse_create_store(&body.0)?;
    let mut client = state.pool.get().await?;
    let (store, api_keys) = insert_store(&mut client, &name, &plan).await?;
    tracing::info!(store.id = %store.id, store.plan = %store.plan, "store created");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/stores/{}", store.id)))
        .json(CreatedStore { store, api_keys }))
}

/// Reads a store (operator, or the store's own admin key), without keys.
#[utoipa::path(get, path = "/api/v1/stores/{id}", tag = "stores", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Store), (status = 404)))]
pub async fn get_store(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = ApiError::NotFound("store_not_found", "no such store");
    if let Caller::Key(grant, _) = &caller {
        // Another store's key sees nothing, exactly as if the store did not exist.
        if grant.store_id != *id {
            return Err(not_found);
        }
        caller.store_key(&[KeyRole::Admin])?;
    }
    let client = state.pool.get().await?;
    let store = find_store(&**client, &id).await?.ok_or(not_found)?;
    Ok(HttpResponse::Ok().json(store))
}
