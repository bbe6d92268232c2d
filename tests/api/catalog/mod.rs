//! Product pages at memory speed: listings, PATCH, the drop calendar, validators,
//! compression, sale-window transitions, cache warming, and a real PostgreSQL stopped
//! and started under a running server.
//!
//! By feature: `listing` (filters, sorts, pages, fields, compression, one rendering for
//! concurrent misses), `patch` (a PATCH is visible at once), `drops` (validators, sale
//! windows, the drop calendar, warming) and `postgres_restart` (the database stopped and
//! started under a running server).

mod drops;
mod listing;
mod patch;
mod postgres_restart;
