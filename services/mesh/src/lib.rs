//! The mesh: the bus every Hearth service meets on, and the plumbing around it.
//!
//! - [`bus`]: the [`Bus`] trait and its two implementations, [`NatsBus`]
//!   (a real mesh over NATS) and [`LocalBus`] (every service in one process on
//!   tokio channels). Both carry the same subjects and the same bytes.
//! - [`rpc`]: protobuf request/reply and streamed replies on top of a bus,
//!   with deadlines and gRPC status codes as the error model.
//! - [`clients`]: typed clients for each service's subjects, so a service can
//!   call another without depending on its crate.
//! - [`config`]: the one configuration struct (`hearth.toml` + `HEARTH_*`).
//! - [`telemetry`]: tracing set-up.
//! - [`json`]: JSON in canonical form (keys sorted), for comparisons and digests.
//!
//! Not for service logic: services live in their own crates and meet only here.

pub mod bus;
pub mod clients;
pub mod config;
pub mod json;
pub mod rpc;
pub mod subjects;
pub mod telemetry;

pub use bus::{Bus, BusError, IncomingRequest, LocalBus, NatsBus, Responder, SharedBus};
pub use config::{Config, ConfigError, Secret};
pub use subjects::Subjects;
