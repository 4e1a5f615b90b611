//! `hearth bench code`: how fast the Python sandbox is.
//!
//! - warm: `print(1)` end to end through the tool (an MCP client in this
//!   process calling `run_python` on the code server; interpreter loaded);
//! - first run after a process start, with the compiled artifact cached: a
//!   new `hearth` process loads the interpreter and runs `print(1)`; the
//!   child reports the time from its own start to the result;
//! - runs/s with every slot busy;
//! - the baseline: the host's own `python3 -I -S -c 'print(1)'`, in the
//!   same run, as a ratio.
//!
//! Figures are medians (and p99 where there are many samples).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_mesh::Config;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde::Serialize;

/// Options of `hearth bench code`.
#[derive(Debug, Clone, clap::Args)]
pub struct CodeArgs {
    /// Warm runs (the median is reported).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// New processes for the first-run figure.
    #[arg(long, default_value_t = 5)]
    pub starts: usize,
    /// Seconds of the all-slots-busy run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// The host's Python, for the baseline.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct CodeReport {
    /// Median warm `print(1)` through the tool, ms.
    pub warm_p50_ms: f64,
    /// 99th percentile of the same, ms.
    pub warm_p99_ms: f64,
    /// Median process start to the first result, cache present, ms.
    pub first_run_ms: f64,
    /// Of which loading the interpreter (mapping the cached artifact), ms.
    pub load_ms: f64,
    /// Slots.
    pub slots: u32,
    /// Runs per second with every slot busy.
    pub runs_per_s: f64,
    /// Median of the host's `python3 -I -S -c 'print(1)'`, ms.
    pub native_p50_ms: Option<f64>,
    /// warm ÷ native.
    pub ratio_to_native: Option<f64>,
}

fn pct(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn print1() -> CallToolRequestParams {
    let mut args = serde_json::Map::new();
    args.insert("code".into(), "print(1)".into());
    CallToolRequestParams::new("run_python").with_arguments(args)
}

/// The hidden `hearth bench-code-first`: from this process's start, load
/// the interpreter and run `print(1)`; print the two times as JSON.
pub async fn first_run(config: &Config) -> Result<()> {
    let pool = hearth_code::Sandboxes::new(hearth_launch::builtins::code_options(config));
    let t = Instant::now();
    let p = pool.prepare().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if p.origin != hearth_code::Origin::Cached {
        bail!("the compiled interpreter was not cached: run `hearth tool code --precompile` first");
    }
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let out = pool
        .run(
            hearth_code::RunInput {
                code: "print(1)".into(),
                ..Default::default()
            },
            &[],
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if out.stdout.trim() != "1" {
        bail!("print(1) printed {:?}", out.stdout);
    }
    let since_start = hearth_launch::process_elapsed()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3;
    println!(
        "{}",
        serde_json::json!({ "first_run_ms": since_start, "load_ms": load_ms })
    );
    Ok(())
}

/// Runs the benchmark and prints its report.
pub async fn code(config: &Config, args: CodeArgs) -> Result<()> {
    let opts = hearth_launch::builtins::code_options(config);
    let slots = opts.slots;
    let pool = hearth_code::Sandboxes::new(opts);
    eprintln!("loading the interpreter (compiling it first if it is not cached: minutes) …");
    pool.prepare().await.map_err(|e| anyhow::anyhow!("{e}"))?;

    // Warm, through the tool.
    let (server_end, client_end) = hearth_toolhost::in_process_pair();
    let server = hearth_code::CodeServer::new(pool.clone());
    tokio::spawn(async move {
        if let Ok(s) = server.serve(server_end).await {
            let _ = s.waiting().await;
        }
    });
    let client = ().serve(client_end).await?;
    for _ in 0..3 {
        client.call_tool(print1()).await?;
    }
    let mut warm = Vec::new();
    for i in 0..args.runs {
        let t = Instant::now();
        let r = client.call_tool(print1()).await?;
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        if r.is_error == Some(true) {
            bail!("print(1) failed in the sandbox");
        }
        eprint!("\rwarm {}/{}", i + 1, args.runs);
    }
    eprintln!();
    client.cancel().await?;

    // All slots busy.
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let t0 = Instant::now();
    let workers = (0..slots).map(|_| {
        let pool = pool.clone();
        async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if pool
                    .run(
                        hearth_code::RunInput {
                            code: "print(1)".into(),
                            ..Default::default()
                        },
                        &[],
                        None,
                    )
                    .await
                    .is_ok()
                {
                    n += 1;
                }
            }
            n
        }
    });
    let total: u64 = futures::future::join_all(workers).await.into_iter().sum();
    let runs_per_s = total as f64 / t0.elapsed().as_secs_f64();
    eprintln!("busy run done");

    // First run after a process start.
    let exe = hearth_launch::current_exe()?;
    let (mut first, mut load) = (Vec::new(), Vec::new());
    for i in 0..args.starts {
        let out = tokio::process::Command::new(&exe)
            .arg("bench-code-first")
            .output()
            .await
            .context("starting hearth bench-code-first")?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "the child printed no figures: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        first.push(v["first_run_ms"].as_f64().unwrap_or(f64::NAN));
        load.push(v["load_ms"].as_f64().unwrap_or(f64::NAN));
        eprint!("\rfirst run {}/{}", i + 1, args.starts);
    }
    eprintln!();

    // The host's own CPython: the interpreter itself, not a launcher in
    // front of it (pyenv's shims are shell scripts).
    let python = tokio::process::Command::new(&args.python)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .await
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| args.python.clone());
    let mut native = Vec::new();
    for _ in 0..args.runs.min(30) {
        let t = Instant::now();
        let ok = tokio::process::Command::new(&python)
            .args(["-I", "-S", "-c", "print(1)"])
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            native.clear();
            break;
        }
        native.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let native_p50_ms = (!native.is_empty()).then(|| pct(native, 0.5));
    let warm_p50_ms = pct(warm.clone(), 0.5);
    let report = CodeReport {
        warm_p50_ms,
        warm_p99_ms: pct(warm, 0.99),
        first_run_ms: pct(first, 0.5),
        load_ms: pct(load, 0.5),
        slots,
        runs_per_s,
        native_p50_ms,
        ratio_to_native: native_p50_ms.map(|n| warm_p50_ms / n.max(1e-9)),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut t = comfy_table::Table::new();
    t.set_header(["figure", "value", "target"]);
    t.add_row([
        "print(1) through the tool, warm (p50 / p99)".to_string(),
        format!(
            "{:.1} ms / {:.1} ms",
            report.warm_p50_ms, report.warm_p99_ms
        ),
        format!("< 20 ms: {}", verdict(report.warm_p50_ms < 20.0)),
    ]);
    t.add_row([
        "first run after a process start, cache present".to_string(),
        format!(
            "{:.0} ms (of which {:.0} ms loading the interpreter)",
            report.first_run_ms, report.load_ms
        ),
        format!("< 150 ms: {}", verdict(report.first_run_ms < 150.0)),
    ]);
    t.add_row([
        format!("runs/s, all {} slots busy", report.slots),
        format!("{:.1}", report.runs_per_s),
        "-".into(),
    ]);
    t.add_row([
        format!("{python} -I -S -c 'print(1)' (baseline)"),
        report
            .native_p50_ms
            .map_or_else(|| "not measured".into(), |n| format!("{n:.1} ms")),
        report
            .ratio_to_native
            .map_or_else(|| "-".into(), |r| format!("sandbox ÷ native: {r:.2}×")),
    ]);
    println!("{t}");
    Ok(())
}
