//! The embedded llama.cpp backend on the real default model (Gemma 3 270M,
//! installed by scripts/setup from PyPI). Nothing here is scripted: every
//! reply comes from the model, so the assertions are about what the engine
//! guarantees (well-formed tool calls, limits, stops, usage, concurrency,
//! cache reuse), not about how clever a 270M base model is.

#![cfg(feature = "llama")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic with its message

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use hearth_engine::backends::llama::LlamaCppBackend;
use hearth_engine::{Backend, EngineError};
use hearth_mesh::config::EngineConfig;
use hearth_proto::v1::{ChatMessage, GenerateChunk, GenerateRequest, ToolSpec};

fn load(slots: u32) -> LlamaCppBackend {
    load_with(slots, EngineConfig::default().draft_tokens)
}

fn load_with(slots: u32, draft_tokens: u32) -> LlamaCppBackend {
    let cfg = EngineConfig {
        slots,
        context: 2048,
        draft_tokens,
        ..Default::default()
    };
    hearth_engine::service::load_llama(&cfg, &hearth_mesh::Config::default().data_dir())
        .unwrap_or_else(|e| panic!("the default model must be installed (scripts/setup): {e}"))
}

/// One model for most tests in this file (loading is the slow part).
fn engine() -> Arc<LlamaCppBackend> {
    static ENGINE: OnceLock<Arc<LlamaCppBackend>> = OnceLock::new();
    ENGINE.get_or_init(|| Arc::new(load(4))).clone()
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: hearth_proto::v1::ChatRole::User.into(),
        content: text.into(),
        ..Default::default()
    }
}

fn calculator() -> ToolSpec {
    ToolSpec {
        name: "calculator.evaluate".into(),
        description: "Evaluates an arithmetic expression exactly.".into(),
        input_schema_json: r#"{"type":"object","properties":{"expression":{"type":"string","description":"e.g. 2*(3+4)"}},"required":["expression"]}"#.into(),
    }
}

async fn run(req: GenerateRequest) -> Result<(String, GenerateChunk), EngineError> {
    run_on(&engine(), req).await
}

async fn run_on(
    engine: &LlamaCppBackend,
    req: GenerateRequest,
) -> Result<(String, GenerateChunk), EngineError> {
    let mut stream = engine.generate(req).await?;
    let mut text = String::new();
    let mut last = GenerateChunk::default();
    while let Some(c) = stream.next().await {
        let c = c?;
        text.push_str(&c.delta);
        last = c;
    }
    Ok((text, last))
}

#[tokio::test]
async fn tool_offered_means_a_well_formed_call_or_answer() {
    let req = GenerateRequest {
        messages: vec![
            ChatMessage {
                role: hearth_proto::v1::ChatRole::System.into(),
                content: "You are a careful assistant. Use the calculator for arithmetic.".into(),
                ..Default::default()
            },
            user("What is 17*23+4?"),
        ],
        tools: vec![calculator()],
        max_tokens: 96,
        ..Default::default()
    };
    let (text, last) = run(req).await.unwrap();
    let usage = last.usage.clone().unwrap();
    assert!(
        usage.tokens_in > 50,
        "the prompt carries the tool list: {usage:?}"
    );
    assert!(usage.tokens_out > 0);
    assert_eq!(usage.backend().name(), "llama.cpp");
    assert!(usage.flops.unwrap() > 0.0);
    assert!(
        usage.energy_joules.is_none(),
        "no meter here: absent, not invented"
    );
    if let Some(call) = last.tool_calls.first() {
        assert_eq!(call.name, "calculator.evaluate");
        assert_eq!(
            last.finish_reason(),
            hearth_proto::v1::FinishReason::ToolCalls
        );
        let args: serde_json::Value = serde_json::from_str(&call.arguments_json).unwrap();
        assert!(args["expression"].is_string(), "schema enforced: {args}");
    } else {
        assert!(!text.is_empty(), "an answer with text");
    }
}

