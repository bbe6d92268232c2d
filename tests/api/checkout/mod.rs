//! Checkout: every error code, idempotency (also across a restart), consent audit,
//! overload.
//!
//! By feature: `errors` (every error code, nothing changed), `idempotency` (replays,
//! also after a restart, and concurrent duplicates), `consent` (kept with the order,
//! unchangeable), `overload` (full queues answer 503 and give the stock back),
//! `product_path` (`POST /products/{id}/checkout` is the same checkout) and `pieces` (a
//! body in chunks is read whole, and bounded).

mod consent;
mod errors;
mod idempotency;
mod overload;
mod pieces;
mod product_path;
