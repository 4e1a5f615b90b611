//! `hearth bench mesh`: what the mesh itself costs per task.
//!
//! A one-tool-call task ("What is 17*23+4?") runs with the scripted engine
//! (a test double, so the model costs nothing and the mesh is what is
//! measured) through orchestrator → operative → engine → toolhost → the
//! calculator MCP server (a real child process over stdio) and back; first
//! on the in-process bus, then over NATS on loopback. A raw NATS
//! request/reply round trip is measured in the same run as the baseline; the
//! NATS overhead per hop is (NATS task p50 − in-process task p50) ÷ hops per
//! task, where hops are the bus requests one task makes (counted, not assumed).
//! Over NATS the task runs twice: on the plain request path, and through the
//! durable work queue (JetStream, the default), reported as a ratio.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use hearth_mesh::bus::{Bus, BusError, FrameStream, Headers, RequestStream};
use hearth_mesh::{Config, LocalBus, NatsBus, SharedBus};
use serde::Serialize;

use hearth_launch::{Part, start};

/// Options of `hearth bench mesh`.
#[derive(Debug, Clone, clap::Args)]
pub struct MeshArgs {
    /// Tasks measured per transport.
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Tasks run first and not measured.
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// NATS server for the over-NATS run (else HEARTH_NATS_URL / `nats`).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Counts bus requests (hops) on the way through.
struct CountingBus {
    inner: SharedBus,
    requests: AtomicU64,
    /// Reply frames received (an end-of-stream sent in a frame of its own
    /// is not counted: the requester's stream never yields it).
    frames: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl Bus for CountingBus {
    async fn request(
        &self,
        subject: &str,
        headers: &Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<FrameStream, BusError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let frames = self
            .inner
            .request(subject, headers, payload, timeout)
            .await?;
        let count = self.frames.clone();
        Ok(frames
            .inspect(move |_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
            .boxed())
    }
    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<RequestStream, BusError> {
        self.inner.subscribe(subject, queue).await
    }
    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

/// Latency figures of one series, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Completed per second (sequential).
    pub per_s: f64,
}

impl Series {
    /// A table row: `name`, then n, p50 ms, p99 ms and the rate.
    pub fn row(&self, name: &str) -> [String; 5] {
        [
            name.to_string(),
            self.n.to_string(),
            format!("{:.3}", self.p50_ms),
            format!("{:.3}", self.p99_ms),
            format!("{:.0}", self.per_s),
        ]
    }
}

/// Median, 99th percentile and rate of a series of samples.
pub fn series(mut samples: Vec<Duration>, total: Duration) -> Series {
    samples.sort();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Series {
        n: samples.len(),
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        per_s: samples.len() as f64 / total.as_secs_f64().max(1e-9),
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct MeshReport {
    /// Tasks on the in-process bus.
    pub in_process: Series,
    /// Tasks over NATS on the plain request path (`[work] durable = false`),
    /// when a server was given.
    pub nats: Option<Series>,
    /// Tasks over NATS through the durable work queue (the default over
    /// NATS), when the server has JetStream.
    pub nats_durable: Option<Series>,
    /// Why the durable run did not run, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_durable_error: Option<String>,
    /// Durable task p50 ÷ request-path task p50, in the same run: what
    /// the work queue adds per task.
    pub durable_ratio: Option<f64>,
    /// Raw NATS request/reply round trips (the baseline).
    pub raw_nats_rtt: Option<Series>,
    /// Bus requests per task.
    pub hops_per_task: f64,
    /// Reply messages per task that carried a reply (data or error).
    pub reply_frames_per_task: f64,
    /// (NATS task p50 − in-process task p50) / hops, in ms.
    pub nats_overhead_per_hop_ms: Option<f64>,
    /// That, divided by the raw round trip p50.
    pub overhead_ratio_to_raw_rtt: Option<f64>,
    /// In-process p50 under 0.3 ms.
    pub target_in_process_met: bool,
    /// Per-hop overhead under 1.5× the raw round trip.
    pub target_nats_met: Option<bool>,
}

async fn run_tasks(
    config: &Config,
    bus: SharedBus,
    warmup: usize,
    n: usize,
    label: &str,
) -> Result<Series> {
    let quiet = |_: &str| {};
    // One door for the run, as a client that sends many tasks keeps one.
    let door = hearth_launch::Door::open(config, bus).await;
    let task = || hearth_launch::new_task("What is 17*23+4?");
    for _ in 0..warmup {
        door.run(&task(), &quiet).await?;
    }
    let mut samples = Vec::with_capacity(n);
    let t0 = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        let a = door.run(&task(), &quiet).await?;
        samples.push(s.elapsed());
        if !a.answer.contains("395") {
            bail!("{label} task {i} answered `{}` ({})", a.answer, a.state);
        }
        if n >= 10 && (i + 1) % (n / 10) == 0 {
            eprint!("\r{label}: {}/{n}", i + 1);
        }
    }
    eprintln!();
    Ok(series(samples, t0.elapsed()))
}

/// Keeps a benchmark's mesh to itself: its tool approvals and audit log go to
/// a temporary directory (never the user's), and the user's third-party MCP
/// servers are not started. The directory lives as long as the returned guard.
pub(crate) fn isolate(config: &mut Config) -> Result<tempfile::TempDir> {
    let state = tempfile::tempdir().context("a temporary directory for the benchmark's state")?;
    config.toolhost.approvals = Some(state.path().join("tool-approvals.json"));
    config.toolhost.audit_log = Some(state.path().join("tool-calls.jsonl"));
    config.mcp.servers.clear();
    Ok(state)
}

/// Runs the benchmark and prints its report.
pub async fn mesh(base: &Config, args: MeshArgs) -> Result<()> {
    let mut config = base.clone();
    let _state = isolate(&mut config)?;
    config.engine.backend = hearth_mesh::config::BackendKind::Scripted;
    // The mesh is measured, not the trace store (no learning service runs here).
    config.learning.traces = false;
    // The mesh's own hops are measured: no memory service, no recall.
    config.memory.agent_memory = false;
    let parts = [
        Part::Engine,
        Part::Toolhost,
        Part::Operative,
        Part::Orchestrator,
    ];

    let local = Arc::new(CountingBus {
        inner: Arc::new(LocalBus::default()),
        requests: AtomicU64::new(0),
        frames: Arc::default(),
    });
    let mesh = start(&config, local.clone(), &parts).await?;
    let before = local.requests.load(Ordering::Relaxed);
    let frames_before = local.frames.load(Ordering::Relaxed);
    let in_process = run_tasks(
        &config,
        local.clone(),
        args.warmup,
        args.tasks,
        "in-process",
    )
    .await?;
    let hops = (local.requests.load(Ordering::Relaxed) - before) as f64
        / (args.tasks + args.warmup) as f64;
    let frames = (local.frames.load(Ordering::Relaxed) - frames_before) as f64
        / (args.tasks + args.warmup) as f64;
    mesh.shutdown().await;

    let url = args.nats_url.clone().or_else(|| base.nats_url.clone());
    let (nats, durable, raw) = match url {
        None => (None, Err(None), None),
        Some(url) => {
            let mut nc = config.clone();
            nc.nats_url = Some(url.clone());
            nc.subject_prefix = format!("bench{}", std::process::id());
            nc.work.durable = false;
            let bus: SharedBus = Arc::new(
                NatsBus::connect_with(&url, &config.bus)
                    .await
                    .context("connecting to NATS for the benchmark")?,
            );
            let mesh = start(&nc, bus.clone(), &parts).await?;
            let over = run_tasks(&nc, bus.clone(), args.warmup, args.tasks, "over NATS").await?;
            mesh.shutdown().await;
            let raw = raw_rtt(&url, &nc.subject_prefix, args.tasks.max(1000)).await?;
            let mut dc = nc.clone();
            dc.subject_prefix = format!("benchdurable{}", std::process::id());
            dc.work.durable = true;
            let durable = match start(&dc, bus.clone(), &parts).await {
                Ok(mesh) => {
                    let run =
                        run_tasks(&dc, bus, args.warmup, args.tasks, "over NATS, durable").await;
                    mesh.shutdown().await;
                    Ok(run?)
                }
                Err(e) => Err(Some(format!("{e:#}"))),
            };
            (Some(over), durable, Some(raw))
        }
    };
    let (nats_durable, nats_durable_error) = match durable {
        Ok(s) => (Some(s), None),
        Err(e) => (None, e),
    };
    let durable_ratio = nats_durable
        .as_ref()
        .zip(nats.as_ref())
        .map(|(d, n)| d.p50_ms / n.p50_ms.max(1e-9));
    let per_hop = nats
        .as_ref()
        .map(|s| (s.p50_ms - in_process.p50_ms) / hops.max(1.0));
    let ratio = per_hop
        .zip(raw.as_ref())
        .map(|(h, r)| h / r.p50_ms.max(1e-9));
    let report = MeshReport {
        target_in_process_met: in_process.p50_ms < 0.3,
        target_nats_met: ratio.map(|r| r < 1.5),
        in_process,
        nats,
        nats_durable,
        nats_durable_error,
        durable_ratio,
        raw_nats_rtt: raw,
        hops_per_task: hops,
        reply_frames_per_task: frames,
        nats_overhead_per_hop_ms: per_hop,
        overhead_ratio_to_raw_rtt: ratio,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Raw request/reply round trips through the same server: an echo
/// subscriber and a requester, both plain async-nats clients.
async fn raw_rtt(url: &str, prefix: &str, n: usize) -> Result<Series> {
    let server = async_nats::connect(url).await?;
    let client = async_nats::connect(url).await?;
    let subject = format!("{prefix}.raw.echo");
    let mut sub = server.subscribe(subject.clone()).await?;
    hearth_mesh::bus::subscriptions_in_force(&server).await?;
    let echo = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = server.publish(r, m.payload).await;
            }
        }
    });
    let payload = Bytes::from_static(&[0u8; 64]);
    for _ in 0..100 {
        client.request(subject.clone(), payload.clone()).await?;
    }
    let mut samples = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        client.request(subject.clone(), payload.clone()).await?;
        samples.push(s.elapsed());
    }
    let out = series(samples, t0.elapsed());
    echo.abort();
    Ok(out)
}

fn print_table(r: &MeshReport) {
    let mut t = comfy_table::Table::new();
    t.set_header(["series", "n", "p50 ms", "p99 ms", "per second"]);
    let mut row = |name: &str, s: &Series| {
        t.add_row(s.row(name));
    };
    row("task, in-process", &r.in_process);
    if let Some(s) = &r.nats {
        row("task, over NATS (request path)", s);
    }
    if let Some(s) = &r.nats_durable {
        row("task, over NATS (durable work queue)", s);
    }
    if let Some(s) = &r.raw_nats_rtt {
        row("raw NATS round trip (baseline)", s);
    }
    println!("{t}");
    println!(
        "hops (bus requests) per task: {:.1}, reply frames per task: {:.1}",
        r.hops_per_task, r.reply_frames_per_task
    );
    println!(
        "target: in-process p50 < 0.3 ms: {:.3} ms → {}",
        r.in_process.p50_ms,
        if r.target_in_process_met {
            "met"
        } else {
            "NOT met"
        }
    );
    match (
        r.nats_overhead_per_hop_ms,
        r.overhead_ratio_to_raw_rtt,
        r.target_nats_met,
    ) {
        (Some(h), Some(ratio), Some(met)) => println!(
            "target: NATS overhead per hop < 1.5× raw round trip: {h:.3} ms per hop = {ratio:.2}× → {}",
            if met { "met" } else { "NOT met" }
        ),
        _ => println!("over NATS: not run (set HEARTH_NATS_URL or pass --nats-url)"),
    }
    if let Some(ratio) = r.durable_ratio {
        println!("durable work queue: task p50 {ratio:.2}× the request path's");
    }
    if let Some(e) = &r.nats_durable_error {
        println!("durable work queue: not run: {e}");
    }
}
