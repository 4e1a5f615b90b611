//! The hardware probe: what this machine has for inference — CPU (cores,
//! SIMD features), memory, GPUs (NVIDIA through NVML, Apple Silicon's unified
//! memory) and free disk where models are kept.
//!
//! Everything is read, never guessed: a field that cannot be read is absent,
//! and [`Hardware::notes`] says why. Not for choosing a model: that is
//! [`crate::fit`], which takes a [`Hardware`] so it can be tested on machines
//! we do not have.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A GPU's maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    /// NVIDIA, read through NVML.
    Nvidia,
    /// Apple Silicon (memory shared with the CPU).
    Apple,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// Who makes it.
    pub vendor: GpuVendor,
    /// Its name (`NVIDIA H100 80GB HBM3`, `Apple M2 Pro`).
    pub name: String,
    /// Its memory in bytes (for Apple Silicon: the unified memory).
    pub memory_bytes: u64,
    /// Driver version, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

/// The CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// Brand string.
    pub model: String,
    /// `x86_64`, `aarch64`, …
    pub arch: String,
    /// Logical cores this process may use.
    pub threads: usize,
    /// Physical cores, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_cores: Option<usize>,
    /// SIMD features that matter to llama.cpp (`avx2`, `avx512f`, `fma`, `neon`, …).
    pub features: Vec<String>,
}

/// Free space where models are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    /// The directory asked about.
    pub path: PathBuf,
    /// Bytes free to this user.
    pub free_bytes: u64,
    /// Size of the file system.
    pub total_bytes: u64,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// The CPU.
    pub cpu: Cpu,
    /// Installed memory in bytes.
    pub memory_bytes: u64,
    /// Memory available now, in bytes.
    pub available_bytes: u64,
    /// GPUs (empty: none found).
    pub gpus: Vec<Gpu>,
    /// Free disk where models go, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Disk>,
    /// Why something could not be read (NVML missing, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Hardware {
    /// Total GPU memory across devices of one vendor, in bytes.
    pub fn gpu_memory(&self, vendor: GpuVendor) -> u64 {
        self.gpus
            .iter()
            .filter(|g| g.vendor == vendor)
            .map(|g| g.memory_bytes)
            .sum()
    }
}

/// SIMD features of this CPU that llama.cpp uses.
fn simd_features() -> Vec<String> {
    #[allow(unused_mut)]
    let mut out: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($f:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($f) { out.push($f); })*
            };
        }
        check!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! check {
            ($($f:tt),*) => {
                $(if std::arch::is_aarch64_feature_detected!($f) { out.push($f); })*
            };
        }
        check!("neon", "dotprod", "i8mm", "sve", "fp16");
    }
    out.into_iter().map(String::from).collect()
}

/// NVIDIA GPUs through NVML (the driver's library, loaded at run time, so a
/// machine without one simply has none).
fn nvidia_gpus(notes: &mut Vec<String>) -> Vec<Gpu> {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            notes.push(format!("no NVIDIA GPU found (NVML: {e})"));
            return Vec::new();
        }
    };
    let driver = nvml.sys_driver_version().ok();
    let count = nvml.device_count().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..count {
        match nvml.device_by_index(i) {
            Ok(d) => out.push(Gpu {
                vendor: GpuVendor::Nvidia,
                name: d.name().unwrap_or_else(|_| format!("NVIDIA GPU {i}")),
                memory_bytes: d.memory_info().map(|m| m.total).unwrap_or(0),
                driver: driver.clone(),
            }),
            Err(e) => notes.push(format!("NVIDIA GPU {i} could not be read: {e}")),
        }
    }
    out
}

/// Apple Silicon: one GPU sharing the machine's memory.
#[allow(unused_variables)]
fn apple_gpu(cpu: &Cpu, memory_bytes: u64) -> Option<Gpu> {
    (cfg!(target_os = "macos") && cpu.arch == "aarch64").then(|| Gpu {
        vendor: GpuVendor::Apple,
        name: cpu.model.clone(),
        memory_bytes,
        driver: None,
    })
}

/// The file system holding `dir` (or its nearest existing parent).
fn disk_for(dir: &Path) -> Option<Disk> {
    let disks = sysinfo::Disks::new_with_refreshed_list().ok()?;
    let mut probe = dir.to_path_buf();
    while !probe.exists() {
        probe = probe.parent()?.to_path_buf();
    }
    let probe = probe.canonicalize().unwrap_or(probe);
    disks
        .iter()
        .filter(|d| probe.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| Disk {
            path: dir.to_path_buf(),
            free_bytes: d.available_space(),
            total_bytes: d.total_space(),
        })
}

/// Probes this machine; `models_dir` is where free disk is measured.
pub fn probe(models_dir: &Path) -> Hardware {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let mut notes = Vec::new();
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_memory(MemoryRefreshKind::nothing().with_ram())
            .with_cpu(CpuRefreshKind::nothing()),
    );
    let (memory_bytes, available_bytes, model) = match &sys {
        Ok(s) => (
            s.total_memory(),
            s.available_memory(),
            s.cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .unwrap_or_default(),
        ),
        Err(e) => {
            notes.push(format!("memory and CPU could not be read: {e}"));
            (0, 0, String::new())
        }
    };
    let cpu = Cpu {
        model,
        arch: std::env::consts::ARCH.to_string(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores: System::physical_core_count().ok(),
        features: simd_features(),
    };
    let mut gpus = nvidia_gpus(&mut notes);
    gpus.extend(apple_gpu(&cpu, memory_bytes));
    let disk = disk_for(models_dir);
    if disk.is_none() {
        notes.push(format!(
            "free disk under {} could not be read",
            models_dir.display()
        ));
    }
    Hardware {
        cpu,
        memory_bytes,
        available_bytes,
        gpus,
        disk,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_probed_without_inventing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let hw = probe(&dir.path().join("not-yet/models"));
        assert!(hw.cpu.threads >= 1);
        assert!(hw.memory_bytes > 0, "{hw:?}");
        assert!(hw.available_bytes <= hw.memory_bytes);
        assert!(!hw.cpu.arch.is_empty());
        #[cfg(target_arch = "x86_64")]
        assert!(hw.cpu.features.iter().any(|f| f == "sse4.2"), "{hw:?}");
        let disk = hw.disk.expect("the temp dir's file system");
        assert!(disk.total_bytes >= disk.free_bytes && disk.total_bytes > 0);
        // A machine with no NVIDIA driver says so rather than listing nothing silently.
        if hw.gpus.is_empty() {
            assert!(
                hw.notes.iter().any(|n| n.contains("NVML")),
                "{:?}",
                hw.notes
            );
        }
    }
}
