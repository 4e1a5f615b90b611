//! Which engine, model and quantization fit a machine, and why.
//!
//! The rules, in order:
//! - an NVIDIA GPU: a server engine (vLLM, or SGLang) with the largest model
//!   whose safetensors quantization fits in 90% of the GPUs' memory (vLLM's
//!   default share) — the highest precision of that model that fits;
//! - Apple Silicon: embedded llama.cpp (Metal) with a GGUF that fits in
//!   two thirds of the unified memory (macOS keeps the rest from the GPU);
//! - otherwise the CPU: embedded llama.cpp with a Q4_K_M GGUF (decode on a
//!   CPU is bound by memory bandwidth, so the smaller quantization is the
//!   faster one) in 60% of RAM, and no larger than the cores can decode at a
//!   usable speed.
//!
//! Among models that fit, the one with the most parameters wins, counting a
//! model trained for native tool calls twice (an agent's model must call
//! tools); ties go to the one needing less memory. Pure: it takes a
//! [`Hardware`], so tests cover machines we do not have.

use serde::Serialize;

use crate::catalog::{Catalog, Format, Model, ModelFile};
use crate::hardware::{GpuVendor, Hardware};

const GB: f64 = 1e9;

/// The engine a recommendation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// llama.cpp in Hearth's process (the `llama` backend).
    Llama,
    /// A vLLM server (the `openai` backend pointed at it).
    Vllm,
}

impl Engine {
    /// The `engine.backend` value that uses it.
    pub fn backend(self) -> &'static str {
        match self {
            Engine::Llama => "llama",
            Engine::Vllm => "openai",
        }
    }

    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            Engine::Llama => "llama.cpp (embedded)",
            Engine::Vllm => "vLLM (or SGLang)",
        }
    }
}

/// A recommendation.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// The engine.
    pub engine: Engine,
    /// Catalog model id.
    pub model: String,
    /// The quantization.
    pub quant: String,
    /// Memory it needs, in GB.
    pub memory_gb: f64,
    /// For a server engine: the repository it loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// For a server engine: the URL Hearth reaches it at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why, one reason a line.
    pub reasons: Vec<String>,
}

impl Recommendation {
    /// The `hearth.toml` that uses it.
    pub fn config_toml(&self) -> String {
        let mut s = String::from(
            "# Written by `hearth init`: the engine and model that fit this machine.\n\
             # Every key can be overridden by HEARTH_<SECTION>_<KEY> variables.\n\n[engine]\n",
        );
        s.push_str(&format!("backend = \"{}\"\n", self.engine.backend()));
        match (&self.url, &self.repo) {
            (Some(url), Some(repo)) => {
                s.push_str(&format!("url = \"{url}\"\n"));
                s.push_str(&format!("model = \"{repo}\"\n"));
            }
            _ => s.push_str(&format!("model = \"{}\"\n", self.model)),
        }
        s
    }
}

/// Why nothing fits.
#[derive(Debug, thiserror::Error)]
#[error("no model in the catalog fits this machine: {0}")]
pub struct NoFit(pub String);

struct Choice<'a> {
    model: &'a Model,
    file: &'a ModelFile,
}

fn score(m: &Model) -> f64 {
    m.params_b * if m.tool_calls { 2.0 } else { 1.0 }
}

/// Bits a weight of a quantization takes (for "highest precision first").
fn bits(quant: &str) -> u32 {
    match quant {
        "BF16" | "F16" => 16,
        "FP8" | "Q8_0" => 8,
        "Q6_K" => 6,
        "Q5_K_M" => 5,
        _ => 4,
    }
}

fn best<'a>(choices: impl Iterator<Item = Choice<'a>>) -> Option<Choice<'a>> {
    choices.max_by(|a, b| {
        score(a.model)
            .total_cmp(&score(b.model))
            .then(bits(&a.file.quant).cmp(&bits(&b.file.quant)))
            .then(b.file.memory_gb.total_cmp(&a.file.memory_gb))
    })
}

/// Largest model, in billions of parameters, that `threads` CPU threads
/// decode at a usable speed (roughly 5 tokens/s or more at Q4_K_M).
fn cpu_params_cap(threads: usize) -> f64 {
    match threads {
        0..=2 => 2.0,
        3..=4 => 4.0,
        5..=8 => 8.0,
        9..=16 => 15.0,
        _ => 33.0,
    }
}

