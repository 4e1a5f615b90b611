//! The engine: inference backends behind one trait, served on the bus as the
//! `Engine` service (and over gRPC where it faces the outside).
//!
//! - [`backends::llama`] (feature `llama`, on by default): llama.cpp in
//!   this process on a GGUF model, the default; constrained decoding for
//!   tool calls, continuous batching, prefix reuse.
//! - [`backends::openai`]: any OpenAI-compatible server (vLLM, SGLang,
//!   llama-server, LM Studio, Ollama's `/v1`, cloud APIs): chat completions,
//!   streaming SSE, tool calls.
//! - [`backends::scripted`]: a rule-following test double for mesh tests and
//!   benchmarks. Named as such; never chosen unless configured by name.
//! - [`catalog`]: the model catalog (data in `catalog.toml`) and finding
//!   a model's file on disk.
//! - [`service`]: the `Engine` service: metering (latency, time to first
//!   token, tokens, FLOPs, energy, dollars) around whichever backend is
//!   configured.
//! - [`hardware`], [`fit`]: what this machine has, and which engine, model
//!   and quantization fit it (`hearth init`).
//! - [`meter`]: energy from real meters (NVML, RAPL), shared fairly among
//!   concurrent requests.
//! - [`pull`]: downloading a model file with resume and a checked digest.
//! - [`start`]: the engine started as every service starts, with its health.
//!
//! Not for agent logic: the engine answers one generation at a time.

pub mod adapters;
pub mod backend;
pub mod backends;
pub mod catalog;
pub mod fit;
pub mod hardware;
pub mod meter;
pub mod pull;
pub mod route;
pub mod service;
pub mod spend;
pub mod start;

pub use backend::{Backend, ChunkStream, EngineError};
pub use service::{
    Embeddings, EngineService, Metering, backend_from_config, embeddings_for, metering_for, serve,
};
pub use start::start;
