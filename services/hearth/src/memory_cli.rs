//! `hearth memory ingest|search|forget|info`: the memory service from the
//! command line. With no NATS configured the engine (for embeddings) and the
//! memory service run in this process; with one, these talk to the mesh's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hearth_mesh::Config;
use hearth_mesh::clients::MemoryClient;
use hearth_proto::v1::{DeleteRequest, Filter, InfoRequest, SearchRequest};

use hearth_launch::builtins::DOCUMENTS;
use hearth_launch::{Part, Session};

/// Options of `hearth memory ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// A file or directory (Markdown, text, HTML, PDF, source code).
    pub path: PathBuf,
    /// The collection to fill.
    #[arg(long, default_value = DOCUMENTS)]
    pub collection: String,
    /// Print one JSON object instead of a progress bar and a summary.
    #[arg(long)]
    pub json: bool,
}

/// Options of `hearth memory search`.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// The collection to search.
    #[arg(long, default_value = DOCUMENTS)]
    pub collection: String,
    /// How many results.
    #[arg(long, default_value_t = 5)]
    pub limit: u32,
    /// Only from this source file.
    #[arg(long)]
    pub source: Option<String>,
    /// By meaning only (no keyword search fused in).
    #[arg(long)]
    pub dense_only: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `hearth memory forget`.
#[derive(Debug, Clone, clap::Args)]
pub struct ForgetArgs {
    /// The collection (agent memories live in `agent_memory`).
    #[arg(long, default_value = DOCUMENTS)]
    pub collection: String,
    /// Only what came from this source file.
    #[arg(long)]
    pub source: Option<String>,
    /// Only this agent's memories.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only this kind (`document`, `outcome`, `fact`).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only what was stored before this Unix time.
    #[arg(long)]
    pub before: Option<i64>,
    /// Only what was stored at or after this Unix time.
    #[arg(long)]
    pub since: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The memory service: the mesh's, or one started here with an engine.
async fn memory(config: &Config) -> Result<(MemoryClient, Session)> {
    let session = Session::open(config, &[Part::Engine, Part::Memory]).await?;
    Ok((
        MemoryClient::new(
            session.bus.clone(),
            config.subjects(),
            Duration::from_secs(600),
        ),
        session,
    ))
}

async fn done(session: Session) {
    session.close().await;
}

/// `hearth memory ingest`.
pub async fn ingest(config: &Config, args: IngestArgs) -> Result<()> {
    let (client, mesh) = memory(config).await?;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "ingesting {wide_bar} {pos}/{len} files, eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let r = hearth_memory::ingest::ingest(&client, &args.collection, &args.path, &progress).await;
    bar.finish_and_clear();
    done(mesh).await;
    let r = r?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "{} files: {} new, {} changed, {} unchanged, {} removed · {} chunks stored, {} deleted · {:.1} s ({:.1} chunks/s)",
        r.files,
        r.added,
        r.changed,
        r.unchanged,
        r.removed,
        r.chunks,
        r.deleted,
        r.seconds,
        r.chunks_per_s
    );
    for (path, why) in &r.skipped {
        println!("skipped {path}: {why}");
    }
    Ok(())
}

/// `hearth memory search`.
pub async fn search(config: &Config, args: SearchArgs) -> Result<()> {
    let (client, mesh) = memory(config).await?;
    let filter = args.source.as_ref().map(|s| Filter {
        equals: [("source".to_string(), s.clone())].into(),
        since: None,
        until: None,
    });
    let r = client
        .search(&SearchRequest {
            collection: args.collection.clone(),
            query: args.query.clone(),
            limit: args.limit,
            filter,
            dense_only: args.dense_only,
        })
        .await;
    done(mesh).await;
    let r = r.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    if args.json {
        let hits: Vec<_> = r
            .hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "id": h.id, "score": h.score, "text": h.text,
                    "payload": serde_json::from_str::<serde_json::Value>(&h.payload_json).unwrap_or_default(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "hits": hits }))?
        );
        return Ok(());
    }
    if r.hits.is_empty() {
        println!("nothing found");
    }
    for (i, h) in r.hits.iter().enumerate() {
        let p: serde_json::Value = serde_json::from_str(&h.payload_json).unwrap_or_default();
        let source = p.get("source").and_then(|v| v.as_str()).unwrap_or("");
        let title = p.get("title").and_then(|v| v.as_str()).unwrap_or("");
        let snippet: String = h.text.replace('\n', " ").chars().take(160).collect();
        println!("{}. {:.3}  {title}  {source}\n   {snippet}", i + 1, h.score);
    }
    Ok(())
}

/// `hearth memory forget`.
pub async fn forget(config: &Config, args: ForgetArgs) -> Result<()> {
    let mut equals = std::collections::HashMap::new();
    for (k, v) in [
        ("source", &args.source),
        ("agent", &args.agent),
        ("kind", &args.kind),
    ] {
        if let Some(v) = v {
            equals.insert(k.to_string(), v.clone());
        }
    }
    if equals.is_empty() && args.before.is_none() && args.since.is_none() {
        bail!("say what to forget: --source, --agent, --kind, --before or --since");
    }
    let (client, mesh) = memory(config).await?;
    let r = client
        .delete(&DeleteRequest {
            collection: args.collection.clone(),
            ids: vec![],
            filter: Some(Filter {
                equals,
                since: args.since,
                until: args.before,
            }),
        })
        .await;
    done(mesh).await;
    let r = r.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    if args.json {
        println!("{}", serde_json::json!({ "deleted": r.deleted }));
    } else {
        println!("forgot {} point(s) in {}", r.deleted, args.collection);
    }
    Ok(())
}

/// `hearth memory info`.
pub async fn info(config: &Config, json: bool) -> Result<()> {
    let (client, mesh) = memory(config).await?;
    let r = client.info(&InfoRequest {}).await;
    done(mesh).await;
    let r = r
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("asking the memory service")?;
    if json {
        let cols: Vec<_> = r
            .collections
            .iter()
            .map(|c| serde_json::json!({"name": c.name, "points": c.points, "embed_model": c.embed_model, "dims": c.dims}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "backend": r.backend, "collections": cols })
            )?
        );
        return Ok(());
    }
    println!("memory: {}", r.backend);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "collection",
        "points",
        "embedding model",
        "dimensions",
    ]);
    for c in &r.collections {
        t.add_row([
            c.name.clone(),
            c.points.to_string(),
            c.embed_model.clone(),
            c.dims.to_string(),
        ]);
    }
    println!("{t}");
    Ok(())
}
