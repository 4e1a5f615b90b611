//! `hearth traces`, `hearth eval` and `hearth learn`: the learning loop at
//! the command line.
//!
//! Evaluation and synthesis each run a mesh of their own in this process,
//! on a fresh files root, memory and trace directory (nothing of the user's
//! is read or written), so a run measures the configuration and nothing
//! else. Training is the standalone Python trainer under
//! `services/learning/train/`; the gate evaluates base and base+adapter on
//! the held-out suites in the same run and deploys only a clear winner.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use hearth_engine::adapters;
use hearth_learning::convert::{Rating, Source, TraceDoc};
use hearth_learning::eval::{self, Asked, Report, Runner, Suite};
use hearth_learning::store::TraceStore;
use hearth_learning::synth::{self, Teacher};
use hearth_mesh::clients::{EngineClient, LearningClient, MemoryClient, methods};
use hearth_mesh::rpc;
use hearth_mesh::subjects::Service;
use hearth_mesh::{Config, LocalBus, SharedBus};
use hearth_proto::v1::{GenerateChunk, GenerateRequest, TracesRequest};
use serde::Serialize;

use hearth_launch::{Mesh, Part, ask, start};

fn store(config: &Config) -> TraceStore {
    TraceStore::open(hearth_learning::traces_dir(config, &config.data_dir()))
}

fn short(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

/// `hearth traces list`.
pub fn traces_list(config: &Config, limit: usize, json: bool) -> Result<()> {
    let all = store(config).list()?;
    let shown: Vec<_> = all.into_iter().take(limit).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    if shown.is_empty() {
        println!(
            "no traces yet (every `hearth ask` records one; [learning] traces = false turns that off)"
        );
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "id", "agent", "task", "outcome", "calls", "tools", "ms", "feedback",
    ]);
    for s in shown {
        t.add_row([
            s.id,
            s.agent,
            short(&s.task, 40),
            short(&s.outcome, 40),
            s.model_calls.to_string(),
            s.tool_calls.to_string(),
            format!("{:.0}", s.duration_ms),
            s.feedback
                .map(|r| format!("{r:?}").to_lowercase())
                .unwrap_or_default(),
        ]);
    }
    println!("{t}");
    Ok(())
}

/// `hearth traces show`.
pub fn traces_show(config: &Config, id: &str, json: bool) -> Result<()> {
    let doc = store(config).get(id)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "trace {} · agent {} · {:.0} ms · {} model call(s) · {} tool call(s){}",
        doc.id,
        doc.agent,
        doc.duration_ms,
        doc.model_calls.len(),
        doc.tool_runs.len(),
        if doc.parent_task_id.is_empty() {
            String::new()
        } else {
            format!(" · delegated by {}", doc.parent_task_id)
        }
    );
    for m in &doc.messages {
        let mut text = short(&m.content, 300);
        for c in &m.tool_calls {
            text.push_str(&format!(" → {}({})", c.name, short(&c.arguments, 200)));
        }
        println!("  [{}] {}", m.role, text);
    }
    for c in &doc.model_calls {
        println!(
            "  model {} ({}): {} in / {} out, {:.0} ms",
            c.model, c.backend, c.tokens_in, c.tokens_out, c.latency_ms
        );
    }
    if !doc.error.is_empty() {
        println!("  error: {}", doc.error);
    }
    if let Some(f) = &doc.feedback {
        println!(
            "  feedback: {:?}{}",
            f.rating,
            f.correction
                .as_ref()
                .map(|c| format!(" (correction: {c})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `hearth traces rm`.
pub fn traces_rm(config: &Config, ids: &[String], all: bool) -> Result<()> {
    let s = store(config);
    if all {
        let list = s.list()?;
        for t in &list {
            s.rm(&t.id)?;
        }
        println!("removed {} traces", list.len());
        return Ok(());
    }
    if ids.is_empty() {
        bail!("name the traces to remove, or --all");
    }
    for id in ids {
        s.rm(id)?;
    }
    println!("removed {} trace(s)", ids.len());
    Ok(())
}

/// `hearth traces feedback`. A bad rating also takes the wrong answer out
/// of the agents' memory (the outcome the task and each of its subtasks was
/// remembered with), so it is not recalled into later tasks; a correction
/// given with it is remembered in its place by the agents that had
/// remembered the task.
pub async fn traces_feedback(
    config: &Config,
    id: &str,
    rating: Rating,
    correction: Option<String>,
    json: bool,
) -> Result<()> {
    let store = store(config);
    store.feedback(id, rating, correction.clone())?;
    let mut forgot = 0;
    let mut corrected = Vec::new();
    if rating == Rating::Bad {
        let tree = store.tree(id)?;
        let session = hearth_launch::Session::open(config, &[Part::Engine, Part::Memory]).await?;
        let client = MemoryClient::new(
            session.bus.clone(),
            config.subjects(),
            Duration::from_secs(120),
        );
        let r = unremember(&client, &tree, correction.as_deref()).await;
        session.close().await;
        (forgot, corrected) = r?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "id": id,
                "rating": rating,
                "forgotten": forgot,
                "corrected_for": corrected,
            })
        );
        return Ok(());
    }
    println!("recorded: {id} is {}", format!("{rating:?}").to_lowercase());
    if rating == Rating::Bad {
        println!("forgot {forgot} remembered answer(s) of this task and its subtasks");
        if !corrected.is_empty() {
            println!("the correction is remembered by: {}", corrected.join(", "));
        }
    }
    Ok(())
}

/// Forgets the remembered answers of every task in `tree`; where one went
/// and there is a `correction`, remembers the correction for that agent
/// and task. Returns how many went and which agents took the correction.
async fn unremember(
    client: &MemoryClient,
    tree: &[TraceDoc],
    correction: Option<&str>,
) -> Result<(u64, Vec<String>)> {
    use hearth_agents::memory::{self as mem, AgentMemory};
    let memory = mem::BusMemory::new(client.clone());
    let mut forgot = 0;
    let mut corrected = Vec::new();
    for doc in tree {
        let task_id = doc.id.split('.').next().unwrap_or_default();
        let n = mem::forget_outcome(client, task_id)
            .await
            .map_err(|e| anyhow::anyhow!("forgetting {task_id}'s answer: {e}"))?;
        forgot += n;
        let task = doc
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str());
        if let (true, Some(fix), Some(task)) = (n > 0, correction, task) {
            memory
                .remember(
                    &doc.agent,
                    task_id,
                    mem::Kind::Correction,
                    &mem::outcome_text(task, fix),
                )
                .await
                .map_err(|e| anyhow::anyhow!("remembering the correction: {e}"))?;
            corrected.push(doc.agent.clone());
        }
    }
    Ok((forgot, corrected))
}

