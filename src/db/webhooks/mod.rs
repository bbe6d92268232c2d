//! Webhooks: endpoints, deliveries and their attempts, and the dispatcher's claims on
//! the outbox. [`fan_out`] is the one place that reads `outbox_events` for delivery;
//! everything else reads events by position (outbox row, item) with the SQL function
//! `outbox_event` (migrations/V12), which expands a batch's `order.created` row into one
//! event per order, in (row, item) order.
//!
//! By concern: `endpoints` (subscriptions), `deliveries` (the delivery log the API
//! shows), `events` (event bodies, positions and the event listing), `outbox` (the
//! dispatcher's fan-out, announcements, pruning and backlog) and `claims` (claiming due
//! deliveries and recording their attempts). Everything is re-exported here, so callers
//! use `db::webhooks::NAME`.

mod claims;
mod deliveries;
mod endpoints;
mod events;
mod outbox;

pub use claims::{
    analyze_deliveries, claim_due, record_attempts, AttemptRecord, Claimed, PerEndpoint,
};
pub use deliveries::{list_deliveries, retry_delivery, Attempt, Delivery, DELIVERY_PREFIX};
pub use endpoints::{
    delete_endpoint, find_endpoint, insert_endpoint, list_endpoints, rotate_secret,
    update_endpoint, Endpoint, EndpointPatch,
};
pub use events::{event_body, list_events, EventPosition};
pub use outbox::{announce_drops, backlog, fan_out, outbox_written, prune, OUTBOX_WRITTEN};