/// The engine, model and quantization for `hw`.
pub fn recommend(hw: &Hardware, catalog: &Catalog) -> Result<Recommendation, NoFit> {
    let nvidia = hw.gpu_memory(GpuVendor::Nvidia);
    if nvidia > 0 {
        let budget = nvidia as f64 / GB * 0.9;
        let served = catalog
            .models
            .iter()
            .filter(|m| m.instruct && m.engines.iter().any(|e| e == "vllm" || e == "sglang"));
        let pick = best(served.flat_map(|m| {
            m.files
                .iter()
                .filter(move |f| f.format == Format::Safetensors && f.memory_gb <= budget)
                .map(move |f| Choice { model: m, file: f })
        }));
        if let Some(c) = pick {
            let gpus = hw.gpus.iter().filter(|g| g.vendor == GpuVendor::Nvidia);
            let names: Vec<&str> = gpus.map(|g| g.name.as_str()).collect();
            return Ok(Recommendation {
                engine: Engine::Vllm,
                model: c.model.id.clone(),
                quant: c.file.quant.clone(),
                memory_gb: c.file.memory_gb,
                repo: c.file.repo.clone(),
                url: Some("http://127.0.0.1:8000/v1".into()),
                reasons: vec![
                    format!(
                        "{} with {:.0} GB of GPU memory: a GPU server engine (vLLM or SGLang) batches many requests on it far faster than llama.cpp on the CPU",
                        names.join(" + "),
                        nvidia as f64 / GB
                    ),
                    format!(
                        "{} {} needs about {} GB, within 90% of the GPU memory (vLLM's default --gpu-memory-utilization), leaving the rest for the KV cache",
                        c.model.id, c.file.quant, c.file.memory_gb
                    ),
                    largest_reason(c.model),
                    format!(
                        "start it with: vllm serve {} --gpu-memory-utilization 0.9 --port 8000 (or SGLang on the same URL)",
                        c.file.repo.as_deref().unwrap_or(&c.model.id)
                    ),
                ],
            });
        }
    }
    let apple = hw.gpu_memory(GpuVendor::Apple);
    let (budget, cap, why_budget) = if apple > 0 {
        (
            apple as f64 / GB * 0.66,
            f64::INFINITY,
            format!(
                "Apple Silicon with {:.0} GB of unified memory: llama.cpp runs on its GPU (Metal); macOS lets the GPU use about two thirds of it",
                apple as f64 / GB
            ),
        )
    } else {
        (
            hw.memory_bytes as f64 / GB * 0.6,
            cpu_params_cap(hw.cpu.threads),
            format!(
                "no GPU: llama.cpp on the CPU ({} threads, {:.0} GB RAM); the model may use 60% of the RAM, and at most ~{}B parameters decode at a usable speed on {} threads",
                hw.cpu.threads,
                hw.memory_bytes as f64 / GB,
                cpu_params_cap(hw.cpu.threads),
                hw.cpu.threads
            ),
        )
    };
    let pick = best(
        catalog
            .models
            .iter()
            .filter(|m| m.instruct && m.params_b <= cap)
            .flat_map(|m| {
                m.files
                    .iter()
                    .filter(move |f| {
                        f.format == Format::Gguf
                            && f.memory_gb <= budget
                            // On a CPU the 4-bit file decodes fastest.
                            && (apple > 0 || f.quant == "Q4_K_M")
                    })
                    .map(move |f| Choice { model: m, file: f })
            }),
    )
    .ok_or_else(|| {
        NoFit(format!(
            "{why_budget}; the smallest instruct model needs more than {budget:.1} GB"
        ))
    })?;
    let disk_note = hw.disk.as_ref().and_then(|d| {
        (d.free_bytes < pick.file.size_bytes).then(|| {
            format!(
                "warning: {} has {:.1} GB free and the file is {:.1} GB",
                d.path.display(),
                d.free_bytes as f64 / GB,
                pick.file.size_bytes as f64 / GB
            )
        })
    });
    let mut reasons = vec![
        why_budget,
        format!(
            "{} {} needs about {} GB (budget {:.1} GB)",
            pick.model.id, pick.file.quant, pick.file.memory_gb, budget
        ),
        largest_reason(pick.model),
    ];
    reasons.extend(disk_note);
    Ok(Recommendation {
        engine: Engine::Llama,
        model: pick.model.id.clone(),
        quant: pick.file.quant.clone(),
        memory_gb: pick.file.memory_gb,
        repo: None,
        url: None,
        reasons,
    })
}

