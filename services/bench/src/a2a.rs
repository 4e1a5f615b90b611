//! `hearth bench a2a`: what the gateway costs a caller.
//!
//! The whole mesh runs in this process with the scripted engine (a test
//! double, so the model costs nothing and the protocol and the mesh are what
//! is measured); the gateway listens on loopback. Measured: `SendMessage`
//! round trips over JSON-RPC (a one-tool task: orchestrator → operative →
//! calculator), sustained requests/s with many concurrent clients, and the
//! time from sending `SendStreamingMessage` to the first SSE event. Two
//! baselines from the same run: the same task asked in process (the mesh
//! without HTTP), and a `GET` of the agent card (HTTP without the mesh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use hearth_mesh::{Config, LocalBus, SharedBus};
use serde::Serialize;
use serde_json::{Value, json};

use crate::mesh::{Series, series};
use hearth_launch::{Part, ask, start};

/// Options of `hearth bench a2a`.
#[derive(Debug, Clone, clap::Args)]
pub struct A2aArgs {
    /// Requests measured per series.
    #[arg(long, default_value_t = 500)]
    pub requests: usize,
    /// Requests run first and not measured.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// Concurrent clients for the throughput run.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct A2aReport {
    /// `SendMessage` over JSON-RPC, one at a time.
    pub send_message: Series,
    /// Time to the first SSE event of `SendStreamingMessage`.
    pub sse_first_event: Series,
    /// `SendMessage` with `concurrency` clients at once: requests/s in `per_s`.
    pub concurrent: Series,
    /// Clients in the concurrent run.
    pub concurrency: usize,
    /// Baseline: the same task asked in process (no HTTP).
    pub in_process_ask: Series,
    /// Baseline: `GET /.well-known/agent-card.json` (HTTP, no mesh).
    pub card_get: Series,
    /// `SendMessage` p50 ÷ in-process p50.
    pub ratio_to_in_process: f64,
    /// `SendMessage` p50 under 2 ms.
    pub target_send_met: bool,
    /// First SSE event p50 under 5 ms.
    pub target_sse_met: bool,
}

fn send_body(id: usize, method: &str) -> String {
    json!({
        "jsonrpc": "2.0", "id": id, "method": method,
        "params": {"message": {"messageId": format!("b{id}"), "role": "ROLE_USER",
            "parts": [{"text": "What is 17*23+4?"}]}}
    })
    .to_string()
}

