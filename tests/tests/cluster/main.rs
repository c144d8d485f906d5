//! Cluster mode's building blocks against real servers: private PostgreSQL
//! and Redis instances (`quire_tests::services`), and `PgStore`, the
//! `DocStore` on PostgreSQL, held to the same behavioural suite as sled plus
//! the faults only a networked store has.
//!
//! Every server binds a free 127.0.0.1 port in a folder of its own and is
//! stopped (and its folder removed) when the test ends.

mod failover;
mod fanout;
mod haproxy;
mod healthz;
mod node;
mod pg_store;
mod presence;
mod server;
mod services;
mod stream_trim;
mod suite;
