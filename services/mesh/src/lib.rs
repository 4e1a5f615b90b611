//! The mesh: the bus every Hearth service meets on, and the plumbing around it.
//!
//! - [`bus`]: the [`Bus`] trait and its two implementations, [`NatsBus`]
//!   (a real mesh over NATS) and [`LocalBus`] (every service in one process on
//!   tokio channels). Both carry the same subjects and the same bytes.
//! - [`rpc`]: protobuf request/reply and streamed replies on top of a bus,
//!   with deadlines and gRPC status codes as the error model.
//! - [`bindings`]: generated at build time from `proto/` — for each service a
//!   typed client and a server adapter over the bus (`engine_bus::EngineClient`,
//!   `engine_bus::serve`, …) and the method names; no method is wired by hand.
//! - [`clients`]: the generated clients under their usual names, so a service
//!   can call another without depending on its crate.
//! - [`a2a`]: A2A messages and tasks built and read, history trimmed, and
//!   [`AgentClient::run_to_end`](clients::AgentClient::run_to_end), the one
//!   way to run a task to its end.
//! - [`running`]: one shape for every service: what starting it hands back,
//!   its health (the `Health` RPC, under its role) and its drain.
//! - [`sync`]: a lock that survives a panicked holder.
//! - [`config`]: the one configuration struct (`hearth.toml` + `HEARTH_*`).
//! - [`telemetry`]: tracing set-up.
//! - [`work`]: the durable work queue on JetStream (subtasks to operatives,
//!   redelivery, dead letters, the step log that replays a redelivered subtask).
//! - [`json`]: JSON in canonical form (keys sorted), for comparisons and digests.
//!
//! Not for service logic: services live in their own crates and meet only here.

// The generated bindings name this crate by its path, as any user does.
extern crate self as hearth_mesh;

pub mod a2a;
pub mod bus;
pub mod clients;

/// Generated from `proto/hearth/v1/*.proto` by this crate's build script:
/// per service, `<service>_bus::{<Service>Client, serve, methods}`; and
/// `methods`, every method name of the package.
pub mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings/hearth.v1.rs"));
}

/// The generator's test service (`tests/echo.proto`): its messages, its
/// tonic trait and its generated bus bindings, for the tests that check
/// the generator.
#[cfg(feature = "echo")]
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo/hearth.test.rs"));
}
pub mod config;
pub mod heartbeat;
pub mod json;
pub mod metrics;
pub mod rpc;
pub mod running;
pub mod secrets;
pub mod subjects;
pub mod sync;
pub mod telemetry;
pub mod work;

pub use bus::{Bus, BusError, Headers, IncomingRequest, LocalBus, NatsBus, Responder, SharedBus};
pub use config::{Config, ConfigError, Secret};
pub use subjects::Subjects;