async fn send_once(http: &reqwest::Client, url: &str, id: usize) -> Result<()> {
    let v: Value = http
        .post(url)
        .header("A2A-Version", "1.0")
        .header("Content-Type", "application/json")
        .body(send_body(id, "SendMessage"))
        .send()
        .await?
        .json()
        .await?;
    let answer = v["result"]["task"]["artifacts"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or("");
    if !answer.contains("395") {
        bail!("SendMessage answered {v}");
    }
    Ok(())
}

/// `hearth bench a2a`.
pub async fn a2a(config: &Config, args: A2aArgs) -> Result<()> {
    if args.requests == 0 || args.concurrency == 0 {
        bail!("--requests and --concurrency must be positive");
    }
    let mut config = config.clone();
    let _state = crate::mesh::isolate(&mut config)?;
    config.engine.backend = hearth_mesh::config::BackendKind::Scripted;
    // The mesh is measured, not the trace store (no learning service runs here).
    config.learning.traces = false;
    config.nats_url = None;
    config.gateway.addr = "127.0.0.1:0".into();
    config.gateway.grpc_addr = String::new();
    config.gateway.token = hearth_mesh::Secret::default();
    config.memory.agent_memory = false;
    config.tools.files.enabled = false;
    config.tools.web.enabled = false;
    config.tools.code.enabled = false;
    config.subject_prefix = format!("bencha2a{}", std::process::id());
    let bus: SharedBus = Arc::new(LocalBus::default());
    let parts = [
        Part::Engine,
        Part::Toolhost,
        Part::Operative,
        Part::Orchestrator,
        Part::Gateway,
    ];
    let mesh = start(&config, bus.clone(), &parts).await?;
    let addr = mesh.gateway.context("the gateway did not start")?;
    let url = format!("http://{addr}/");
    let card_url = format!("http://{addr}/.well-known/agent-card.json");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let result = async {
        let quiet = |_: &str| {};
        // Warm everything up.
        for i in 0..args.warmup {
            send_once(&http, &url, i).await?;
            ask(&config, bus.clone(), "What is 17*23+4?", &quiet).await?;
        }
        let n = args.requests;
        let timed = |samples: Vec<Duration>, t0: Instant| series(samples, t0.elapsed());

        let (mut s, t0) = (Vec::with_capacity(n), Instant::now());
        for _ in 0..n {
            let t = Instant::now();
            let a = ask(&config, bus.clone(), "What is 17*23+4?", &quiet).await?;
            s.push(t.elapsed());
            if !a.answer.contains("395") {
                bail!("the in-process task answered {}", a.answer);
            }
        }
        let in_process = timed(s, t0);

        let (mut s, t0) = (Vec::with_capacity(n), Instant::now());
        for _ in 0..n {
            let t = Instant::now();
            let r = http.get(&card_url).send().await?;
            let _ = r.bytes().await?;
            s.push(t.elapsed());
        }
        let card = timed(s, t0);

        let (mut s, t0) = (Vec::with_capacity(n), Instant::now());
        for i in 0..n {
            let t = Instant::now();
            send_once(&http, &url, i).await?;
            s.push(t.elapsed());
        }
        let send = timed(s, t0);

        let (mut s, t0) = (Vec::with_capacity(n), Instant::now());
        for i in 0..n {
            let t = Instant::now();
            let resp = http
                .post(&url)
                .header("A2A-Version", "1.0")
                .header("Accept", "text/event-stream")
                .header("Content-Type", "application/json")
                .body(send_body(i, "SendStreamingMessage"))
                .send()
                .await?;
            let mut body = resp.bytes_stream();
            let mut seen = Vec::new();
            let mut first = None;
            while let Some(chunk) = body.next().await {
                seen.extend_from_slice(&chunk?);
                if first.is_none() && seen.windows(5).any(|w| w == b"data:") {
                    first = Some(t.elapsed());
                }
            }
            let text = String::from_utf8_lossy(&seen);
            if !text.contains("395") {
                bail!("the stream ended without the answer: {text}");
            }
            s.push(first.context("no SSE event arrived")?);
        }
        let sse = timed(s, t0);

        let total = n.max(args.concurrency * 20);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let t0 = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            let (http, url, next) = (http.clone(), url.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, anyhow::Error>(mine);
                    }
                    let t = Instant::now();
                    send_once(&http, &url, i).await?;
                    mine.push(t.elapsed());
                }
            }));
        }
        let mut all = Vec::with_capacity(total);
        for w in workers {
            all.extend(w.await??);
        }
        let concurrent = timed(all, t0);
        Ok((send, sse, concurrent, in_process, card))
    }
    .await;
    mesh.shutdown().await;
    let (send, sse, concurrent, in_process, card) = result?;
    let report = A2aReport {
        ratio_to_in_process: send.p50_ms / in_process.p50_ms.max(1e-9),
        target_send_met: send.p50_ms < 2.0,
        target_sse_met: sse.p50_ms < 5.0,
        send_message: send,
        sse_first_event: sse,
        concurrent,
        concurrency: args.concurrency,
        in_process_ask: in_process,
        card_get: card,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["", "n", "p50 ms", "p99 ms", "per s"]);
    let row = |t: &mut Table, name: &str, s: &Series| {
        t.add_row(s.row(name));
    };
    row(&mut t, "SendMessage (JSON-RPC)", &report.send_message);
    row(&mut t, "SSE: first event", &report.sse_first_event);
    row(
        &mut t,
        &format!("SendMessage × {} clients", report.concurrency),
        &report.concurrent,
    );
    row(&mut t, "baseline: in-process ask", &report.in_process_ask);
    row(&mut t, "baseline: GET agent card", &report.card_get);
    println!("{t}");
    println!(
        "SendMessage p50 is {:.2}× the in-process task · targets: SendMessage p50 < 2 ms {} · first SSE event < 5 ms {}",
        report.ratio_to_in_process,
        if report.target_send_met {
            "met"
        } else {
            "MISSED"
        },
        if report.target_sse_met {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}
