//! The Corral registry: the fleet's desired state, the agents' sessions, the admin API.
//!
//! Layout (`docs/architecture.md` follows a change through them):
//! * [`server`] — `registry serve`: wires the gRPC services, HTTP and background loops.
//! * [`state`] — the one owner of the registry's state in memory; [`bus`] — the event
//!   bus through which sessions, discovery and the change feed ([`feed`]) learn of
//!   changes.
//! * [`agent_service`] + [`join`] + [`sessions`] + [`liveness`] — agent sessions:
//!   admission, identity, heartbeats kept in memory and written in batches, nodes down;
//!   [`desired`] — what a node must run.
//! * [`actual`] — agents' reports and events, written only when they change and kept
//!   while the database is unreachable; [`outage`] — the database's availability.
//! * [`admin`] — the admin gRPC API; [`cli`] is its command-line client. [`gate`] stands
//!   before it: [`auth`] (named tokens, roles), [`access`] (what each call needs) and
//!   [`audit`] (who changed what, and every refused call).
//! * [`store`] — SQLite or MySQL through sqlx, with migrations under `migrations/`.
//! * [`http`] + [`metrics`] — `/health` and Prometheus `/metrics`; [`web`] — the
//!   dashboard at `/` (server-rendered HTML, live by server-sent events).
//! * [`discovery`] + [`query_service`] — the endpoint cache and `Query.Find`/`Watch`
//!   ([`query_watch`], [`query_auth`]: agents watch with their node identity);
//!   [`discovery_http`] — the same over HTTP/JSON, and Prometheus' `http_sd` targets
//!   ([`prometheus_sd`]).
//! * [`rollout`] — rolling patches; [`download`] — packages to agents.
//! * [`dev`] — `registry dev`: a registry and an agent for this host in one process.
//! * [`config`] — defaults, config file, validation.
//! * [`configs`] — config templates: rendered, checked at apply, delivered so that every
//!   configuration converges (quiescence, rolling restarts, flapping held).
//! * [`secrets`] — per-instance secret values, sealed at rest with the registry's key,
//!   delivered as `[[files]]` and through `secret()` in templates, never shown.

pub mod access;
pub mod actual;
pub mod admin;
pub mod agent_service;
pub mod audit;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod configs;
pub mod desired;
pub mod dev;
pub mod discovery;
pub mod discovery_http;
pub mod download;
mod error;
pub mod feed;
pub mod gate;
pub mod http;
pub mod http_tls;
pub mod join;
pub mod liveness;
pub mod logs;
pub mod metrics;
pub mod outage;
pub mod prometheus_sd;
pub mod query_auth;
pub mod query_service;
pub mod query_watch;
pub mod rollout;
pub mod secrets;
pub mod server;
pub mod sessions;
pub mod sources;
pub mod spec;
pub mod state;
pub mod store;
pub mod swarm;
pub mod tls;
pub mod usage;
pub mod web;

pub use server::run;
