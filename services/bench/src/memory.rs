//! `hearth bench memory`: what the vector store costs.
//!
//! Two parts. First, search at scale in the embedded store (qdrant-edge, the
//! default): `--vectors` points of `--dims` dimensions are stored through the
//! same [`VectorStore`] the memory service uses, then `--queries` searches
//! are timed and their top 10 compared with an exact (brute-force) search
//! computed in the same run — the baseline for both speed and recall. The
//! vectors are synthetic (unit vectors scattered around a thousand random
//! centres, as embeddings of a corpus cluster by topic), since embedding
//! 100k real chunks on a small CPU takes longer than a benchmark should.
//! Second, ingestion with the real embedding model: the corpus at `--corpus`
//! goes through the memory service (embedding, BM25 weights, storage) and
//! its throughput in chunks/s is reported, with the latency of a search
//! through the service (query embedding included).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use hearth_memory::edge::EdgeStore;
use hearth_memory::store::{CollectionMeta, Filter, Point, Sparse, VectorStore};
use hearth_mesh::clients::MemoryClient;
use hearth_mesh::{Config, LocalBus, SharedBus};
use hearth_proto::v1::SearchRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::mesh::{Series, series};
use hearth_launch::{Part, start};

/// Options of `hearth bench memory`.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// Points stored for the search benchmark.
    #[arg(long, default_value_t = 100_000)]
    pub vectors: usize,
    /// Their dimensions (all-MiniLM-L6-v2's: 384).
    #[arg(long, default_value_t = 384)]
    pub dims: usize,
    /// Searches timed.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Documents ingested with the real embedding model (skipped if missing).
    #[arg(long, default_value = "tests/fixtures/memory/docs")]
    pub corpus: PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Search at scale.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Points stored.
    pub vectors: usize,
    /// Dimensions.
    pub dims: usize,
    /// Seconds to store them (embedding excluded; indexing included).
    pub load_s: f64,
    /// Searches through the store (HNSW), top 10.
    pub search: Series,
    /// Exact brute-force top 10 over the same vectors: the baseline.
    pub exact: Series,
    /// Exact p50 ÷ store p50.
    pub speedup_vs_exact: f64,
    /// Mean share of the exact top 10 that the store's top 10 holds.
    pub recall_at_10: f64,
    /// Search p50 under 2 ms.
    pub target_p50_met: bool,
    /// recall@10 ≥ 0.95.
    pub target_recall_met: bool,
}

/// Ingestion with the real model.
#[derive(Debug, Clone, Serialize)]
pub struct IngestBench {
    /// The corpus.
    pub corpus: String,
    /// The embedding model.
    pub model: String,
    /// Files ingested.
    pub files: usize,
    /// Chunks stored.
    pub chunks: usize,
    /// Seconds, model load included.
    pub seconds: f64,
    /// Chunks per second.
    pub chunks_per_s: f64,
    /// Searches through the memory service: query embedded, dense and BM25
    /// fused.
    pub search_via_service: Series,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Search at scale in qdrant-edge.
    pub scale: ScaleReport,
    /// Ingestion with the real model (absent without a corpus).
    pub ingest: Option<IngestBench>,
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.r#gen::<f64>().max(1e-12);
    let u2: f64 = rng.r#gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Clustered unit vectors: a random centre plus noise of about the same
/// length, so neighbours within a topic sit near cosine 0.5.
struct Gen {
    rng: StdRng,
    centres: Vec<Vec<f32>>,
    dims: usize,
}

impl Gen {
    fn new(dims: usize, centres: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(0x4ea7);
        let centres = (0..centres)
            .map(|_| unit((0..dims).map(|_| normal(&mut rng)).collect()))
            .collect();
        Self { rng, centres, dims }
    }

    fn next(&mut self) -> Vec<f32> {
        let c = self.rng.gen_range(0..self.centres.len());
        let sigma = 1.0 / (self.dims as f32).sqrt();
        let v = (0..self.dims)
            .map(|i| self.centres[c][i] + sigma * normal(&mut self.rng))
            .collect();
        unit(v)
    }
}

fn exact_top(data: &[Vec<f32>], q: &[f32], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = data
        .iter()
        .enumerate()
        .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), i))
        .collect();
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
    scored.truncate(k);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, i)| i).collect()
}

