//! `hearth bench routing`: what the engine's routing adds to a request.
//!
//! Measured in the same run, interleaved, on a typical request (a system
//! prompt, a user message and eight tool definitions, about 10 KB):
//! - the decision alone (`Routing::plan`: the policy, the sensitivity
//!   patterns over every message) against nothing;
//! - a whole generation through the engine service with the scripted
//!   engine (a test double that answers at once), routed (local-only, the
//!   usage log appended) against the same service with no routing;
//! - a budget reservation and its settlement in the spend ledger (a file
//!   rewritten under an exclusive lock and synced, twice), the price of a
//!   priced request only.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use futures::StreamExt;
use hearth_engine::route::Routing;
use hearth_engine::spend::{Limits, SpendLedger, Stamp};
use hearth_engine::{EngineService, Metering};
use hearth_proto::v1::engine_server::Engine;
use hearth_proto::v1::{ChatMessage, ChatRole, GenerateRequest, ToolSpec};
use serde::Serialize;

/// `hearth bench routing` arguments.
#[derive(Args, Debug)]
pub struct RoutingArgs {
    /// Requests per variant (the median is reported).
    #[arg(long, default_value_t = 2000)]
    pub runs: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The report, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingReport {
    /// Requests per variant.
    pub runs: usize,
    /// The request's size in bytes.
    pub request_bytes: u64,
    /// `plan()` alone: p50.
    pub decision_p50_us: f64,
    /// A generation through the service with no routing: p50.
    pub baseline_p50_us: f64,
    /// The same, routed (local-only, sensitivity checked, usage logged): p50.
    pub routed_p50_us: f64,
    /// routed − baseline.
    pub added_p50_us: f64,
    /// A budget reservation and its settlement (two synced file rewrites): p50.
    pub ledger_p50_us: f64,
}

fn typical_request() -> GenerateRequest {
    let tool = |i: usize| {
        ToolSpec {
        name: format!("tool{i}.run"),
        description: "Does one thing well, given its arguments; answers with text.".repeat(3),
        input_schema_json: r#"{"type":"object","properties":{"expression":{"type":"string","description":"What to work on."}},"required":["expression"]}"#.into(),
    }
    };
    GenerateRequest {
        task_id: "bench".into(),
        messages: vec![
            ChatMessage {
                role: ChatRole::System.into(),
                content: "You are an operative of a local agent mesh. Use the tools to do the task, then answer briefly. ".repeat(30),
                ..Default::default()
            },
            ChatMessage {
                role: ChatRole::User.into(),
                content: "What is 17*23+4? Answer with the number.".into(),
                ..Default::default()
            },
        ],
        tools: (0..8).map(tool).collect(),
        max_tokens: 64,
        ..Default::default()
    }
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn generate_once(svc: &EngineService, req: &GenerateRequest) -> Result<f64> {
    let t = Instant::now();
    let mut stream = svc
        .generate(tonic::Request::new(req.clone()))
        .await?
        .into_inner();
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e6)
}

/// Runs `hearth bench routing`.
pub async fn routing(args: RoutingArgs) -> Result<()> {
    let runs = args.runs.max(10);
    let dir = tempfile::tempdir()?;
    let scripted = || {
        Arc::new(hearth_engine::backends::scripted::ScriptedBackend::default())
            as Arc<dyn hearth_engine::Backend>
    };
    let mut config = hearth_mesh::Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    config.engine.backend = hearth_mesh::config::BackendKind::Scripted;
    let routing = Routing::from_config(&config, scripted(), Metering::none("bench"))?;
    let req = typical_request();

    // The decision alone.
    let mut decision = Vec::with_capacity(runs);
    for i in 0..runs {
        let mut r = req.clone();
        // A new task each time: no task is remembered as sensitive.
        r.task_id = format!("bench-{i}");
        let t = Instant::now();
        let plan = routing.plan(&r)?;
        decision.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(plan);
    }

    // Whole generations, interleaved.
    let plain = EngineService::new(scripted(), Metering::none("bench"));
    let routed = EngineService::routed(routing);
    let (mut base, mut with) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        let mut r = req.clone();
        r.task_id = format!("gen-{i}");
        base.push(generate_once(&plain, &r).await?);
        with.push(generate_once(&routed, &r).await?);
    }

    // The ledger: reserve, then settle.
    let ledger = SpendLedger::new(
        dir.path().join("ledger"),
        Limits {
            usd_per_day: Some(1e9),
            ..Default::default()
        },
    );
    let mut book = Vec::with_capacity(runs.min(500));
    for i in 0..runs.min(500) {
        let at = Stamp::now();
        let t = Instant::now();
        match ledger.reserve(&format!("t{i}"), 0.01, &at)? {
            Ok(r) => ledger.settle(&r, 0.005)?,
            Err(over) => anyhow::bail!("{over}"),
        }
        book.push(t.elapsed().as_secs_f64() * 1e6);
    }

    let report = RoutingReport {
        runs,
        request_bytes: hearth_engine::route::bytes_sent(&req),
        decision_p50_us: p50(decision),
        baseline_p50_us: p50(base.clone()),
        routed_p50_us: p50(with.clone()),
        added_p50_us: p50(with) - p50(base),
        ledger_p50_us: p50(book),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(["what", "p50 µs"]);
    for (what, v) in [
        (
            "routing decision (policy + sensitivity)",
            report.decision_p50_us,
        ),
        ("generation, no routing (baseline)", report.baseline_p50_us),
        (
            "generation, routed (local-only, usage logged)",
            report.routed_p50_us,
        ),
        ("added by routing", report.added_p50_us),
        (
            "budget reserve + settle (priced requests only)",
            report.ledger_p50_us,
        ),
    ] {
        t.add_row([what.to_string(), format!("{v:.1}")]);
    }
    println!("{t}");
    println!(
        "{} requests per variant, {} bytes each, scripted engine (a test double)",
        report.runs, report.request_bytes
    );
    Ok(())
}
