//! `hearth`: the command line. Parses arguments and calls the launcher
//! (`hearth-launch`), the benchmarks (`hearth-bench`) and the CLI modules
//! below, which print what the libraries return.

mod agents_cli;
mod batch_cli;
mod config_cli;
mod doctor;
mod init;
mod learn_cli;
mod memory_cli;
mod models;
mod security_cli;
mod status_cli;
mod tasks_cli;
mod tools_cli;
mod usage_cli;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hearth_launch::{Part, connect_bus, start};
use hearth_mesh::{Config, telemetry};

/// Hearth: a local-first agent mesh.
///
/// With no NATS URL configured, every command runs the whole mesh in this
/// process. Set HEARTH_NATS_URL (or `nats` in hearth.toml) to join a mesh of
/// separate processes and machines.
///
/// Settings come from hearth.toml ($HEARTH_CONFIG, ./hearth.toml, or
/// ~/.config/hearth/hearth.toml) and HEARTH_* environment variables:
/// HEARTH_ENGINE_BACKEND, HEARTH_ENGINE_URL (an OpenAI-compatible base URL
/// ending in /v1), HEARTH_ENGINE_MODEL, HEARTH_ENGINE_API_KEY,
/// HEARTH_GATEWAY_ADDR (default 127.0.0.1:8777), HEARTH_GATEWAY_TOKEN.
#[derive(Parser)]
#[command(name = "hearth", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines (logs go to stderr; RUST_LOG filters them).
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Ask a question: the task goes to the orchestrator, which delegates to
    /// an operative with tools, and the answer is printed with what it cost.
    ///
    /// Example: hearth ask "What is 17*23+4?"
    Ask {
        /// The question or task.
        question: String,
        /// Print one JSON object: answer, task_id, state, usage.
        #[arg(long)]
        json: bool,
        /// Show progress (tool calls, delegation) on stderr.
        #[arg(long, short)]
        verbose: bool,
        /// The task is sensitive: only local backends serve it (whatever
        /// `[routing] policy` says), and so are its subtasks.
        #[arg(long)]
        sensitive: bool,
    },
    /// Run every service in this process (the embedded default), with the
    /// gateway listening for A2A at HEARTH_GATEWAY_ADDR. Stops on Ctrl-C.
    ///
    /// Example: hearth up --metrics-addr 127.0.0.1:9464
    Up {
        /// Also serve this process's Prometheus metrics at
        /// http://ADDR/metrics (the gateway's /metrics has them too).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Run one service and join the mesh at HEARTH_NATS_URL.
    ///
    /// Example: HEARTH_NATS_URL=nats://127.0.0.1:4222 hearth serve operative
    Serve {
        /// Which service.
        #[arg(value_enum)]
        part: Part,
        /// Serve this process's Prometheus metrics at http://ADDR/metrics.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Run a built-in MCP tool server on its own: over stdio, or over
    /// streamable HTTP with --http (the toolhost runs them in-process).
    ///
    /// Example: hearth tool files --http 127.0.0.1:8790
    Tool {
        /// Which tool server.
        #[arg(value_enum)]
        tool: hearth_launch::builtins::Builtin,
        /// Serve MCP over streamable HTTP at this address (`/mcp`) instead of stdio.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
        /// `code` only: compile the sandbox's interpreter now (once; cached)
        /// and exit, instead of serving.
        #[arg(long)]
        precompile: bool,
    },
    /// Memory: ingest documents, search them, forget by filter, see what is
    /// stored (qdrant-edge here, or the Qdrant server at HEARTH_QDRANT_URL).
    ///
    /// Example: hearth memory ingest ~/notes && hearth memory search "on-call rotation"
    Memory {
        #[command(subcommand)]
        what: MemoryCommand,
    },
    /// The agents: this mesh's own (agent specs) and the external A2A
    /// agents it may delegate to ([[agents.remote]]); fetch and check any
    /// agent card.
    ///
    /// Example: hearth agents card http://127.0.0.1:9999
    Agents {
        #[command(subcommand)]
        what: AgentsCommand,
    },
    /// The tools the mesh can call: list them (with their server and
    /// status), call one, approve changed definitions.
    Tools {
        #[command(subcommand)]
        what: ToolsCommand,
    },
    /// The first-run probe of `hearth bench code` (a new process each time).
    #[command(hide = true)]
    BenchCodeFirst,
    /// The benchmark's echo server (a benchmark double), for `hearth bench tools`.
    #[command(hide = true)]
    BenchEchoServer {
        /// Serve over streamable HTTP at this address instead of stdio.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
    },
    /// Serve the mesh as an MCP server over stdio: an `ask` tool (a task for
    /// the orchestrator) and, with mcp.expose_tools, the tools themselves.
    /// For an IDE or desktop assistant's MCP configuration.
    Mcp,
    /// See what this machine has, get the engine and model that fit it
    /// (with the reasons), and write hearth.toml.
    ///
    /// Example: hearth init --dry-run
    Init(crate::init::InitArgs),
    /// Check everything Hearth needs: hardware fit, model weights present and
    /// intact, NATS, then what each service says of itself (the engine's
    /// model, embeddings and meter, each MCP server, the sandbox, memory,
    /// traces) with the engine probed. Prints the fix for each failure;
    /// exits non-zero if any check fails.
    Doctor(crate::doctor::DoctorArgs),
    /// Ask each service of the running mesh (over NATS) whether it is up and
    /// ready, with its own checks; with --check, exit non-zero unless the
    /// named ones are ready (a container's health check).
    ///
    /// Example: hearth status --check engine,operative
    Status(crate::status_cli::StatusArgs),
    /// What the engine's routing spent and where: spend and tokens by day,
    /// backend, model and agent; each budget with what is left; requests
    /// kept local by policy, sensitivity and budget.
    ///
    /// Example: hearth usage --days 7
    Usage(crate::usage_cli::UsageArgs),
    /// The tasks of the durable mesh over NATS: list them, show one (and
    /// reattach to it with --wait), cancel one wherever it runs, retry one
    /// that ended.
    ///
    /// Example: hearth tasks list && hearth tasks show <id> --wait
    Tasks {
        #[command(subcommand)]
        what: crate::tasks_cli::TasksCommand,
    },
    /// Run many tasks from a JSONL file (`{"id", "prompt"}`, a JSON string
    /// or plain text a line), writing each result as a JSON line as it
    /// arrives; run it again after an interruption and finished lines are
    /// not redone.
    ///
    /// Example: hearth batch questions.jsonl --out answers.jsonl
    Batch(crate::batch_cli::BatchArgs),
    /// Security: `hearth security audit` lists the exposures of the
    /// configuration in force, each with its fix.
    Security {
        #[command(subcommand)]
        what: SecurityCommand,
    },
    /// The configuration: every effective value and where it came from
    /// (default, file, environment), secrets masked.
    ///
    /// Example: hearth config show --changed
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// The model catalog: what exists, what it needs, what is on disk;
    /// download and remove model files.
    Models {
        #[command(subcommand)]
        what: ModelsCommand,
    },
    /// Traces: every agent run's whole trajectory (messages, model calls,
    /// tool calls and results, outcome), kept redacted in the data dir.
    ///
    /// Example: hearth traces list && hearth traces feedback <id> good
    Traces {
        #[command(subcommand)]
        what: TracesCommand,
    },
    /// Evaluate the mesh on task suites and score it.
    ///
    /// Example: hearth eval run calculator files --json
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Learning: synthesise trajectories through the real mesh, export
    /// datasets, fine-tune a LoRA adapter, gate it on held-out work and
    /// deploy it only when it wins.
    ///
    /// Example: hearth learn finetune --deploy
    Learn {
        #[command(subcommand)]
        what: LearnCommand,
    },
    /// Measure Hearth on this machine, each figure beside a baseline run in
    /// the same process: the mesh, the engine, MCP tools, the Python
    /// sandbox, the vector store, the A2A gateway (`hearth bench <what> --help`).
    Bench {
        #[command(subcommand)]
        what: BenchKind,
    },
}

#[derive(Subcommand)]
enum SecurityCommand {
    /// The exposures of the configuration in force (a gateway beyond
    /// loopback without a token, NATS without credentials or TLS, an MCP
    /// server over plain HTTP off this machine, a files root of `/`, …),
    /// each with its fix; exits non-zero when one is high.
    ///
    /// Example: hearth security audit --json
    Audit {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, each value with its origin.
    Show {
        /// Only the values not at their default.
        #[arg(long)]
        changed: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TracesCommand {
    /// The newest traces.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One trace, whole.
    Show {
        /// Its id (a task id; `hearth ask --json` prints it).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove traces.
    Rm {
        /// Their ids.
        ids: Vec<String>,
        /// Every trace.
        #[arg(long)]
        all: bool,
    },
    /// Say whether an answer was right. A correction becomes training data;
    /// a bad answer is also forgotten from the agents' memory (so it is not
    /// recalled into later tasks), and its correction remembered instead.
    ///
    /// Example: hearth traces feedback 0193… bad --correction "144"
    Feedback {
        /// The trace (the task id `hearth ask --json` prints).
        id: String,
        /// `good` or `bad`.
        #[arg(value_enum)]
        rating: Verdict,
        /// What the answer should have been.
        #[arg(long)]
        correction: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// A verdict on an answer.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Verdict {
    /// Right.
    Good,
    /// Wrong.
    Bad,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Run suites through a mesh of their own and score every case.
    Run(crate::learn_cli::EvalArgs),
}

#[derive(Subcommand)]
enum LearnCommand {
    /// Run generated tasks (arithmetic, percentages, files, Python, notes,
    /// plain questions) through the real mesh, a teacher playing the model
    /// and the real tools answering; keeps the trajectories.
    Synth(crate::learn_cli::SynthArgs),
    /// Rejection sampling: the current model draws several trajectories per
    /// training case at a raised temperature; the checker keeps the right ones.
    Sample(crate::learn_cli::SampleArgs),
    /// Write a dataset from traces with good feedback and synthesised ones
    /// (held-out cases never appear).
    Export {
        #[command(flatten)]
        args: crate::learn_cli::ExportArgs,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Synthesise, export, train a LoRA adapter with the Python trainer,
    /// and with --deploy gate and deploy it.
    Finetune(crate::learn_cli::FinetuneArgs),
    /// Gate an adapter trained anywhere (base vs base+adapter on the
    /// held-out suites, paired bootstrap) and deploy it only if it wins.
    Deploy {
        /// The adapter (GGUF LoRA).
        #[arg(long)]
        adapter: std::path::PathBuf,
        /// Suites for the gate (default: every held-out split).
        #[arg(long)]
        suite: Vec<String>,
        /// Print the gate's report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop applying the deployed adapter.
    Rollback {
        /// What to roll back.
        #[arg(value_enum)]
        what: RollbackWhat,
    },
    /// Which adapter the engine applies now, and why.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `hearth learn rollback` undoes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RollbackWhat {
    /// The deployed LoRA adapter.
    Adapter,
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// Ingest a file or directory (Markdown, text, HTML, PDF, code):
    /// unchanged files are skipped, changed ones replaced, deleted ones dropped.
    Ingest(crate::memory_cli::IngestArgs),
    /// Search by meaning and keywords.
    Search(crate::memory_cli::SearchArgs),
    /// Remove what matches a filter (source, agent, kind, time).
    Forget(crate::memory_cli::ForgetArgs),
    /// The collections, their sizes and embedding models.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Local agent specs and external agents (their cards fetched now).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch an agent card (a base URL or the card's URL) and check it
    /// against A2A v1.0; exits non-zero if it has problems.
    Card {
        /// `http://host:port` (the card is at /.well-known/agent-card.json)
        /// or the card's own URL.
        url: String,
        /// A bearer token, for cards that are not public.
        #[arg(long)]
        token: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ToolsCommand {
    /// Every tool, with its server and status (held tools say why).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call a tool directly with JSON arguments.
    ///
    /// Example: hearth tools call calculator.evaluate '{"expression":"2^64"}'
    Call {
        /// `server.tool`.
        name: String,
        /// The arguments, a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve the current definitions of tools that changed since they were
    /// approved (held tools), after reviewing them with `hearth tools list`.
    ///
    /// Example: hearth tools approve time.get_current_time
    Approve {
        /// `server` (all its tools) or `server.tool`.
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Every model in the catalog (local and cloud), and which are on disk.
    List {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// One model in detail: family, template, files, where it is.
    ///
    /// Example: hearth models show gemma-3-270m
    Show {
        /// Catalog id (local or cloud).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a model's GGUF file into the models directory, with a
    /// progress bar; an interrupted pull resumes; the SHA-256 is checked
    /// and a mismatching file is deleted.
    ///
    /// Examples: hearth models pull qwen2.5-1.5b-instruct;
    /// hearth models pull https://host/x.gguf --sha256 <hex>
    Pull(crate::models::PullArgs),
    /// Delete a model's files from the models directory.
    Rm {
        /// Catalog id, or a file name in the models directory.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// One-tool-call tasks with the scripted engine (a test double), in
    /// process and over NATS, against a raw NATS round trip measured in the
    /// same run. Over NATS needs HEARTH_NATS_URL or --nats-url.
    Mesh(hearth_bench::mesh::MeshArgs),
    /// The configured engine on this machine: prefill and decode tokens/s,
    /// time to first token, batched throughput, load time and memory.
    Engine(hearth_bench::engine::EngineArgs),
    /// MCP tool-call round trips in-process, over stdio and over HTTP, and
    /// calls/s with concurrent clients beside the Python SDK's server.
    Tools(hearth_bench::tools::ToolsArgs),
    /// The Python sandbox: print(1) warm and after a process start, runs/s
    /// with every slot busy, beside the host's own python3.
    Code(hearth_bench::code::CodeArgs),
    /// The vector store: search p50 and recall@10 at 100k vectors against
    /// exact search in the same run; ingestion chunks/s with the real
    /// embedding model.
    Memory(hearth_bench::memory::MemoryArgs),
    /// The A2A gateway: SendMessage round trips, requests/s with concurrent
    /// clients, time to the first SSE event, beside the in-process task and
    /// a plain HTTP GET measured in the same run.
    A2a(hearth_bench::a2a::A2aArgs),
    /// The engine's routing: the decision alone, a whole generation routed
    /// against the same with no routing (scripted engine, a test double),
    /// and a budget reservation in the spend ledger.
    Routing(hearth_bench::routing::RoutingArgs),
}

fn main() {
    hearth_launch::mark_process_start();
    // Two rustls crypto providers are compiled in (async-nats asks for
    // ring, the HTTP clients for aws-lc-rs), so rustls cannot pick one by
    // itself and TLS to NATS would panic: ring, once, for the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Tool {
            precompile: false,
            ..
        } | Command::Mcp
            | Command::BenchEchoServer { .. }
            | Command::BenchCodeFirst
    );
    // llama.cpp's own warnings (model-file quirks it corrects itself) and
    // qdrant-edge's "feature flags not initialized" (it keeps their setter
    // private, and the defaults are what we want) are not actionable for a
    // user: errors only, unless RUST_LOG asks.
    // OpenTelemetry's service name (when OTEL_* names a collector):
    // `hearth-<part>` for one service, `hearth` for the whole mesh.
    let service = match &cli.command {
        Command::Serve { part, .. } => format!("hearth-{}", format!("{part:?}").to_lowercase()),
        Command::Up { .. } => "hearth".to_string(),
        _ => "hearth-cli".to_string(),
    };
    let mut telemetry = telemetry::init(
        if quiet {
            "error"
        } else {
            "warn,llama-cpp-2=error,qdrant_edge=error"
        },
        cli.log_json,
        &service,
    );
    let result = run_on_runtime(cli);
    // Send the spans still buffered before the process ends.
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Builds the async runtime and runs the command on one of its workers.
///
/// The worker count is `worker_threads` in `hearth.toml` or
/// `HEARTH_WORKER_THREADS` (else half the cores; a malformed config file is
/// reported by the command itself). The command runs as a spawned task, not
/// in the main thread's `block_on`: every reply to the main thread would be a
/// wake-up across threads, and an in-process task makes eight hops.
fn run_on_runtime(cli: Cli) -> Result<()> {
    let loaded = Config::load();
    let workers = loaded
        .as_ref()
        .map_or_else(|_| Config::default().async_workers(), Config::async_workers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        tokio::spawn(run(cli, loaded))
            .await
            .context("the command's task ended abnormally")?
    })
}

/// Runs one command with the configuration loaded once for the process (a
/// malformed hearth.toml or HEARTH_* value is reported here, whatever the
/// command).
async fn run(cli: Cli, config: Result<Config, hearth_mesh::ConfigError>) -> Result<()> {
    let config = config?;
    match cli.command {
        Command::Tool {
            tool,
            http,
            precompile,
        } => {
            if precompile {
                if tool != hearth_launch::builtins::Builtin::Code {
                    bail!("--precompile is for `hearth tool code`");
                }
                return hearth_launch::builtins::precompile(&config).await;
            }
            hearth_launch::builtins::serve_tool(&config, tool, http).await
        }
        Command::Tools { what } => match what {
            ToolsCommand::List { json } => crate::tools_cli::list(&config, json).await,
            ToolsCommand::Call {
                name,
                arguments,
                json,
            } => {
                if !crate::tools_cli::call(&config, &name, &arguments, json).await? {
                    std::process::exit(2);
                }
                Ok(())
            }
            ToolsCommand::Approve { names, json } => {
                crate::tools_cli::approve(&config, &names, json).await
            }
        },
        Command::BenchEchoServer { http } => hearth_bench::tools::echo_server(http).await,
        Command::BenchCodeFirst => hearth_bench::code::first_run(&config).await,
        Command::Bench {
            what: BenchKind::Code(args),
        } => hearth_bench::code::code(&config, args).await,
        Command::Bench {
            what: BenchKind::Tools(args),
        } => hearth_bench::tools::tools(args).await,
        Command::Bench {
            what: BenchKind::A2a(args),
        } => hearth_bench::a2a::a2a(&config, args).await,
        Command::Bench {
            what: BenchKind::Routing(args),
        } => hearth_bench::routing::routing(args).await,
        Command::Bench {
            what: BenchKind::Memory(args),
        } => hearth_bench::memory::memory(&config, args).await,
        Command::Memory { what } => match what {
            MemoryCommand::Ingest(a) => crate::memory_cli::ingest(&config, a).await,
            MemoryCommand::Search(a) => crate::memory_cli::search(&config, a).await,
            MemoryCommand::Forget(a) => crate::memory_cli::forget(&config, a).await,
            MemoryCommand::Info { json } => crate::memory_cli::info(&config, json).await,
        },
        Command::Agents { what } => match what {
            AgentsCommand::List { json } => crate::agents_cli::list(&config, json).await,
            AgentsCommand::Card { url, token, json } => {
                crate::agents_cli::card(&url, token.as_deref(), json).await
            }
        },
        Command::Mcp => crate::tools_cli::mcp_stdio(&config).await,
        Command::Traces { what } => {
            use crate::learn_cli as l;
            match what {
                TracesCommand::List { limit, json } => l::traces_list(&config, limit, json),
                TracesCommand::Show { id, json } => l::traces_show(&config, &id, json),
                TracesCommand::Rm { ids, all } => l::traces_rm(&config, &ids, all),
                TracesCommand::Feedback {
                    id,
                    rating,
                    correction,
                    json,
                } => {
                    l::traces_feedback(
                        &config,
                        &id,
                        match rating {
                            Verdict::Good => hearth_learning::convert::Rating::Good,
                            Verdict::Bad => hearth_learning::convert::Rating::Bad,
                        },
                        correction,
                        json,
                    )
                    .await
                }
            }
        }
        Command::Eval {
            what: EvalCommand::Run(args),
        } => crate::learn_cli::eval_run(&config, args).await,
        Command::Learn { what } => {
            use crate::learn_cli as l;
            match what {
                LearnCommand::Synth(a) => l::synth_cmd(&config, a).await,
                LearnCommand::Sample(a) => l::sample_cmd(&config, a).await,
                LearnCommand::Export { args, json } => l::export_cmd(&config, args, json).await,
                LearnCommand::Finetune(a) => l::finetune(&config, a).await,
                LearnCommand::Deploy {
                    adapter,
                    suite,
                    json,
                } => l::gate(&config, &adapter, &suite, json).await,
                LearnCommand::Rollback {
                    what: RollbackWhat::Adapter,
                } => l::rollback(&config),
                LearnCommand::Status { json } => l::status(&config, json),
            }
        }
        Command::Ask {
            question,
            json,
            verbose,
            sensitive,
        } => ask_cmd(&config, &question, json, verbose, sensitive).await,
        Command::Up { metrics_addr } => up_cmd(&config, metrics_addr).await,
        Command::Serve { part, metrics_addr } => serve_cmd(&config, part, metrics_addr).await,
        Command::Models { what } => match what {
            ModelsCommand::List { json } => crate::models::list(&config, json),
            ModelsCommand::Show { id, json } => crate::models::show(&config, &id, json),
            ModelsCommand::Pull(args) => crate::models::pull_cmd(&config, args).await,
            ModelsCommand::Rm { id, json } => crate::models::rm(&config, &id, json),
        },
        Command::Config {
            what: ConfigCommand::Show { changed, json },
        } => crate::config_cli::show(json, changed),
        Command::Init(args) => crate::init::init(&config, args),
        Command::Usage(args) => crate::usage_cli::run(&config, &args),
        Command::Status(args) => {
            let code = crate::status_cli::run(&config, &args).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Security {
            what: SecurityCommand::Audit { json },
        } => {
            let code = crate::security_cli::run(&config, json)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Tasks { what } => {
            let code = crate::tasks_cli::run(&config, what).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Batch(args) => {
            let code = crate::batch_cli::run(&config, args).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Doctor(args) => {
            let checks = crate::doctor::run(&config, &args).await?;
            crate::doctor::print(&checks, args.json)?;
            if checks
                .iter()
                .any(|c| c.outcome == crate::doctor::Outcome::Fail)
            {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Bench {
            what: BenchKind::Mesh(args),
        } => hearth_bench::mesh::mesh(&config, args).await,
        Command::Bench {
            what: BenchKind::Engine(args),
        } => hearth_bench::engine::engine(&config, args).await,
    }
}

/// Waits for Ctrl-C or SIGTERM.
/// SIGTERM and Ctrl-C, as one stream of stop requests.
struct Stops {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Stops {
    fn new() -> Self {
        Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// The next SIGTERM or Ctrl-C.
    async fn next(&mut self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}

/// `hearth ask`: the task to the orchestrator of the configured mesh (the
/// embedded one when no NATS is set), the answer and what it cost.
async fn ask_cmd(
    config: &Config,
    question: &str,
    json: bool,
    verbose: bool,
    sensitive: bool,
) -> Result<()> {
    let session = hearth_launch::Session::open(config, &Part::TASK).await?;
    let progress = move |text: &str| {
        if verbose {
            eprintln!("… {text}");
        }
    };
    let mut task = hearth_launch::new_task(question);
    if sensitive {
        hearth_launch::mark_sensitive(&mut task);
    }
    let result = hearth_launch::ask_task(config, session.bus.clone(), &task, &progress).await;
    session.close().await;
    let answer = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{}", answer.answer);
        eprintln!(
            "— {} · {}",
            answer
                .state
                .trim_start_matches("TASK_STATE_")
                .to_lowercase(),
            answer.usage.summary()
        );
    }
    if !answer.completed() {
        bail!("the task ended {}", answer.state);
    }
    Ok(())
}

/// `hearth up`: every service in this process until Ctrl-C or SIGTERM.
async fn up_cmd(config: &Config, metrics_addr: Option<std::net::SocketAddr>) -> Result<()> {
    let bus = connect_bus(config).await?;
    let mut mesh = start(config, bus, &Part::ALL).await?;
    if let Some(addr) = metrics_addr {
        let (at, h) = hearth_launch::serve_metrics(addr).await?;
        mesh.handles_mut().push(h);
        println!("metrics at http://{at}/metrics");
    }
    if let Some(addr) = mesh.gateway {
        println!(
            "hearth is up: A2A at http://{addr}/ (JSON-RPC; HTTP+JSON beside it{}), MCP at http://{addr}/mcp; agent card: http://{addr}/.well-known/agent-card.json",
            mesh.gateway_grpc
                .map(|g| format!("; gRPC at {g}"))
                .unwrap_or_default()
        );
    }
    run_until_stopped(mesh, config).await
}

/// `hearth serve PART`: one service joining the mesh over NATS.
async fn serve_cmd(
    config: &Config,
    part: Part,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<()> {
    if config.nats_url.is_none() {
        bail!(
            "`hearth serve` joins a mesh over NATS: set HEARTH_NATS_URL (or `nats` in hearth.toml), or use `hearth up` to run everything in one process"
        );
    }
    let bus = connect_bus(config).await?;
    let mut mesh = start(config, bus, &[part]).await?;
    if let Some(addr) = mesh.gateway {
        println!("gateway listening on http://{addr}/");
    }
    if let Some(addr) = metrics_addr {
        let (at, h) = hearth_launch::serve_metrics(addr).await?;
        mesh.handles_mut().push(h);
        println!("metrics at http://{at}/metrics");
    }
    eprintln!("{part:?} ready");
    run_until_stopped(mesh, config).await
}

/// Serves until stopped, then stops gracefully: the first SIGTERM or
/// Ctrl-C drains (no new tasks; the work already taken finishes within
/// `drain_timeout_ms`), and a second one, or the deadline, ends it at once.
async fn run_until_stopped(mut mesh: hearth_launch::Mesh, config: &Config) -> Result<()> {
    let mut stops = Stops::new();
    stops.next().await;
    let deadline = config.drain_timeout();
    eprintln!(
        "stopping: no new tasks; waiting up to {:.0} s for {} request(s) in flight (signal again to stop now)",
        deadline.as_secs_f64(),
        hearth_mesh::rpc::in_flight()
    );
    let drained = tokio::select! {
        d = mesh.drain(deadline) => d,
        () = stops.next() => false,
    };
    let left = hearth_mesh::rpc::in_flight();
    mesh.shutdown().await;
    if drained {
        eprintln!("drained; stopped");
        Ok(())
    } else {
        bail!("stopped with {left} request(s) still in flight")
    }
}
