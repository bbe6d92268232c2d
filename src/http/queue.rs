//! A drop's virtual waiting room: join it, then ask where you stand; once admitted, the
//! answer carries the `Waiting-Room-Token` that checkout requires.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::auth::{Caller, ANY_STORE_KEY};
use super::body::JsonBody;
use super::errors::ApiError;
use super::{ask, AppState};
use crate::actors::product::{ProductMsg, QueueAnswer};
use crate::domain::validate::{Fields, Required};

/// `POST /products/{id}/queue` body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct JoinQueueRequest {
    /// The store's id for the buyer (the one checkout will name), 1–200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    customer_id: String,
}

/// A place in the waiting room.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueueTicket {
    ticket: String,
    /// `waiting` or `admitted`.
    status: &'static str,
    /// When the buyer is let in; `null` until the sale starts and the queue is shuffled.
    admit_at: Option<DateTime<Utc>>,
    /// Once admitted: send as `Waiting-Room-Token` with the checkout (valid 120 s; ask
    /// again for a fresh one).
    token: Option<String>,
}

fn ticket(answer: QueueAnswer) -> QueueTicket {
    QueueTicket {
        ticket: answer.place.ticket,
        status: if answer.token.is_some() {
            "admitted"
        } else {
            "waiting"
        },
        admit_at: answer.place.admit_at,
        token: answer.token,
    }
}

/// Joins a drop's waiting room (joining again keeps the same place).
#[utoipa::path(post, path = "/api/v1/products/{id}/queue", tag = "waiting room", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = JoinQueueRequest,
    responses((status = 202, body = QueueTicket), (status = 404),
        (status = 409, description = "no_waiting_room, queue_not_open")))]
pub async fn join(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let mut f = Fields::new(&body.0)?;
    let customer_id = f.string("customer_id", Required, 1..=200);
    f.finish()?;
    let customer_id = customer_id.unwrap_or_default();
    let answer = ask(|reply| {
        state.actors.to_product(
            &grant.store_id,
            &id,
            ProductMsg::Queue { customer_id, reply },
        )
    })
    .await?;
    let answer = answer.ok_or(ApiError::Unavailable)?;
    Ok(HttpResponse::Accepted().json(ticket(answer)))
}

/// Where a ticket stands; with the admission token once it is the buyer's turn.
#[utoipa::path(get, path = "/api/v1/products/{id}/queue/{ticket}", tag = "waiting room", security(("bearer" = [])),
    params(("id" = String, Path), ("ticket" = String, Path)),
    responses((status = 200, body = QueueTicket), (status = 404)))]
pub async fn status(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let grant = caller.store_key(ANY_STORE_KEY)?;
    let (id, ticket_id) = path.into_inner();
    let answer = ask(|reply| {
        state.actors.to_product(
            &grant.store_id,
            &id,
            ProductMsg::QueueStatus {
                ticket: ticket_id,
                reply,
            },
        )
    })
    .await?
    .ok_or(ApiError::NotFound(
        "ticket_not_found",
        "no such ticket in this waiting room",
    ))?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(ticket(answer)))
}
