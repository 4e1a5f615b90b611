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

/// The names the outside world writes the wire's closed sets with (the
/// OpenAI chat format's roles and finish reasons, a backend's name in a
/// usage report, a meter's), one place for each.
mod names {
    use crate::v1::{
        ChatRole, EnergyMeter, EngineBackend, FinishReason, ServerState, ToolStatus, Transport,
    };

    macro_rules! named {
        ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
            impl $ty {
                /// Its name as written outside the wire (`""` for unspecified).
                pub fn name(self) -> &'static str {
                    match self {
                        $($ty::$variant => $name,)*
                        #[allow(unreachable_patterns)]
                        _ => "",
                    }
                }

                /// The value a name stands for.
                pub fn from_name(name: &str) -> Option<Self> {
                    match name {
                        $($name => Some($ty::$variant),)*
                        _ => None,
                    }
                }
            }

            impl std::fmt::Display for $ty {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str(self.name())
                }
            }
        };
    }

    named!(ChatRole {
        System => "system",
        User => "user",
        Assistant => "assistant",
        Tool => "tool",
    });
    named!(FinishReason {
        Stop => "stop",
        Length => "length",
        ToolCalls => "tool_calls",
        ContentFilter => "content_filter",
    });
    named!(EngineBackend {
        LlamaCpp => "llama.cpp",
        Openai => "openai",
        Ollama => "ollama",
        Scripted => "scripted",
    });
    named!(EnergyMeter {
        Nvml => "nvml",
        Rapl => "rapl",
    });
    named!(ToolStatus {
        Ready => "ready",
        HeldChanged => "held: changed",
        HeldNew => "held: new",
        HeldSchemaTooLarge => "held: schema too large",
    });
    named!(Transport {
        Stdio => "stdio",
        Http => "http",
        InProcess => "in-process",
    });
    named!(ServerState {
        Up => "up",
        Down => "down",
        Restarting => "restarting",
    });
}
