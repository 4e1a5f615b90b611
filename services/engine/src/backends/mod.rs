//! The inference backends.

pub mod openai;
pub mod scripted;