fn largest_reason(m: &Model) -> String {
    if m.tool_calls {
        format!(
            "the largest fitting model trained for native tool calls ({}B parameters), which agents need",
            m.params_b
        )
    } else {
        format!(
            "the largest fitting model ({}B parameters); no tool-calling model of that size fits",
            m.params_b
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::{Cpu, Gpu};

    fn machine(threads: usize, ram_gb: u64, gpus: Vec<Gpu>, arch: &str) -> Hardware {
        Hardware {
            cpu: Cpu {
                model: "test".into(),
                arch: arch.into(),
                threads,
                physical_cores: None,
                features: vec![],
            },
            memory_bytes: ram_gb * 1_000_000_000,
            available_bytes: ram_gb * 1_000_000_000,
            gpus,
            disk: None,
            notes: vec![],
        }
    }

    fn gpu(vendor: GpuVendor, name: &str, gb: u64) -> Gpu {
        Gpu {
            vendor,
            name: name.into(),
            memory_bytes: gb * 1_000_000_000,
            driver: None,
        }
    }

    /// The table of machines the issue names, and what each gets.
    #[test]
    fn each_kind_of_machine_gets_an_engine_and_model_that_fit() {
        let c = Catalog::builtin().unwrap();
        let cases = [
            (
                "2-core 24 GB CPU box",
                machine(2, 24, vec![], "x86_64"),
                Engine::Llama,
                "qwen2.5-1.5b-instruct",
                "Q4_K_M",
            ),
            (
                "8 GB laptop, 8 threads",
                machine(8, 8, vec![], "x86_64"),
                Engine::Llama,
                "llama-3.2-3b-instruct",
                "Q4_K_M",
            ),
            (
                "one 80 GB NVIDIA GPU",
                machine(
                    32,
                    256,
                    vec![gpu(GpuVendor::Nvidia, "NVIDIA H100 80GB HBM3", 80)],
                    "x86_64",
                ),
                Engine::Vllm,
                "llama-3.3-70b-instruct",
                "AWQ-INT4",
            ),
            (
                "Apple M2 Pro, 32 GB",
                machine(
                    12,
                    32,
                    vec![gpu(GpuVendor::Apple, "Apple M2 Pro", 32)],
                    "aarch64",
                ),
                Engine::Llama,
                "gemma-3-27b-it",
                "Q4_K_M",
            ),
        ];
        for (what, hw, engine, model, quant) in cases {
            let r = recommend(&hw, &c).unwrap();
            assert_eq!(
                (r.engine, r.model.as_str(), r.quant.as_str()),
                (engine, model, quant),
                "{what}: {r:?}"
            );
            assert!(r.reasons.len() >= 3, "{what}: explained");
            let toml = r.config_toml();
            assert!(
                toml.contains(&format!("backend = \"{}\"", engine.backend())),
                "{toml}"
            );
        }
    }

    #[test]
    fn the_recommendation_never_exceeds_the_memory_budget() {
        let c = Catalog::builtin().unwrap();
        for ram in [2, 4, 8, 16, 32, 64, 128] {
            for threads in [1, 2, 4, 8, 16, 64] {
                if let Ok(r) = recommend(&machine(threads, ram, vec![], "x86_64"), &c) {
                    assert!(
                        r.memory_gb <= ram as f64 * 0.6,
                        "{ram} GB, {threads}: {r:?}"
                    );
                }
            }
        }
        let e = recommend(&machine(2, 1, vec![], "x86_64"), &c).unwrap_err();
        assert!(e.to_string().contains("no model"), "{e}");
    }

    #[test]
    fn a_gpu_server_config_points_the_openai_backend_at_vllm() {
        let c = Catalog::builtin().unwrap();
        let hw = machine(
            16,
            64,
            vec![gpu(GpuVendor::Nvidia, "NVIDIA L4", 24)],
            "x86_64",
        );
        let r = recommend(&hw, &c).unwrap();
        assert_eq!(r.engine, Engine::Vllm);
        assert!(r.memory_gb <= 24.0 * 0.9);
        let toml = r.config_toml();
        assert!(
            toml.contains("url = \"http://127.0.0.1:8000/v1\""),
            "{toml}"
        );
        assert!(
            toml.contains(&format!("model = \"{}\"", r.repo.unwrap())),
            "{toml}"
        );
    }
}
