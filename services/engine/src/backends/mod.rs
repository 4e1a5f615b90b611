//! The inference backends.

pub mod http;
#[cfg(feature = "llama")]
pub mod llama;
pub mod ollama;
pub mod openai;
pub mod scripted;
