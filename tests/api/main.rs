//! The integration tests: one binary, a module per feature, each test against real
//! PostgreSQL and real HTTP over a socket.

mod binary;
mod helpers;

mod audit;
mod auth;
mod catalog;
mod checkout;
mod crash;
mod docs;
mod edge;
mod lifecycle;
mod limits;
mod observability;
mod outage;
mod overload;
mod products;
mod replay;
mod stampede;
mod stuck;
mod waiting_room;
