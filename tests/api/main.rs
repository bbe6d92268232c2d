//! The integration tests: one binary, a module per feature, each test against real
//! PostgreSQL and real HTTP over a socket.

mod binary;
mod helpers;

mod audit;
mod auth;
mod caching;
mod catalog;
mod checkout;
mod cluster;
mod crash;
mod docs;
mod edge;
mod hostile;
mod id_flood;
mod lifecycle;
mod limits;
mod observability;
mod openapi;
mod outage;
mod overload;
mod passivation;
mod products;
mod proxies;
mod replay;
mod stampede;
mod stuck;
mod tenancy;
mod waiting_room;
mod webhooks;
