//! Validated types and the pure rules of the sale. Nothing here does I/O.

pub mod ids;
pub mod ledger;
pub mod order;
pub mod product;
pub mod spread;
pub mod validate;
pub mod waiting_room;
pub mod webhook;
