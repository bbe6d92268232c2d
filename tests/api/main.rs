//! The integration tests: one binary, a module per feature, each test against real
//! PostgreSQL and real HTTP over a socket.

mod helpers;

mod auth;
mod catalog;
mod checkout;
mod crash;
mod edge;
mod lifecycle;
mod limits;
mod observability;
mod outage;
mod products;
mod stampede;
mod waiting_room;
mod webhooks;
