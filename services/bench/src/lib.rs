//! Hearth's benchmarks, behind `hearth bench …`: each measures a part of
//! the real mesh and compares it with a baseline measured in the same run,
//! and prints medians (a table, or JSON with `--json`).
//!
//! - [`mesh`]: what the mesh costs per task, in process and over NATS,
//!   against a raw NATS round trip;
//! - [`engine`]: load time, memory, decode speed, batching, prefix reuse;
//! - [`tools`]: an MCP tool call's round trip per transport;
//! - [`code`]: the sandbox, cold and warm;
//! - [`memory`]: the vector store, embedded and over the bus;
//! - [`a2a`]: the gateway's A2A bindings;
//! - [`routing`]: what the engine's routing and budgets add to a request.
//!
//! Not a test suite: figures are measured, never asserted.

pub mod a2a;
pub mod code;
pub mod engine;
pub mod memory;
pub mod mesh;
pub mod routing;
pub mod tools;