fn bar(json: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if json {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{wide_bar}} {{pos}}/{{len}} {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b
}

async fn scale(args: &MemoryArgs) -> Result<ScaleReport> {
    if args.vectors == 0 || args.dims == 0 || args.queries == 0 {
        bail!("--vectors, --dims and --queries must be positive");
    }
    let dir = tempfile::tempdir().context("a temporary directory for the store")?;
    let store: Arc<dyn VectorStore> = Arc::new(Arc::new(EdgeStore::open(dir.path())?));
    let meta = CollectionMeta {
        embed_model: "synthetic".into(),
        dims: args.dims,
    };
    store.ensure("bench", &meta).await?;
    let mut g = Gen::new(args.dims, 1000);
    let mut data = Vec::with_capacity(args.vectors);
    let b = bar(args.json, args.vectors as u64, "storing");
    let t0 = Instant::now();
    let mut i = 0usize;
    while i < args.vectors {
        let n = (args.vectors - i).min(1000);
        let mut points = Vec::with_capacity(n);
        for j in i..i + n {
            let v = g.next();
            points.push(Point {
                id: uuid::Uuid::from_u128(j as u128),
                dense: v.clone(),
                sparse: Sparse::default(),
                payload: serde_json::Map::new(),
            });
            data.push(v);
        }
        store.upsert("bench", points).await?;
        i += n;
        b.set_position(i as u64);
    }
    let load_s = t0.elapsed().as_secs_f64();
    b.finish_and_clear();

    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| g.next()).collect();
    // Warm the store's caches and the page cache first.
    for q in queries.iter().take(20) {
        store
            .search("bench", q.clone(), None, 10, &Filter::default())
            .await?;
    }
    let (mut hnsw, mut exact, mut recall) = (Vec::new(), Vec::new(), 0.0);
    let t_hnsw = Instant::now();
    let mut found = Vec::with_capacity(queries.len());
    for q in &queries {
        let s = Instant::now();
        let hits = store
            .search("bench", q.clone(), None, 10, &Filter::default())
            .await?;
        hnsw.push(s.elapsed());
        found.push(hits);
    }
    let hnsw_total = t_hnsw.elapsed();
    let t_exact = Instant::now();
    for (q, hits) in queries.iter().zip(&found) {
        let s = Instant::now();
        let truth = exact_top(&data, q, 10);
        exact.push(s.elapsed());
        let got: Vec<usize> = hits
            .iter()
            .filter_map(|h| uuid::Uuid::parse_str(&h.id).ok())
            .map(|u| u.as_u128() as usize)
            .collect();
        let shared = truth.iter().filter(|t| got.contains(t)).count();
        recall += shared as f64 / truth.len().max(1) as f64;
    }
    let exact_total = t_exact.elapsed();
    let search = series(hnsw, hnsw_total);
    let exact = series(exact, exact_total);
    let recall_at_10 = recall / queries.len() as f64;
    Ok(ScaleReport {
        vectors: args.vectors,
        dims: args.dims,
        load_s,
        speedup_vs_exact: exact.p50_ms / search.p50_ms.max(1e-9),
        target_p50_met: search.p50_ms < 2.0,
        target_recall_met: recall_at_10 >= 0.95,
        search,
        exact,
        recall_at_10,
    })
}

async fn ingestion(config: &Config, args: &MemoryArgs) -> Result<Option<IngestBench>> {
    if !args.corpus.is_dir() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    config.memory.dir = Some(dir.path().to_path_buf());
    config.memory.qdrant_url = None;
    let bus: SharedBus = Arc::new(LocalBus::default());
    let mesh = start(&config, bus.clone(), &[Part::Engine, Part::Memory]).await?;
    let client = MemoryClient::new(bus, config.subjects(), Duration::from_secs(600));
    let b = bar(args.json, 0, "ingesting");
    let progress = |done: usize, total: usize| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    };
    let r = hearth_memory::ingest::ingest(&client, "bench", &args.corpus, &progress).await;
    b.finish_and_clear();
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            mesh.shutdown().await;
            return Err(e.into());
        }
    };
    // Queries: each file's first line (its title), through the service.
    let mut queries = Vec::new();
    for f in hearth_memory::ingest::files(&args.corpus)? {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| !l.trim().is_empty()) {
            queries.push(l.trim_start_matches('#').trim().to_string());
        }
    }
    let mut samples = Vec::new();
    let t0 = Instant::now();
    for q in &queries {
        let s = Instant::now();
        client
            .search(&SearchRequest {
                collection: "bench".into(),
                query: q.clone(),
                limit: 5,
                filter: None,
                dense_only: false,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        samples.push(s.elapsed());
    }
    let via = series(samples, t0.elapsed());
    let info = client
        .info(&hearth_proto::v1::InfoRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    mesh.shutdown().await;
    Ok(Some(IngestBench {
        corpus: args.corpus.display().to_string(),
        model: info
            .collections
            .first()
            .map(|c| c.embed_model.clone())
            .unwrap_or_default(),
        files: r.files,
        chunks: r.chunks,
        seconds: r.seconds,
        chunks_per_s: r.chunks_per_s,
        search_via_service: via,
    }))
}

/// `hearth bench memory`.
pub async fn memory(config: &Config, args: MemoryArgs) -> Result<()> {
    let scale = scale(&args).await?;
    let ingest = ingestion(config, &args).await?;
    let report = MemoryReport { scale, ingest };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let s = &report.scale;
    println!(
        "search in qdrant-edge: {} synthetic vectors of {} dimensions (stored in {:.1} s), {} queries, top 10",
        s.vectors, s.dims, s.load_s, s.search.n
    );
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["", "p50 ms", "p99 ms", "per s", "recall@10"]);
    t.add_row([
        "qdrant-edge (HNSW)".to_string(),
        format!("{:.3}", s.search.p50_ms),
        format!("{:.3}", s.search.p99_ms),
        format!("{:.0}", s.search.per_s),
        format!("{:.3}", s.recall_at_10),
    ]);
    t.add_row([
        "exact (brute force, baseline)".to_string(),
        format!("{:.3}", s.exact.p50_ms),
        format!("{:.3}", s.exact.p99_ms),
        format!("{:.0}", s.exact.per_s),
        "1.000".to_string(),
    ]);
    println!("{t}");
    println!(
        "{:.1}× faster than exact · targets: p50 < 2 ms {} · recall@10 ≥ 0.95 {}",
        s.speedup_vs_exact,
        if s.target_p50_met { "met" } else { "MISSED" },
        if s.target_recall_met { "met" } else { "MISSED" }
    );
    match &report.ingest {
        Some(i) => println!(
            "ingestion with {}: {} files, {} chunks in {:.1} s = {:.1} chunks/s · search through the service (query embedded, hybrid): p50 {:.2} ms, p99 {:.2} ms",
            i.model,
            i.files,
            i.chunks,
            i.seconds,
            i.chunks_per_s,
            i.search_via_service.p50_ms,
            i.search_via_service.p99_ms
        ),
        None => println!(
            "ingestion skipped: {} is not a directory (--corpus)",
            args.corpus.display()
        ),
    }
    Ok(())
}
