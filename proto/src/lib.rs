//! The wire: every message that crosses the bus or a gRPC connection.
//!
//! Hearth's own services (`hearth.v1`) are generated here from `hearth/v1/*.proto`.
//! The A2A data model (`lf.a2a.v1`: Message, Part, Task, TaskStatus, Artifact,
//! the update events, AgentCard) is the official A2A SDK's (`a2a-pb`),
//! re-exported as [`a2a`] so the mesh speaks exactly what A2A peers speak.
//!
//! Not for domain logic: conversions and helpers live in the crates that use them.

#![allow(missing_docs)] // generated code

/// Hearth's services and messages, package `hearth.v1`.
pub mod v1 {
    tonic::include_proto!("hearth.v1");
}

/// The A2A v1.0 data model (`lf.a2a.v1`), from the official SDK.
pub use a2a_pb::proto as a2a;
/// ProtoJSON (the A2A v1.0 JSON form) of the A2A model and conversions to it.
pub use a2a_pb::{protojson, protojson_conv};

pub use prost;
pub use prost_types;
