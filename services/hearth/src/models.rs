//! `hearth models`: the catalog as a table, one model in detail, and where
//! each model's file is on this machine.

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use std::path::{Path, PathBuf};

use hearth_engine::catalog::{Catalog, Format, ModelFile};
use hearth_engine::pull;
use hearth_mesh::Config;
use serde::Serialize;

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    model: &'a hearth_engine::catalog::Model,
    default: bool,
    on_disk: Option<String>,
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// `hearth models list`.
pub fn list(config: &Config, json: bool) -> Result<()> {
    let catalog = Catalog::builtin()?;
    let dir = config.models_dir();
    let rows: Vec<Row<'_>> = catalog
        .models
        .iter()
        .map(|m| Row {
            model: m,
            default: m.id == catalog.default,
            on_disk: catalog.locate(m, &dir).map(|p| p.display().to_string()),
        })
        .collect();
    if json {
        let out = serde_json::json!({ "models": rows, "cloud": catalog.cloud });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "model", "family", "params", "quant", "file", "memory", "context", "licence", "on disk",
    ]);
    for r in &rows {
        let f = r.model.files.first();
        t.add_row([
            format!(
                "{}{}",
                r.model.id,
                if r.default { " (default)" } else { "" }
            ),
            r.model.family.clone(),
            format!("{}B", r.model.params_b),
            f.map_or_else(String::new, |f| f.quant.clone()),
            f.map_or_else(String::new, |f| gb(f.size_bytes)),
            f.map_or_else(String::new, |f| format!("{} GB", f.memory_gb)),
            r.model.context.to_string(),
            r.model.license.clone(),
            if r.on_disk.is_some() { "yes" } else { "-" }.into(),
        ]);
    }
    println!("{t}");
    let mut c = Table::new();
    c.load_preset(UTF8_FULL_CONDENSED).set_header([
        "cloud model",
        "provider",
        "$ / M in",
        "$ / M out",
        "prices as of",
        "context",
    ]);
    for m in &catalog.cloud {
        c.add_row([
            m.id.clone(),
            m.provider.clone(),
            format!("{:.2}", m.input_usd_per_mtok),
            format!("{:.2}", m.output_usd_per_mtok),
            m.as_of.clone(),
            m.context.map_or_else(|| "?".into(), |c| c.to_string()),
        ]);
    }
    println!("{c}");
    Ok(())
}

/// `hearth models show <id>`.
pub fn show(config: &Config, id: &str, json: bool) -> Result<()> {
    let catalog = Catalog::builtin()?;
    let dir = config.models_dir();
    let Some(m) = catalog.model(id) else {
        if let Some(c) = catalog.cloud.iter().find(|c| c.id == id) {
            if json {
                println!("{}", serde_json::to_string_pretty(c)?);
            } else {
                println!(
                    "{} ({}): ${:.2} per million input tokens, ${:.2} per million output tokens (as of {}, {})",
                    c.id,
                    c.provider,
                    c.input_usd_per_mtok,
                    c.output_usd_per_mtok,
                    c.as_of,
                    c.source
                );
            }
            return Ok(());
        }
        bail!("no model `{id}` in the catalog; `hearth models list` shows them all");
    };
    let row = Row {
        model: m,
        default: m.id == catalog.default,
        on_disk: catalog.locate(m, &dir).map(|p| p.display().to_string()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&row)?);
        return Ok(());
    }
    let family = catalog.family(&m.family);
    println!(
        "{}{}",
        m.id,
        if row.default { " (the default)" } else { "" }
    );
    println!(
        "  family      {} ({}), chat template `{}`",
        m.family,
        family.map_or("?", |f| f.vendor.as_str()),
        family.map_or("?", |f| f.template.as_str())
    );
    println!("  parameters  {}B", m.params_b);
    println!("  context     {} tokens", m.context);
    println!(
        "  tuned       {}",
        if m.instruct {
            "instruction-tuned"
        } else {
            "pretrained base"
        }
    );
    println!("  licence     {}", m.license);
    println!("  engines     {}", m.engines.join(", "));
    if let Some(n) = &m.notes {
        println!("  notes       {n}");
    }
    for f in &m.files {
        if f.format == Format::Safetensors {
            println!(
                "  {}  {} (safetensors, for vLLM/SGLang) · {} · needs ~{} GB",
                f.quant,
                f.repo.as_deref().unwrap_or("?"),
                gb(f.size_bytes),
                f.memory_gb,
            );
            continue;
        }
        println!(
            "  {}  {} · {} · needs ~{} GB · sha256 {}",
            f.quant,
            f.file,
            gb(f.size_bytes),
            f.memory_gb,
            f.sha256.as_deref().unwrap_or("not pinned")
        );
        if let Some(p) = &f.pypi {
            println!("          pip install {p}");
        }
        if let Some(u) = &f.url {
            println!("          {u}");
        }
    }
    match &row.on_disk {
        Some(p) => println!("  on disk     {p}"),
        None => println!("  on disk     no (looked in {})", dir.display()),
    }
    Ok(())
}

/// Options of `hearth models pull`.
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// A catalog id (`qwen2.5-1.5b-instruct`) or an http(s) URL of a GGUF file.
    pub what: String,
    /// The quantization to pull (default: the first GGUF the catalog lists).
    #[arg(long)]
    pub quant: Option<String>,
    /// The expected SHA-256 (hex), for a URL or to override the catalog's.
    #[arg(long)]
    pub sha256: Option<String>,
    /// Download again even if the file is already there and intact.
    #[arg(long)]
    pub force: bool,
    /// Print one JSON object instead of a progress bar and a sentence.
    #[arg(long)]
    pub json: bool,
}