/// A mesh of its own for an evaluation or a synthesis run: a fresh files
/// root, memory and trace directory under a temporary folder.
struct Isolated {
    dir: tempfile::TempDir,
    config: Config,
}

impl Isolated {
    fn new(config: &Config) -> Result<Self> {
        let base = config.data_dir().join("learning").join("tmp");
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let dir = tempfile::tempdir_in(&base).context("making a run directory")?;
        let mut c = config.clone();
        c.nats_url = None;
        c.tools.files.root = Some(dir.path().join("workspace"));
        c.tools.files.read_only = false;
        c.memory.dir = Some(dir.path().join("memory"));
        c.memory.qdrant_url = None;
        c.learning.dir = Some(dir.path().join("traces"));
        c.learning.traces = true;
        c.learning.keep_days = 0;
        c.learning.max_traces = 0;
        c.toolhost.audit_log = Some(dir.path().join("audit.jsonl"));
        c.toolhost.approvals = Some(dir.path().join("approvals.json"));
        std::fs::create_dir_all(dir.path().join("workspace"))?;
        Ok(Self { dir, config: c })
    }
}

/// Runs cases on an in-process mesh.
struct MeshRunner {
    config: Config,
    bus: SharedBus,
    files_root: PathBuf,
}

#[async_trait::async_trait]
impl Runner for MeshRunner {
    async fn ask(&self, prompt: &str) -> Result<Asked, String> {
        let a = ask(&self.config, self.bus.clone(), prompt, &|_| {})
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok(Asked {
            completed: a.completed(),
            answer: a.answer,
            state: a.state,
            task_id: a.task_id,
            latency_ms: a.usage.latency_ms,
            tokens_in: a.usage.tokens_in,
            tokens_cached: a.usage.tokens_cached,
            tokens_out: a.usage.tokens_out,
            model_calls: a.usage.model_calls,
            energy_joules: a.usage.energy_joules,
            cost_usd: a.usage.cost_usd,
        })
    }

