//! `hearth bench engine`: what the configured engine does on this machine.
//!
//! - prefill: a prompt of about `--prompt-tokens` tokens (a different one
//!   each run, so the prefix cache cannot help) with one token to generate;
//!   prefill tokens/s = prompt tokens ÷ time to first token;
//! - decode: a short prompt and `--gen-tokens` to generate; decode tokens/s
//!   = (tokens − 1) ÷ (latency − time to first token);
//! - batched: `--concurrency` decode requests at once; throughput = all
//!   their tokens ÷ wall time, and its ratio to one request's decode rate;
//! - load: time to load the engine (the model file), and the resident
//!   memory it added beyond the model file's size;
//! - baseline (`--llama-bench PATH`): llama.cpp's own `llama-bench` (built
//!   from the source the crate vendors, by `scripts/build-llama-bench`) on the
//!   same GGUF file and thread count, in the same run: its decode tokens/s
//!   beside ours, as a ratio;
//! - cold start (`--cold N`): `hearth ask` run N times as a new process on
//!   the configured model; process start to first token = the process's
//!   start-up (mesh up, model loaded) + the first model call's time to first
//!   token, both reported by the child.
//!
//! Figures are medians over `--runs`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use hearth_engine::Backend;
use hearth_mesh::Config;
use hearth_proto::v1::{ChatMessage, GenerateRequest};
use serde::Serialize;

/// Options of `hearth bench engine`.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Approximate prompt length for the prefill runs, in tokens.
    #[arg(long, default_value_t = 256)]
    pub prompt_tokens: usize,
    /// Tokens to generate in the decode runs.
    #[arg(long, default_value_t = 64)]
    pub gen_tokens: u32,
    /// Runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Requests at once for the batched run.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// llama.cpp's `llama-bench` binary: run it on the same model and
    /// threads as the baseline (build it with scripts/build-llama-bench).
    #[arg(long)]
    pub llama_bench: Option<std::path::PathBuf>,
    /// llama.cpp's `llama-batched-bench` binary: its decode speed-up from
    /// one sequence to `--concurrency`, on the same model and threads, as
    /// the baseline for ours (built by scripts/build-llama-bench too).
    #[arg(long)]
    pub llama_batched_bench: Option<std::path::PathBuf>,
    /// Also time N cold starts of `hearth ask` (a new process each).
    #[arg(long, default_value_t = 0)]
    pub cold: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct EngineReport {
    /// Backend and model.
    pub backend: String,
    /// Model name.
    pub model: String,
    /// Seconds to load the engine.
    pub load_s: f64,
    /// Resident memory added by loading, beyond the model file, in MB
    /// (`None` where /proc is not readable or the size is unknown).
    pub memory_over_model_mb: Option<f64>,
    /// Prompt tokens per prefill run.
    pub prefill_tokens: u64,
    /// Median prefill rate.
    pub prefill_tok_s: f64,
    /// Median time to first token of the decode runs, in ms.
    pub ttft_ms: f64,
    /// Median decode rate, one request.
    pub decode_tok_s: f64,
    /// Requests at once in the batched run.
    pub concurrency: usize,
    /// Median total decode throughput with `concurrency` requests.
    pub batched_tok_s: f64,
    /// `batched_tok_s ÷ decode_tok_s`.
    pub batched_ratio: f64,
    /// FLOPs per generated token (2 × parameters), where reported.
    pub flops_per_token: Option<f64>,
    /// llama-bench on the same file and threads, when asked for.
    pub baseline: Option<Baseline>,
    /// Cold starts of `hearth ask`, when asked for.
    pub cold_start: Option<ColdStart>,
    /// llama-batched-bench's decode speed-up at the same concurrency.
    pub baseline_batched_ratio: Option<f64>,
}

/// llama.cpp's own benchmark, run in the same session.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    /// Threads both used.
    pub threads: usize,
    /// llama-bench's decode rate (its `tg` test), tokens/s.
    pub decode_tok_s: f64,
    /// llama-bench's prompt rate (its `pp` test), tokens/s.
    pub prefill_tok_s: f64,
    /// Our decode rate ÷ llama-bench's.
    pub decode_ratio: f64,
    /// Our prefill rate ÷ llama-bench's.
    pub prefill_ratio: f64,
}

/// `hearth ask` started cold.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStart {
    /// How many runs.
    pub runs: usize,
    /// Median process start to first token, ms.
    pub first_token_ms: f64,
    /// Median process start to the task being sent (mesh up, model loaded), ms.
    pub startup_ms: f64,
    /// Median wall time of the whole command (spawn to exit), ms.
    pub wall_ms: f64,
}