/// The GGUF file of `model` to pull: the asked-for quantization, or the first.
fn gguf_file<'a>(
    model: &'a hearth_engine::catalog::Model,
    quant: Option<&str>,
) -> Result<&'a ModelFile> {
    let ggufs: Vec<&ModelFile> = model
        .files
        .iter()
        .filter(|f| f.format == Format::Gguf)
        .collect();
    let pick = match quant {
        Some(q) => ggufs.iter().find(|f| f.quant.eq_ignore_ascii_case(q)),
        None => ggufs.first(),
    };
    match pick {
        Some(f) => Ok(f),
        None => {
            let served: Vec<String> = model
                .files
                .iter()
                .filter(|f| f.format == Format::Safetensors)
                .map(|f| format!("{} ({})", f.quant, f.repo.as_deref().unwrap_or("?")))
                .collect();
            bail!(
                "{} has no GGUF file{} (GGUF: {}){}",
                model.id,
                quant.map(|q| format!(" in {q}")).unwrap_or_default(),
                ggufs
                    .iter()
                    .map(|f| f.quant.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if served.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} are served by vLLM or SGLang, which download them themselves",
                        served.join(", ")
                    )
                }
            )
        }
    }
}

/// `hearth models pull`.
pub async fn pull_cmd(config: &Config, args: PullArgs) -> Result<()> {
    let dir = config.models_dir();
    let (url, dest, expected) =
        if args.what.starts_with("http://") || args.what.starts_with("https://") {
            let name = args
                .what
                .split(['?', '#'])
                .next()
                .and_then(|u| u.rsplit('/').next())
                .filter(|n| !n.is_empty())
                .with_context(|| format!("{} names no file", args.what))?;
            (args.what.clone(), dir.join(name), args.sha256.clone())
        } else {
            let catalog = Catalog::builtin()?;
            let model = catalog.model(&args.what).with_context(|| {
                format!(
                    "no model `{}` in the catalog; `hearth models list` shows them, or give a URL",
                    args.what
                )
            })?;
            let f = gguf_file(model, args.quant.as_deref())?;
            let url = f
                .url
                .clone()
                .with_context(|| format!("the catalog has no download URL for {}", f.file))?;
            (
                url,
                dir.join(&f.file),
                args.sha256.clone().or_else(|| f.sha256.clone()),
            )
        };
    if dest.is_file() && !args.force {
        let have = pull::sha256_file(&dest).await?;
        match &expected {
            Some(e) if !e.eq_ignore_ascii_case(&have) => bail!(
                "{} is already there but its SHA-256 is {have}, not {e}: pull it again with --force",
                dest.display()
            ),
            _ => {
                report(
                    &pull::Pulled {
                        bytes: std::fs::metadata(&dest).map_or(0, |m| m.len()),
                        path: dest.clone(),
                        sha256: have,
                        verified: expected.is_some(),
                        resumed_from: 0,
                    },
                    args.json,
                    true,
                )?;
                return Ok(());
            }
        }
    }
    if args.force {
        let _ = std::fs::remove_file(pull::part_path(&dest));
    }
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(20))
        .build()?;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        b
    };
    let progress = |done: u64, total: Option<u64>| {
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(done);
    };
    let result = pull::pull(&client, &url, &dest, expected.as_deref(), &progress).await;
    bar.finish_and_clear();
    let pulled = result?;
    report(&pulled, args.json, false)
}

fn report(p: &pull::Pulled, json: bool, already: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(p)?;
        v["already_present"] = already.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let how = if already {
        "already there"
    } else if p.resumed_from > 0 {
        "resumed and finished"
    } else {
        "downloaded"
    };
    println!(
        "{} ({how}, {}): SHA-256 {}{}",
        p.path.display(),
        gb(p.bytes),
        p.sha256,
        if p.verified {
            " — matches the catalog"
        } else {
            " — no digest was pinned, so it was not checked"
        }
    );
    Ok(())
}

/// `hearth models rm`: deletes a model's files from the models directory.
/// Files elsewhere (a package's, the Hugging Face cache, Ollama's store)
/// belong to their installer, which is named instead.
pub fn rm(config: &Config, id: &str, json: bool) -> Result<()> {
    let catalog = Catalog::builtin()?;
    let dir = config.models_dir();
    let (files, label): (Vec<PathBuf>, String) = match catalog.model(id) {
        Some(m) => (
            m.files
                .iter()
                .filter(|f| f.format == Format::Gguf)
                .flat_map(|f| [dir.join(&f.file), pull::part_path(&dir.join(&f.file))])
                .collect(),
            m.id.clone(),
        ),
        None => {
            let p = dir.join(id);
            if !p.is_file() || Path::new(id).components().count() != 1 {
                bail!(
                    "no model `{id}` in the catalog and no file of that name in {}",
                    dir.display()
                );
            }
            (vec![p], id.to_string())
        }
    };
    let mut removed = Vec::new();
    for f in files.iter().filter(|f| f.is_file()) {
        std::fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
        removed.push(f.display().to_string());
    }
    let elsewhere = catalog
        .model(id)
        .and_then(|m| catalog.locate(m, &dir))
        .map(|p| p.display().to_string());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": label, "removed": removed, "still_at": elsewhere,
            }))?
        );
    } else {
        if removed.is_empty() {
            println!("{label}: nothing of it in {}", dir.display());
        }
        for r in &removed {
            println!("removed {r}");
        }
        if let Some(p) = &elsewhere {
            println!(
                "{label} is still at {p}, which its installer owns (pip uninstall, the Hugging Face cache, or ollama rm)"
            );
        }
    }
    Ok(())
}