    async fn tools_called(&self, task_id: &str) -> Vec<String> {
        let client = LearningClient::new(
            self.bus.clone(),
            self.config.subjects(),
            self.config.request_timeout(),
        );
        // Traces are sent as each run ends: wait until the task's own and
        // one per delegation are there.
        let mut names = Vec::new();
        for _ in 0..40 {
            if let Ok(r) = client
                .traces(&TracesRequest {
                    task_id: task_id.to_string(),
                })
                .await
            {
                names = r
                    .traces
                    .iter()
                    .flat_map(|t| t.tool_runs.iter().map(|x| x.name.clone()))
                    .collect::<Vec<_>>();
                let delegations = names
                    .iter()
                    .filter(|n| n.as_str() == hearth_orchestrator::DELEGATE_TOOL)
                    .count();
                // The task's own trace is there, and one per delegation.
                let own = r.traces.iter().any(|t| t.task_id == task_id);
                if own && r.traces.len() > delegations {
                    return names;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        names
    }

    async fn ingest(&self, dir: &Path) -> Result<(), String> {
        let client = MemoryClient::new(
            self.bus.clone(),
            self.config.subjects(),
            Duration::from_secs(600),
        );
        hearth_memory::ingest::ingest(&client, hearth_launch::builtins::DOCUMENTS, dir, &|_, _| {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn files_root(&self) -> PathBuf {
        self.files_root.clone()
    }
}

/// What a run was evaluated with.
fn describe(config: &Config) -> serde_json::Value {
    serde_json::json!({
        "backend": config.engine.backend,
        "model": if config.engine.model.is_empty() { "(default)" } else { config.engine.model.as_str() },
        "lora": config.engine.lora.iter().map(|l| l.path.display().to_string()).collect::<Vec<_>>(),
        "learned_adapter": config.engine.learned_adapter,
    })
}

/// Evaluates `suites` on a mesh of its own under `config`.
async fn evaluate(config: &Config, suites: &[Suite], label: &str, quiet: bool) -> Result<Report> {
    evaluate_keeping(config, suites, label, quiet, None).await
}

/// The same, keeping the trajectories of passing cases in `keep` (marked as
/// rejection-sampled: the checker verified them).
async fn evaluate_keeping(
    config: &Config,
    suites: &[Suite],
    label: &str,
    quiet: bool,
    keep: Option<&Path>,
) -> Result<Report> {
    let iso = Isolated::new(config)?;
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&iso.config, bus.clone(), &Part::TASK)
        .await
        .context("starting the evaluation mesh")?;
    let runner = MeshRunner {
        config: iso.config.clone(),
        bus,
        files_root: iso.dir.path().join("workspace"),
    };
    let total: usize = suites.iter().map(|s| s.cases.len()).sum();
    let bar = progress_bar(total as u64, quiet, label);
    let progress = |r: &eval::CaseResult, _done: usize, _total: usize| {
        bar.inc(1);
        bar.set_message(format!(
            "{} {}",
            if r.passed { "✓" } else { "✗" },
            short(&r.id, 30)
        ));
        if !bar.is_hidden() {
            return;
        }
        tracing::debug!(case = %r.id, passed = r.passed, "case scored");
    };
    let report = eval::run(&runner, suites, describe(config), &progress).await;
    bar.finish_and_clear();
    if let Some(keep) = keep {
        // Let the last traces land.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let from = TraceStore::open(iso.dir.path().join("traces"));
        let to = TraceStore::open(keep);
        for r in report.results.iter().filter(|r| r.passed) {
            for mut doc in from.tree(&r.task_id)? {
                doc.source = Source::Rejection;
                doc.id = doc.id.split('.').next().unwrap_or_default().to_string();
                to.put(doc)?;
            }
        }
    }
    mesh.shutdown().await;
    Ok(report)
}

fn progress_bar(total: u64, quiet: bool, label: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{label} {{wide_bar}} {{pos}}/{{len}} {{msg}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

fn save_report(config: &Config, report: &Report) -> Result<PathBuf> {
    let dir = config.data_dir().join("eval");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.json", report.run_id));
    std::fs::write(&path, serde_json::to_vec_pretty(report)?)?;
    Ok(path)
}

fn print_report(report: &Report) {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["suite", "cases", "passed", "accuracy"]);
    for s in &report.suites {
        t.add_row([
            s.name.clone(),
            s.cases.to_string(),
            s.passed.to_string(),
            format!("{:.0}%", s.accuracy * 100.0),
        ]);
    }
    t.add_row([
        "all".to_string(),
        report.cases.to_string(),
        report.passed.to_string(),
        format!("{:.0}%", report.accuracy * 100.0),
    ]);
    println!("{t}");
    let fmt = |x: Option<f64>, unit: &str| x.map_or("n/a".into(), |v| format!("{v:.1}{unit}"));
    println!(
        "median per case: {} · {} tokens in ({} computed, the rest from the prompt cache) · {} out · energy {} · cost {}",
        fmt(report.median_latency_ms, " ms"),
        fmt(report.median_tokens_in, ""),
        fmt(report.median_tokens_computed, ""),
        fmt(report.median_tokens_out, ""),
        fmt(report.median_energy_joules, " J"),
        report
            .median_cost_usd
            .map_or("n/a".into(), |c| format!("${c:.6}"))
    );
    for r in report.results.iter().filter(|r| !r.passed) {
        println!(
            "✗ {} — {} (answer: {})",
            r.id,
            r.reason.as_deref().unwrap_or(""),
            short(&r.answer, 80)
        );
    }
}

/// `hearth eval run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Suites: a JSONL path, a shipped suite (`calculator` is its held-out
    /// split, `calculator.train` its training split), or `held-out` for
    /// every shipped held-out split.
    #[arg(required = true)]
    pub suites: Vec<String>,
    /// Run with this LoRA adapter (GGUF) instead of the configured one.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Run the base model alone: no deployed or shipped adapter.
    #[arg(long, conflicts_with = "adapter")]
    pub base: bool,
    /// Print one JSON object: cases, passed, accuracy, suites, results, medians.
    #[arg(long)]
    pub json: bool,
}

fn with_adapter(config: &Config, adapter: Option<&Path>, base: bool) -> Config {
    let mut c = config.clone();
    if let Some(a) = adapter {
        c.engine.lora = vec![hearth_mesh::config::LoraAdapter {
            path: a.to_path_buf(),
            scale: 1.0,
        }];
    } else if base {
        c.engine.lora.clear();
        c.engine.learned_adapter = false;
    }
    c
}

fn load_suites(specs: &[String]) -> Result<Vec<Suite>> {
    let mut out = Vec::new();
    for s in specs {
        out.extend(eval::load(s)?);
    }
    Ok(out)
}

/// `hearth eval run`.
pub async fn eval_run(config: &Config, args: EvalArgs) -> Result<()> {
    let suites = load_suites(&args.suites)?;
    let cfg = with_adapter(config, args.adapter.as_deref(), args.base);
    let report = evaluate(&cfg, &suites, "eval", args.json).await?;
    let path = save_report(config, &report)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
        println!("report: {}", path.display());
    }
    Ok(())
}

/// How many made-up notes synthesis writes for its retrieval tasks.
const NOTES: usize = 60;

/// Held-out prompts: never in training data.
fn held_out_prompts() -> Vec<String> {
    eval::HELD_OUT
        .iter()
        .filter_map(|n| eval::load(n).ok())
        .flatten()
        .flat_map(|s| s.cases.into_iter().map(|c| c.prompt))
        .collect()
}

fn corpus_topics(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut topics: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("# ").map(|h| h.trim().to_string()))
        })
        .collect();
    topics.sort();
    topics
}

/// `hearth learn sample`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// Suites to sample (default: every shipped training split).
    pub suites: Vec<String>,
    /// Trajectories drawn per case.
    #[arg(long, default_value_t = 4)]
    pub samples: u32,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Where the verified trajectories go (default: the data dir's
    /// learning/rejection/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

fn rejection_dir(config: &Config) -> PathBuf {
    config.data_dir().join("learning").join("rejection")
}

/// `hearth learn sample`: rejection sampling. The current model draws
/// several trajectories per training case at a raised temperature; only
/// those the checker verifies are kept, as training data.
pub async fn sample_cmd(config: &Config, args: SampleArgs) -> Result<()> {
    let specs: Vec<String> = if args.suites.is_empty() {
        eval::SHIPPED
            .iter()
            .filter(|(n, _)| n.ends_with(".train"))
            .map(|(n, _)| n.to_string())
            .collect()
    } else {
        args.suites.clone()
    };
    let suites = load_suites(&specs)?;
    if suites
        .iter()
        .any(|s| eval::HELD_OUT.contains(&s.name.as_str()))
    {
        bail!("held-out suites are never sampled for training");
    }
    let out = args.out.clone().unwrap_or_else(|| rejection_dir(config));
    let mut cfg = config.clone();
    cfg.engine.temperature = Some(args.temperature);
    let (mut drawn, mut kept) = (0usize, 0usize);
    for i in 0..args.samples {
        let r = evaluate_keeping(
            &cfg,
            &suites,
            &format!("sample {}", i + 1),
            args.json,
            Some(&out),
        )
        .await?;
        drawn += r.cases;
        kept += r.passed;
    }
    let summary = serde_json::json!({"drawn": drawn, "verified": kept, "out": out, "temperature": args.temperature});
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{kept} of {drawn} sampled trajectories verified and kept in {}",
            out.display()
        );
    }
    Ok(())
}

