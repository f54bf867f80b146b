//! The integration tests: one binary, real sockets, real TLS, a stub upstream on port 0.

mod common;

mod admin;
mod browser;
mod browser_pbx;
mod cluster;
mod config;
mod contacts;
mod database;
mod demo;
mod directory;
mod entra;
mod graph;
mod hardening;
mod keys;
mod lifecycle;
mod oidc;
mod operations;
mod pbx;
mod pbx_session;
mod photos;
mod proxy;
mod realtime;
mod sessions;
mod slow_clients;
mod sso;
mod sync;
mod sync_cli;
mod targeted;
mod tls;
mod worker;