struct Run {
    tokens_in: u64,
    tokens_out: u64,
    ttft: Duration,
    total: Duration,
    flops: Option<f64>,
}

async fn run(backend: &dyn Backend, prompt: String, max_tokens: u32) -> Result<Run> {
    let req = GenerateRequest {
        messages: vec![ChatMessage {
            role: hearth_proto::v1::ChatRole::User.into(),
            content: prompt,
            ..Default::default()
        }],
        max_tokens,
        ..Default::default()
    };
    let start = Instant::now();
    let mut stream = backend.generate(req).await?;
    let mut ttft = None;
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if ttft.is_none() && !chunk.delta.is_empty() {
            ttft = Some(start.elapsed());
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    let total = start.elapsed();
    let u = usage.context("the engine reported no usage")?;
    Ok(Run {
        tokens_in: u.tokens_in,
        tokens_out: u.tokens_out,
        ttft: ttft.unwrap_or(total),
        total,
        flops: u.flops,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A prompt of roughly `tokens` tokens that no earlier run shares a prefix with.
fn long_prompt(run: usize, tokens: usize) -> String {
    let mut s = format!("Run {run}. Summarise the following notes.\n");
    let words = [
        "river", "stone", "harbour", "lantern", "orchard", "meadow", "copper", "signal", "winter",
        "garden",
    ];
    for i in 0..tokens.saturating_sub(12) {
        s.push_str(words[(i * 7 + run) % words.len()]);
        s.push(' ');
    }
    s
}

/// Runs the benchmark and prints its report.
pub async fn engine(config: &Config, args: EngineArgs) -> Result<()> {
    let before = rss_bytes();
    let t0 = Instant::now();
    let (cfg, data_dir) = (config.engine.clone(), config.data_dir());
    let backend =
        tokio::task::spawn_blocking(move || hearth_engine::backend_from_config(&cfg, &data_dir))
            .await
            .context("loading the engine")?
            .context("loading the engine")?;
    let load_s = t0.elapsed().as_secs_f64();
    let model_size = if config.engine.backend == hearth_mesh::config::BackendKind::Llama {
        hearth_engine::catalog::Catalog::builtin()
            .ok()
            .and_then(|c| c.resolve(&config.engine.model, &config.models_dir()).ok())
            .and_then(|r| std::fs::metadata(r.path).ok())
            .map(|m| m.len())
    } else {
        Some(0)
    };
    let memory_over_model_mb = match (before, rss_bytes(), model_size) {
        (Some(b), Some(a), Some(size)) => {
            Some((a.saturating_sub(b) as f64 - size as f64).max(0.0) / 1e6)
        }
        _ => None,
    };
    let runs = args.runs.max(1);
    let backend = backend.as_ref();

    // Warm up (first-use allocations, page cache).
    run(backend, "Hello.".into(), 4).await?;

    let mut prefill = Vec::new();
    let mut prefill_tokens = 0;
    for r in 0..runs {
        let x = run(backend, long_prompt(r, args.prompt_tokens), 1).await?;
        prefill_tokens = x.tokens_in;
        prefill.push(x.tokens_in as f64 / x.ttft.as_secs_f64().max(1e-9));
        eprint!("\rprefill {}/{runs}", r + 1);
    }
    eprintln!();

    let mut decode = Vec::new();
    let mut ttft = Vec::new();
    let mut flops_per_token = None;
    for r in 0..runs {
        let x = run(
            backend,
            format!("Story {r}: once upon a time, by the sea,"),
            args.gen_tokens,
        )
        .await?;
        let gen_time = (x.total - x.ttft).as_secs_f64().max(1e-9);
        decode.push(x.tokens_out.saturating_sub(1) as f64 / gen_time);
        ttft.push(x.ttft.as_secs_f64() * 1e3);
        flops_per_token = x
            .flops
            .map(|f| f / (x.tokens_in + x.tokens_out).max(1) as f64);
        eprint!("\rdecode {}/{runs}", r + 1);
    }
    eprintln!();

    let mut batched = Vec::new();
    for r in 0..runs {
        let start = Instant::now();
        let all = futures::future::join_all((0..args.concurrency.max(1)).map(|i| {
            run(
                backend,
                format!("Story {r}.{i}: once upon a time, in the hills,"),
                args.gen_tokens,
            )
        }))
        .await;
        let wall = start.elapsed().as_secs_f64().max(1e-9);
        let mut tokens = 0;
        for x in all {
            tokens += x?.tokens_out;
        }
        batched.push(tokens as f64 / wall);
        eprint!("\rbatched ×{} {}/{runs}", args.concurrency, r + 1);
    }
    eprintln!();

    let decode_tok_s = median(decode);
    let prefill_tok_s = median(prefill);
    let baseline = match &args.llama_bench {
        Some(bin) => Some(
            llama_bench(bin, config, args.prompt_tokens, args.gen_tokens, runs)
                .await
                .map(|(pp, tg, threads)| Baseline {
                    threads,
                    decode_tok_s: tg,
                    prefill_tok_s: pp,
                    decode_ratio: decode_tok_s / tg.max(1e-9),
                    prefill_ratio: prefill_tok_s / pp.max(1e-9),
                })
                .context("running llama-bench")?,
        ),
        None => None,
    };
    // Batched throughput counts prefill inside its wall time; compare it
    // with one request measured the same way.
    let mut single_wall = Vec::new();
    for r in 0..runs {
        let start = Instant::now();
        let x = run(
            backend,
            format!("Story {r}.x: once upon a time, in the hills,"),
            args.gen_tokens,
        )
        .await?;
        single_wall.push(x.tokens_out as f64 / start.elapsed().as_secs_f64().max(1e-9));
    }
    let single = median(single_wall);
    let batched_tok_s = median(batched);
    let report = EngineReport {
        backend: backend.kind().name().to_string(),
        model: backend.default_model().to_string(),
        load_s,
        memory_over_model_mb,
        prefill_tokens,
        prefill_tok_s,
        ttft_ms: median(ttft),
        decode_tok_s,
        concurrency: args.concurrency,
        batched_tok_s,
        batched_ratio: batched_tok_s / single.max(1e-9),
        flops_per_token,
        baseline,
        cold_start: None,
        baseline_batched_ratio: None,
    };
    let mut report = report;
    if let Some(bin) = &args.llama_batched_bench {
        report.baseline_batched_ratio = Some(
            llama_batched_bench(bin, config, args.gen_tokens, args.concurrency)
                .await
                .context("running llama-batched-bench")?,
        );
    }
    if args.cold > 0 {
        report.cold_start = Some(cold_starts(args.cold).await?);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The threads the engine decodes with (what llama-bench must use too).
fn engine_threads(config: &Config) -> usize {
    match config.engine.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    }
}

/// Runs llama-bench on the configured model: (prefill tok/s, decode tok/s, threads).
async fn llama_bench(
    bin: &std::path::Path,
    config: &Config,
    prompt_tokens: usize,
    gen_tokens: u32,
    runs: usize,
) -> Result<(f64, f64, usize)> {
    let catalog = hearth_engine::catalog::Catalog::builtin()?;
    let model = catalog.resolve(&config.engine.model, &config.models_dir())?;
    let threads = engine_threads(config);
    eprintln!("llama-bench (baseline) on {} …", model.path.display());
    let out = tokio::process::Command::new(bin)
        .arg("-m")
        .arg(&model.path)
        .args(["-t", &threads.to_string()])
        .args(["-p", &prompt_tokens.to_string()])
        .args(["-n", &gen_tokens.to_string()])
        .args(["-r", &runs.max(1).to_string()])
        .args(["-o", "json"])
        .output()
        .await
        .with_context(|| format!("starting {}", bin.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).context("reading llama-bench's JSON")?;
    let rate = |want_prompt: bool| {
        rows.iter()
            .find(|r| {
                let n_prompt = r.get("n_prompt").and_then(|v| v.as_u64()).unwrap_or(0);
                (n_prompt > 0) == want_prompt
            })
            .and_then(|r| r.get("avg_ts").and_then(|v| v.as_f64()))
    };
    let pp = rate(true).context("llama-bench reported no prompt test")?;
    let tg = rate(false).context("llama-bench reported no generation test")?;
    Ok((pp, tg, threads))
}

/// llama-batched-bench's total decode rate at `concurrency` sequences over
/// its rate at one, on the configured model and threads.
async fn llama_batched_bench(
    bin: &std::path::Path,
    config: &Config,
    gen_tokens: u32,
    concurrency: usize,
) -> Result<f64> {
    let catalog = hearth_engine::catalog::Catalog::builtin()?;
    let model = catalog.resolve(&config.engine.model, &config.models_dir())?;
    eprintln!("llama-batched-bench (baseline) …");
    let out = tokio::process::Command::new(bin)
        .arg("-m")
        .arg(&model.path)
        .args(["-t", &engine_threads(config).to_string()])
        .args(["-c", "8192", "-npp", "32", "-ntg", &gen_tokens.to_string()])
        .args([
            "-npl",
            &format!("1,{concurrency}"),
            "--output-format",
            "jsonl",
        ])
        .output()
        .await
        .with_context(|| format!("starting {}", bin.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "llama-batched-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        );
    }
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let tg = |pl: usize| {
        rows.iter()
            .find(|r| r.get("pl").and_then(|v| v.as_u64()) == Some(pl as u64))
            .and_then(|r| r.get("speed_tg").and_then(|v| v.as_f64()))
    };
    let one = tg(1).context("llama-batched-bench reported no single-sequence row")?;
    let many = tg(concurrency).context("llama-batched-bench reported no batched row")?;
    Ok(many / one.max(1e-9))
}

/// Times `runs` cold starts of `hearth ask` on the configured engine.
async fn cold_starts(runs: usize) -> Result<ColdStart> {
    let exe = hearth_launch::current_exe()?;
    let (mut first, mut startup, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let t0 = Instant::now();
        let out = tokio::process::Command::new(&exe)
            .args(["ask", "What is 2+2?", "--json"])
            .output()
            .await
            .context("starting hearth ask")?;
        let took = t0.elapsed().as_secs_f64() * 1e3;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "hearth ask printed no JSON: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let s = v.get("startup_ms").and_then(|x| x.as_f64()).unwrap_or(0.0);
        let t = v
            .pointer("/usage/ttft_ms")
            .and_then(|x| x.as_f64())
            .unwrap_or(0.0);
        first.push(s + t);
        startup.push(s);
        wall.push(took);
        eprint!("\rcold start {}/{runs}", r + 1);
    }
    eprintln!();
    Ok(ColdStart {
        runs,
        first_token_ms: median(first),
        startup_ms: median(startup),
        wall_ms: median(wall),
    })
}

fn print_table(r: &EngineReport) {
    let mut t = comfy_table::Table::new();
    t.set_header(["figure", "value"]);
    t.add_row(["engine".to_string(), format!("{} · {}", r.backend, r.model)]);
    t.add_row(["load".to_string(), format!("{:.2} s", r.load_s)]);
    t.add_row([
        "memory beyond the model file".to_string(),
        r.memory_over_model_mb
            .map_or_else(|| "unknown".into(), |m| format!("{m:.0} MB")),
    ]);
    t.add_row([
        format!("prefill ({} tokens)", r.prefill_tokens),
        format!("{:.0} tokens/s", r.prefill_tok_s),
    ]);
    t.add_row([
        "time to first token".to_string(),
        format!("{:.0} ms", r.ttft_ms),
    ]);
    t.add_row([
        "decode, one request".to_string(),
        format!("{:.1} tokens/s", r.decode_tok_s),
    ]);
    t.add_row([
        format!("decode, {} at once", r.concurrency),
        format!(
            "{:.1} tokens/s ({:.2}× one request, wall-clock both)",
            r.batched_tok_s, r.batched_ratio
        ),
    ]);
    if let Some(f) = r.flops_per_token {
        t.add_row(["FLOPs per token".to_string(), format!("{f:.3e}")]);
    }
    if let Some(b) = &r.baseline {
        t.add_row([
            format!("llama-bench decode ({} threads)", b.threads),
            format!(
                "{:.1} tokens/s (ours {:.2}×)",
                b.decode_tok_s, b.decode_ratio
            ),
        ]);
        t.add_row([
            "llama-bench prefill".to_string(),
            format!(
                "{:.0} tokens/s (ours {:.2}×)",
                b.prefill_tok_s, b.prefill_ratio
            ),
        ]);
    }
    if let Some(b) = r.baseline_batched_ratio {
        t.add_row([
            format!("llama-batched-bench, {} at once", r.concurrency),
            format!("{b:.2}× one sequence (decode only)"),
        ]);
    }
    if let Some(c) = &r.cold_start {
        t.add_row([
            format!("cold start of hearth ask ({} runs)", c.runs),
            format!(
                "{:.0} ms to first token ({:.0} ms start-up; {:.0} ms whole command)",
                c.first_token_ms, c.startup_ms, c.wall_ms
            ),
        ]);
    }
    println!("{t}");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "target: {} requests at once ≥ 2× one request's throughput: {:.2}× → {}",
        r.concurrency,
        r.batched_ratio,
        verdict(r.batched_ratio >= 2.0)
    );
    if let Some(b) = &r.baseline {
        println!(
            "target: decode ≥ 0.95× llama-bench: {:.2}× → {}",
            b.decode_ratio,
            verdict(b.decode_ratio >= 0.95)
        );
    }
    if let Some(c) = &r.cold_start {
        println!(
            "target: cold start to first token < 1500 ms: {:.0} ms → {}",
            c.first_token_ms,
            verdict(c.first_token_ms < 1500.0)
        );
    }
    if let Some(m) = r.memory_over_model_mb {
        println!(
            "target: engine memory above the model < 200 MB: {m:.0} MB → {}",
            verdict(m < 200.0)
        );
    }
}
