//! Integration tests of the Quire server, written as its specification.
//! Every test runs a real server on 127.0.0.1 with real sled files in a
//! temporary folder and talks to it with real WebSocket clients.

mod abuse_room;
mod access;
mod api;
mod bad_input;
mod compat;
mod delivery;
mod edge;
mod extensions;
mod faults;
mod formats_api;
mod outbound;
mod persistence;
mod rich_compat;
mod stock_clients;
mod sync;
mod update_walk;
mod websocket;