/// `hearth learn synth`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// How many tasks to generate and run.
    #[arg(long, default_value_t = 1200)]
    pub count: usize,
    /// The generators' seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the trajectories' traces go (default: the data dir's
    /// learning/synth/, replaced).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// The default synthetic trace directory.
fn synth_dir(config: &Config) -> PathBuf {
    config.data_dir().join("learning").join("synth")
}

/// What a synthesis run made.
#[derive(Debug, Serialize)]
pub struct SynthSummary {
    /// Tasks run.
    pub tasks: usize,
    /// Tasks that ended with an answer.
    pub completed: usize,
    /// Per capability: (tasks, completed).
    pub by_capability: Vec<(String, usize, usize)>,
    /// Traces written.
    pub traces: usize,
    /// Where.
    pub dir: PathBuf,
    /// Seconds.
    pub seconds: f64,
}

/// `hearth learn synth`: generated tasks through the real mesh, the teacher
/// playing the model, real tools answering.
pub async fn synth_cmd(config: &Config, args: SynthArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| synth_dir(config));
    let summary = synthesize(config, args.count, args.seed, &out, args.json).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} tasks ({} completed) → {} traces in {} · {:.1} s",
            summary.tasks,
            summary.completed,
            summary.traces,
            summary.dir.display(),
            summary.seconds
        );
        for (c, n, ok) in &summary.by_capability {
            println!("  {c}: {ok}/{n}");
        }
    }
    Ok(())
}