#[tokio::test]
async fn max_tokens_and_stop_sequences_end_generation() {
    let (_, last) = run(GenerateRequest {
        messages: vec![user("Write a long story about the sea.")],
        max_tokens: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let u = last.usage.unwrap();
    assert!(u.tokens_out <= 5, "{u:?}");

    let (text, last) = run(GenerateRequest {
        messages: vec![user("List three colours, one per line.")],
        max_tokens: 64,
        stop: vec!["\n".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!text.contains('\n'), "cut at the stop sequence: {text:?}");
    assert!(["stop", "length"].contains(&last.finish_reason().name()));
}

#[tokio::test]
async fn concurrent_requests_all_finish() {
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(run(GenerateRequest {
                messages: vec![user(&format!("Say the number {i}."))],
                max_tokens: 16,
                ..Default::default()
            }))
        })
        .collect();
    for t in tasks {
        let (_, last) = t.await.unwrap().unwrap();
        assert!(last.usage.unwrap().tokens_out > 0);
    }
}

#[tokio::test]
async fn a_repeated_prompt_reuses_the_cache() {
    // Its own engine, so no other test's request takes the slot in between.
    let engine = tokio::task::spawn_blocking(|| load(2)).await.unwrap();
    let req = GenerateRequest {
        messages: vec![user(
            "Here is a fairly long shared context that a second turn repeats word for word, \
             so its keys and values should come from the cache and not be computed again.",
        )],
        max_tokens: 4,
        ..Default::default()
    };
    let params = engine.n_params() as f64;
    let full = |u: &hearth_proto::v1::Usage| 2.0 * params * (u.tokens_in + u.tokens_out) as f64;
    let (_, first) = run_on(&engine, req.clone()).await.unwrap();
    let u1 = first.usage.unwrap();
    assert_eq!(
        u1.flops.unwrap(),
        full(&u1),
        "a fresh engine computes every token"
    );
    let (_, second) = run_on(&engine, req).await.unwrap();
    let u2 = second.usage.unwrap();
    // All but the last prompt token come from the cache.
    let computed = 2.0 * params * (1 + u2.tokens_out) as f64;
    assert_eq!(u2.flops.unwrap(), computed, "{u2:?}");
}

#[tokio::test]
async fn bad_requests_are_clear_errors() {
    let e = run(GenerateRequest::default()).await.unwrap_err();
    assert!(matches!(e, EngineError::InvalidRequest(_)), "{e}");
    let mut bad = calculator();
    bad.input_schema_json = "{not json".into();
    let e = run(GenerateRequest {
        messages: vec![user("hi")],
        tools: vec![bad],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(e.to_string().contains("calculator.evaluate"), "{e}");
}

#[tokio::test]
async fn the_local_embedding_model_gives_the_reference_vectors() {
    use hearth_engine::backends::llama::embed::{LlamaEmbedder, default_embed_model};
    let path = default_embed_model(&hearth_mesh::Config::default().models_dir());
    let e = tokio::task::spawn_blocking(move || LlamaEmbedder::load(&path, "all-MiniLM-L6-v2", 0))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the embedding model must be installed (scripts/setup): {e}"));
    assert_eq!(e.dims(), 384);
    let texts: Vec<String> = [
        "The cat sits on the mat.",
        "A kitten is resting on a rug.",
        "Quarterly tax filings are due in April.",
        "",
        &"long text ".repeat(500),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = e.embed(texts).await.unwrap();
    assert_eq!(v.len(), 5);
    for x in &v {
        let norm: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    // all-MiniLM-L6-v2's own output for this sentence (sentence-transformers,
    // the original weights): the conversion and the runtime agree with it.
    let reference = [0.13418, -0.0329, -0.0248, 0.04144, -0.03635, 0.04181];
    for (a, b) in v[0].iter().zip(reference) {
        assert!((a - b).abs() < 2e-3, "{:?}", &v[0][..6]);
    }
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(
        cos(&v[0], &v[1]) > 0.5,
        "cat ~ kitten: {}",
        cos(&v[0], &v[1])
    );
    assert!(
        cos(&v[0], &v[2]) < 0.2,
        "cat !~ taxes: {}",
        cos(&v[0], &v[2])
    );
}

/// Training rows are made of exactly what the engine feeds the model: the
/// rendered prompt of a conversation is byte-for-byte the prompt the engine
/// decodes for it (same text, same token count), and the reply is the
/// constrained JSON the model writes, arguments in the grammar's order,
/// followed by the template's end-of-turn marker.
#[tokio::test]
async fn a_rendered_training_row_is_the_engines_own_prompt_and_reply() {
    let e = engine();
    let history = vec![
        ChatMessage {
            role: hearth_proto::v1::ChatRole::System.into(),
            content: "You are a Hearth operative.".into(),
            ..Default::default()
        },
        user("What is 12*12?"),
    ];
    let files = ToolSpec {
        name: "files.write".into(),
        description: "Write a file.".into(),
        input_schema_json: r#"{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}"#.into(),
    };
    let tools = vec![calculator(), files];
    let mut with_reply = history.clone();
    with_reply.push(ChatMessage {
        role: hearth_proto::v1::ChatRole::Assistant.into(),
        tool_calls: vec![hearth_proto::v1::ToolCall {
            id: "c1".into(),
            name: "files.write".into(),
            // Keys in the wrong order: the row puts them in the grammar's.
            arguments_json: r#"{"path":"a.txt","content":"144"}"#.into(),
        }],
        ..Default::default()
    });
    let row = e
        .render(GenerateRequest {
            messages: with_reply,
            tools: tools.clone(),
            ..Default::default()
        })
        .unwrap();
    let prompt_req = GenerateRequest {
        messages: history,
        tools: tools.clone(),
        max_tokens: 64,
        ..Default::default()
    };
    let engine_prompt = e.render_prompt(&prompt_req).unwrap();
    assert_eq!(row.prompt.as_bytes(), engine_prompt.as_bytes());
    let (_, last) = run(prompt_req).await.unwrap();
    assert_eq!(
        last.usage.unwrap().tokens_in as usize,
        row.prompt_ids.len(),
        "the engine decodes exactly the rendered tokens"
    );
    assert!(
        row.prompt.contains("files.write") && row.prompt.ends_with("model\n"),
        "{}",
        row.prompt
    );
    assert_eq!(
        row.completion,
        r#"{"tool":"files.write","arguments":{"content":"144","path":"a.txt"}}<end_of_turn>"#
    );
    assert!(!row.completion_ids.is_empty());
    // An answer row.
    let answer = e
        .render(GenerateRequest {
            messages: vec![
                user("Say hi"),
                ChatMessage {
                    role: hearth_proto::v1::ChatRole::Assistant.into(),
                    content: "Hi \"there\"".into(),
                    ..Default::default()
                },
            ],
            tools,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        answer.completion,
        r#"{"answer":"Hi \"there\""}<end_of_turn>"#
    );
}

#[tokio::test]
async fn prompt_lookup_drafts_leave_the_reply_as_it_was() {
    // The same greedy requests with drafting off and on: the replies (text
    // and tool calls) must be identical, drafts or not.
    let plain = load_with(1, 0);
    let drafting = load_with(1, 8);
    let copy = "Repeat this line exactly, twice: the quick brown fox jumps over the lazy dog.";
    let requests = [
        GenerateRequest {
            messages: vec![user(copy)],
            max_tokens: 48,
            ..Default::default()
        },
        GenerateRequest {
            messages: vec![user("Write 'meeting moved to friday at 10' into notes.txt")],
            tools: vec![ToolSpec {
                name: "files.write".into(),
                description: "Writes a file.".into(),
                input_schema_json: r#"{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}"#.into(),
            }],
            max_tokens: 64,
            ..Default::default()
        },
    ];
    for req in requests {
        let (a, last_a) = run_on(&plain, req.clone()).await.unwrap();
        let (b, last_b) = run_on(&drafting, req.clone()).await.unwrap();
        assert_eq!(a, b, "the text differs with drafts");
        assert_eq!(last_a.tool_calls.len(), last_b.tool_calls.len());
        for (x, y) in last_a.tool_calls.iter().zip(&last_b.tool_calls) {
            assert_eq!((&x.name, &x.arguments_json), (&y.name, &y.arguments_json));
        }
        let (ua, ub) = (last_a.usage.unwrap(), last_b.usage.unwrap());
        assert_eq!(ua.tokens_out, ub.tokens_out);
        assert!(ua.tokens_out > 0);
    }
}
