//! `hearth init`: what this machine has, which engine and model fit it and
//! why, and a `hearth.toml` that uses them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use hearth_engine::catalog::Catalog;
use hearth_engine::fit::{self, Engine};
use hearth_engine::hardware::{self, Hardware};
use hearth_mesh::Config;
use serde::Serialize;

/// Options of `hearth init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Where to write the configuration.
    #[arg(long, default_value = "hearth.toml")]
    pub output: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
    /// Show what was found and recommended, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object (hardware, recommendation, file written).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    hardware: &'a Hardware,
    recommendation: &'a fit::Recommendation,
    on_disk: Option<String>,
    next: Option<String>,
    written: Option<String>,
}

const GB: f64 = 1e9;

/// Prints what the probe found.
pub fn print_hardware(hw: &Hardware) {
    println!(
        "CPU     {} ({}, {} threads{}){}",
        if hw.cpu.model.is_empty() {
            "unknown"
        } else {
            &hw.cpu.model
        },
        hw.cpu.arch,
        hw.cpu.threads,
        hw.cpu
            .physical_cores
            .map(|c| format!(", {c} cores"))
            .unwrap_or_default(),
        if hw.cpu.features.is_empty() {
            String::new()
        } else {
            format!(" · {}", hw.cpu.features.join(" "))
        }
    );
    println!(
        "memory  {:.1} GB ({:.1} GB available)",
        hw.memory_bytes as f64 / GB,
        hw.available_bytes as f64 / GB
    );
    if hw.gpus.is_empty() {
        println!("GPU     none");
    }
    for g in &hw.gpus {
        println!(
            "GPU     {} · {:.0} GB{}",
            g.name,
            g.memory_bytes as f64 / GB,
            g.driver
                .as_deref()
                .map(|d| format!(" · driver {d}"))
                .unwrap_or_default()
        );
    }
    if let Some(d) = &hw.disk {
        println!(
            "disk    {:.1} GB free of {:.0} GB under {}",
            d.free_bytes as f64 / GB,
            d.total_bytes as f64 / GB,
            d.path.display()
        );
    }
    for n in &hw.notes {
        println!("note    {n}");
    }
}

/// `hearth init`.
pub fn init(config: &Config, args: InitArgs) -> Result<()> {
    let dir = config.models_dir();
    let hw = hardware::probe(&dir);
    let catalog = Catalog::builtin()?;
    let rec = fit::recommend(&hw, &catalog)?;
    let on_disk = match rec.engine {
        Engine::Llama => catalog
            .model(&rec.model)
            .and_then(|m| catalog.locate(m, &dir))
            .map(|p| p.display().to_string()),
        Engine::Vllm => None,
    };
    let next = match (rec.engine, &on_disk) {
        (Engine::Llama, None) => Some(format!(
            "hearth models pull {} --quant {}",
            rec.model, rec.quant
        )),
        (Engine::Llama, Some(_)) => None,
        (Engine::Vllm, _) => Some(format!(
            "vllm serve {} --gpu-memory-utilization 0.9 --port 8000",
            rec.repo.as_deref().unwrap_or(&rec.model)
        )),
    };
    let mut written = None;
    if !args.dry_run {
        if args.output.exists() && !args.force {
            bail!(
                "{} already exists: pass --force to replace it, or --dry-run to only see the recommendation",
                args.output.display()
            );
        }
        std::fs::write(&args.output, rec.config_toml())
            .with_context(|| format!("writing {}", args.output.display()))?;
        written = Some(args.output.display().to_string());
    }
    if args.json {
        let r = Report {
            hardware: &hw,
            recommendation: &rec,
            on_disk,
            next,
            written,
        };
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    print_hardware(&hw);
    println!();
    println!(
        "recommended: {} · {} {} (needs ~{} GB)",
        rec.engine.label(),
        rec.model,
        rec.quant,
        rec.memory_gb
    );
    for r in &rec.reasons {
        println!("  because {r}");
    }
    match &on_disk {
        Some(p) => println!("  the model is on disk: {p}"),
        None if rec.engine == Engine::Llama => println!("  the model is not on disk yet"),
        None => {}
    }
    match &written {
        Some(w) => println!("\nwrote {w}"),
        None => println!("\n(dry run: nothing written)\n{}", rec.config_toml()),
    }
    if let Some(n) = &next {
        println!("next: {n}");
    }
    println!("then: hearth doctor");
    Ok(())
}