async fn synthesize(
    config: &Config,
    count: usize,
    seed: u64,
    out: &Path,
    quiet: bool,
) -> Result<SynthSummary> {
    let t0 = Instant::now();
    let corpus = eval::shipped_dir().join("corpus");
    let notes = synth::notes(NOTES, seed);
    let plans = synth::generate(
        count,
        seed,
        &corpus_topics(&corpus),
        &notes,
        &held_out_prompts(),
    );
    let iso = Isolated::new(config)?;
    // The made-up notes the retrieval tasks ask about, beside the shipped corpus.
    let notes_dir = iso.dir.path().join("notes");
    std::fs::create_dir_all(&notes_dir)?;
    for n in &notes {
        std::fs::write(notes_dir.join(&n.file), &n.text)
            .with_context(|| format!("writing {}", n.file))?;
    }
    let mut cfg = iso.config.clone();
    cfg.learning.dir = Some(out.to_path_buf());
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    let bus: SharedBus = Arc::new(LocalBus::default());
    // The real engine for embeddings (agent memory, retrieval); the teacher
    // for generation.
    let (engine_cfg, data_dir) = (cfg.engine.clone(), cfg.data_dir());
    let backend = tokio::task::spawn_blocking(move || {
        hearth_engine::backend_from_config(&engine_cfg, &data_dir)
    })
    .await??;
    let svc = hearth_engine::EngineService::new(
        backend,
        hearth_engine::service::Metering::none("synthesis"),
    )
    .with_embeddings(hearth_engine::embeddings_for(&cfg.engine, &cfg.data_dir()));
    let subjects = cfg.subjects();
    let mut handles = Vec::new();
    let embed_svc = svc.clone();
    handles.push(
        rpc::serve_unary(
            bus.clone(),
            subjects.method(Service::Engine, methods::EMBED),
            None,
            move |req: hearth_proto::v1::EmbedRequest| {
                let svc = embed_svc.clone();
                async move {
                    use hearth_proto::v1::engine_server::Engine;
                    svc.embed(tonic::Request::new(req))
                        .await
                        .map(tonic::Response::into_inner)
                }
            },
        )
        .await?,
    );
    let teacher = Arc::new(Teacher::new(&plans));
    handles.push(
        rpc::serve_stream(
            bus.clone(),
            subjects.method(Service::Engine, methods::GENERATE),
            None,
            move |req: GenerateRequest| {
                let chunk: GenerateChunk = teacher.reply(&req);
                async move { Ok(futures::stream::iter([Ok::<_, tonic::Status>(chunk)])) }
            },
        )
        .await?,
    );
    let learning = hearth_learning::LearningService::new(&cfg, out.to_path_buf(), Source::Synth);
    let mut mesh: Mesh = start(
        &cfg,
        bus.clone(),
        &[
            Part::Memory,
            Part::Toolhost,
            Part::Operative,
            Part::Orchestrator,
        ],
    )
    .await?;
    mesh.handles_mut()
        .extend(hearth_learning::serve(learning, bus.clone(), &cfg).await?);
    mesh.handles_mut().extend(handles);
    let memory = MemoryClient::new(bus.clone(), subjects.clone(), Duration::from_secs(600));
    for dir in [&corpus, &notes_dir] {
        if let Err(e) = hearth_memory::ingest::ingest(
            &memory,
            hearth_launch::builtins::DOCUMENTS,
            dir,
            &|_, _| {},
        )
        .await
        {
            tracing::warn!(error = %e, "the notes for retrieval tasks were not ingested");
        }
    }
    let bar = progress_bar(plans.len() as u64, quiet, "synth");
    let shared = Arc::new(cfg.clone());
    let results: Vec<(synth::Capability, bool)> = futures::stream::iter(plans.clone())
        .map(|p| {
            let bus = bus.clone();
            let cfg = shared.clone();
            let bar = bar.clone();
            async move {
                let ok = ask(&cfg, bus, &p.prompt, &|_| {})
                    .await
                    .map(|a| a.completed())
                    .unwrap_or(false);
                bar.inc(1);
                (p.capability, ok)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    bar.finish_and_clear();
    // Let the last traces land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.shutdown().await;
    drop(iso);
    let traces = TraceStore::open(out).all()?.len();
    let by_capability = synth::Capability::ALL
        .iter()
        .map(|c| {
            let mine: Vec<_> = results.iter().filter(|(x, _)| x == c).collect();
            (
                c.as_str().to_string(),
                mine.len(),
                mine.iter().filter(|(_, ok)| *ok).count(),
            )
        })
        .collect();
    Ok(SynthSummary {
        tasks: results.len(),
        completed: results.iter().filter(|(_, ok)| *ok).count(),
        by_capability,
        traces,
        dir: out.to_path_buf(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A dataset format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `{"messages": […], "tools": […]}` in the OpenAI chat format (what
    /// Hugging Face `datasets` and TRL read).
    Sft,
    /// One row per model call: the prompt and reply exactly as the engine's
    /// model reads and writes them, text and token ids (what the trainer reads).
    Rendered,
}

/// `hearth learn export`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The format.
    #[arg(long, value_enum, default_value = "sft")]
    pub format: Format,
    /// Where to write the JSONL.
    #[arg(long)]
    pub out: PathBuf,
    /// Only traces started at or after this Unix time (seconds).
    #[arg(long)]
    pub since: Option<i64>,
    /// Only this agent's traces.
    #[arg(long)]
    pub agent: Option<String>,
    /// Trace directories to read (default: the trace store and the
    /// synthesised trajectories).
    #[arg(long)]
    pub traces: Vec<PathBuf>,
}

/// What an export wrote.
#[derive(Debug, Serialize)]
pub struct ExportSummary {
    /// Traces used.
    pub traces: usize,
    /// Rows written.
    pub rows: usize,
    /// Rows per source.
    pub by_source: Vec<(String, usize)>,
    /// The file.
    pub out: PathBuf,
}

fn gather(config: &Config, dirs: &[PathBuf]) -> Result<Vec<TraceDoc>> {
    let dirs = if dirs.is_empty() {
        vec![
            hearth_learning::traces_dir(config, &config.data_dir()),
            synth_dir(config),
            rejection_dir(config),
        ]
    } else {
        dirs.to_vec()
    };
    let mut all = Vec::new();
    for d in dirs {
        all.extend(TraceStore::open(d).all()?);
    }
    Ok(all)
}

/// Writes the export; rendering starts an engine here.
pub async fn export(config: &Config, args: &ExportArgs) -> Result<ExportSummary> {
    use std::io::Write;
    let all = gather(config, &args.traces)?;
    let picked = hearth_learning::export::select(
        &all,
        &hearth_learning::export::Filter {
            since_ms: args.since.map(|s| s * 1000),
            agent: args.agent.clone(),
            exclude_prompts: held_out_prompts(),
        },
    );
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let part = args.out.with_extension("jsonl.part");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?,
    );
    let mut rows = 0usize;
    let mut by_source: std::collections::BTreeMap<String, usize> = Default::default();
    match args.format {
        Format::Sft => {
            for d in &picked {
                writeln!(w, "{}", hearth_learning::export::sft_row(d))?;
                rows += 1;
                *by_source.entry(d.source.as_str().into()).or_default() += 1;
            }
        }
        Format::Rendered => {
            let mut cfg = config.clone();
            cfg.nats_url = None;
            let bus: SharedBus = Arc::new(LocalBus::default());
            let mesh = start(&cfg, bus.clone(), &[Part::Engine]).await?;
            let engine = EngineClient::new(bus, cfg.subjects(), cfg.engine_timeout());
            for d in &picked {
                for req in hearth_learning::export::render_requests(d) {
                    let r = engine
                        .render(&req)
                        .await
                        .map_err(|s| anyhow::anyhow!("rendering {}: {}", d.id, s.message()))?;
                    writeln!(
                        w,
                        "{}",
                        serde_json::json!({
                            "prompt": r.prompt,
                            "completion": r.completion,
                            "prompt_ids": r.prompt_ids,
                            "completion_ids": r.completion_ids,
                            "source": d.source.as_str(),
                            "agent": d.agent,
                            "trace": d.id,
                        })
                    )?;
                    rows += 1;
                    *by_source.entry(d.source.as_str().into()).or_default() += 1;
                }
            }
            mesh.shutdown().await;
        }
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&part, &args.out)?;
    Ok(ExportSummary {
        traces: picked.len(),
        rows,
        by_source: by_source.into_iter().collect(),
        out: args.out.clone(),
    })
}

/// `hearth learn export`.
pub async fn export_cmd(config: &Config, args: ExportArgs, json: bool) -> Result<()> {
    let s = export(config, &args).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!(
            "{} rows from {} traces → {} ({})",
            s.rows,
            s.traces,
            s.out.display(),
            s.by_source
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// `hearth learn finetune`'s arguments.
#[derive(Debug, clap::Args)]
pub struct FinetuneArgs {
    /// Synthesise this many tasks first (0: use the trajectories already there).
    #[arg(long, default_value_t = 1200)]
    pub synth: usize,
    /// The Python that has torch, transformers, peft and gguf (default:
    /// $HEARTH_LEARN_PYTHON, else /var/tmp/hearth-learn-venv/bin/python if
    /// it exists, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Passed to the trainer: epochs, LoRA rank, learning rate, step cap, device.
    #[arg(long, default_value_t = 2)]
    pub epochs: u32,
    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: u32,
    /// Learning rate.
    #[arg(long, default_value = "2e-4")]
    pub lr: String,
    /// Stop after this many optimiser steps (a quick run).
    #[arg(long)]
    pub max_steps: Option<u32>,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Gate the adapter on the held-out suites and deploy it if it wins.
    #[arg(long)]
    pub deploy: bool,
    /// The suites the gate uses (default: every held-out split).
    #[arg(long)]
    pub suite: Vec<String>,
}

fn python(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("HEARTH_LEARN_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from("/var/tmp/hearth-learn-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The trainer script.
pub fn trainer() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../learning/train/finetune.py"
    ))
}

/// The base model file the engine runs.
fn base_model(config: &Config) -> Result<PathBuf> {
    let catalog = hearth_engine::catalog::Catalog::builtin()?;
    let resolved = catalog.resolve(&config.engine.model, &config.models_dir())?;
    Ok(resolved.path)
}

/// `hearth learn finetune`: synthesise, export, train, convert, and with
/// `--deploy` gate.
pub async fn finetune(config: &Config, args: FinetuneArgs) -> Result<()> {
    let run_dir = config
        .data_dir()
        .join("learning")
        .join("runs")
        .join(uuid::Uuid::now_v7().to_string());
    std::fs::create_dir_all(&run_dir)?;
    if args.synth > 0 {
        eprintln!("== synthesising {} tasks through the mesh", args.synth);
        let s = synthesize(config, args.synth, 1, &synth_dir(config), false).await?;
        eprintln!(
            "   {} traces ({} tasks completed) in {:.0} s",
            s.traces, s.completed, s.seconds
        );
    }
    let data = run_dir.join("train.jsonl");
    let e = export(
        config,
        &ExportArgs {
            format: Format::Rendered,
            out: data.clone(),
            since: None,
            agent: None,
            traces: Vec::new(),
        },
    )
    .await?;
    eprintln!("== {} training rows from {} traces", e.rows, e.traces);
    if e.rows == 0 {
        bail!(
            "no training data: run `hearth learn synth`, or rate some answers good with `hearth traces feedback`"
        );
    }
    let model = base_model(config)?;
    let base_sha = adapters::model_sha256(&model, &config.data_dir())?;
    let adapter = run_dir.join("adapter.gguf");
    let mut cmd = tokio::process::Command::new(python(args.python.as_deref()));
    cmd.arg(trainer())
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&adapter)
        .arg("--epochs")
        .arg(args.epochs.to_string())
        .arg("--rank")
        .arg(args.rank.to_string())
        .arg("--lr")
        .arg(&args.lr)
        .arg("--device")
        .arg(&args.device)
        .arg("--base-sha256")
        .arg(&base_sha)
        .arg("--report")
        .arg(run_dir.join("train-report.json"));
    if let Some(n) = args.max_steps {
        cmd.arg("--max-steps").arg(n.to_string());
    }
    eprintln!("== training ({})", trainer().display());
    let status = cmd.status().await.context("starting the trainer")?;
    if !status.success() {
        bail!("the trainer failed ({status})");
    }
    println!("adapter: {}", adapter.display());
    if args.deploy {
        gate(config, &adapter, &args.suite, false).await?;
    }
    Ok(())
}

/// The gate's verdict, kept beside the adapter.
#[derive(Debug, Serialize)]
pub struct GateReport {
    /// The adapter.
    pub adapter: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// The base model's SHA-256.
    pub base_sha256: String,
    /// The suites.
    pub suites: Vec<String>,
    /// Base alone.
    pub baseline: Report,
    /// Base + adapter.
    pub candidate: Report,
    /// The paired bootstrap.
    pub comparison: eval::Comparison,
    /// Whether it was deployed.
    pub deployed: bool,
}

/// `hearth learn deploy --adapter FILE`: the gate, then deployment.
pub async fn gate(config: &Config, adapter: &Path, suites: &[String], json: bool) -> Result<()> {
    if !adapter.is_file() {
        bail!("no adapter at {}", adapter.display());
    }
    let suites: Vec<String> = if suites.is_empty() {
        vec!["held-out".into()]
    } else {
        suites.to_vec()
    };
    let loaded = load_suites(&suites)?;
    let model = base_model(config)?;
    let base_sha256 = adapters::model_sha256(&model, &config.data_dir())?;
    let sha256 = adapters::sha256_file(adapter)?;
    eprintln!("== the base model alone, on {}", suites.join(", "));
    let baseline = evaluate(&with_adapter(config, None, true), &loaded, "base", json).await?;
    eprintln!("== base + adapter");
    let candidate = evaluate(
        &with_adapter(config, Some(adapter), false),
        &loaded,
        "base+adapter",
        json,
    )
    .await
    .context("evaluating with the adapter (llama.cpp may have refused it)")?;
    let comparison = eval::compare(&baseline, &candidate, 10_000, 17);
    let dir = config.data_dir().join("learning");
    let adapters_dir = dir.join("adapters");
    std::fs::create_dir_all(&adapters_dir)?;
    let kept = adapters_dir.join(format!("{}.gguf", &sha256[..16]));
    let report_path = adapters_dir.join(format!("{}.gate.json", &sha256[..16]));
    let deployed = comparison.wins;
    let report = GateReport {
        adapter: kept.clone(),
        sha256: sha256.clone(),
        base_sha256: base_sha256.clone(),
        suites,
        baseline,
        candidate,
        comparison,
        deployed,
    };
    if deployed {
        std::fs::copy(adapter, &kept)?;
        let record = adapters::Deployment {
            adapter: kept.clone(),
            sha256,
            base_sha256,
            scale: 1.0,
            deployed_unix_ms: hearth_learning::store::now_ms(),
            report: Some(report_path.clone()),
        };
        let path = adapters::deployment_path(&config.data_dir());
        std::fs::write(&path, serde_json::to_vec_pretty(&record)?)?;
    }
    std::fs::write(&report_path, serde_json::to_vec_pretty(&report)?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let c = &report.comparison;
    println!(
        "base {:.1}% → base+adapter {:.1}% on {} held-out cases: difference {:+.1} points, 95% interval [{:+.1}, {:+.1}]",
        c.baseline * 100.0,
        c.candidate * 100.0,
        c.cases,
        c.difference * 100.0,
        c.ci95.0 * 100.0,
        c.ci95.1 * 100.0
    );
    if deployed {
        println!(
            "deployed: {} (report {})",
            kept.display(),
            report_path.display()
        );
    } else {
        println!(
            "not deployed: the interval does not lie above zero (report {})",
            report_path.display()
        );
    }
    Ok(())
}

/// `hearth learn rollback adapter`.
pub fn rollback(config: &Config) -> Result<()> {
    let path = adapters::deployment_path(&config.data_dir());
    match std::fs::remove_file(&path) {
        Ok(()) => {
            println!(
                "the deployed adapter is no longer applied (its file stays in the data dir's learning/adapters/)"
            );
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no adapter is deployed");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// `hearth learn status`: which adapter the engine applies now, and why.
pub fn status(config: &Config, json: bool) -> Result<()> {
    let model = base_model(config)?;
    let chosen = adapters::choose(&config.engine, &model, &config.data_dir());
    let deployed = adapters::deployment(&config.data_dir()).ok().flatten();
    let v = serde_json::json!({
        "model": model,
        "adapter": chosen.as_ref().ok().cloned().flatten(),
        "error": chosen.as_ref().err().map(|e| e.to_string()),
        "deployed": deployed,
        "shipped": adapters::shipped().iter().map(|s| serde_json::json!({"name": s.name, "sha256": s.sha256.trim(), "base_sha256": s.base_sha256.trim()})).collect::<Vec<_>>(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model: {}", model.display());
    match chosen {
        Ok(Some(c)) => println!(
            "adapter: {} ({}, scale {})",
            c.name,
            format!("{:?}", c.source).to_lowercase(),
            c.scale
        ),
        Ok(None) => println!("adapter: none (the base model alone)"),
        Err(e) => println!("adapter: refused — {e}"),
    }
    Ok(())
}
