//! Runs one generation on the configured engine (HEARTH_ENGINE_* and
//! hearth.toml, default: the embedded model) from a JSON request on stdin,
//! printing the reply and its usage: a quick way to see what a model does
//! with a prompt.
//!
//! echo '{"messages":[{"role":"user","content":"Hi"}]}' | cargo run --release -p hearth-engine --example generate

#![allow(clippy::unwrap_used, clippy::expect_used)] // a developer tool: failures should say where

use std::io::Read;

use futures::StreamExt;
use hearth_proto::v1::{ChatMessage, GenerateRequest, ToolSpec};

#[tokio::main]
async fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).unwrap();
    let v: serde_json::Value = serde_json::from_str(&input).unwrap();
    let messages = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage {
            role: hearth_proto::v1::ChatRole::from_name(m["role"].as_str().unwrap_or("user"))
                .unwrap_or(hearth_proto::v1::ChatRole::User)
                .into(),
            content: m["content"].as_str().unwrap_or("").into(),
            ..Default::default()
        })
        .collect();
    let tools = v["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| ToolSpec {
            name: t["name"].as_str().unwrap_or("").into(),
            description: t["description"].as_str().unwrap_or("").into(),
            input_schema_json: t["input_schema"].to_string(),
        })
        .collect();
    let config = hearth_mesh::Config::load().unwrap();
    let backend = hearth_engine::backend_from_config(&config.engine, &config.data_dir()).unwrap();
    let req = GenerateRequest {
        messages,
        tools,
        max_tokens: v["max_tokens"].as_u64().unwrap_or(128) as u32,
        ..Default::default()
    };
    let mut stream = backend.generate(req).await.unwrap();
    while let Some(c) = stream.next().await {
        match c {
            Ok(c) => {
                print!("{}", c.delta);
                for call in &c.tool_calls {
                    println!("\ncall {} {}", call.name, call.arguments_json);
                }
                if let Some(u) = &c.usage {
                    println!(
                        "\n[{} in / {} out, {}]",
                        u.tokens_in,
                        u.tokens_out,
                        c.finish_reason()
                    );
                }
            }
            Err(e) => println!("\nerror: {e}"),
        }
    }
}
