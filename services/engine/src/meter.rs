//! Energy metering: joules read from a real meter, or nothing (with the
//! reason) — never an estimate passed off as a reading.
//!
//! Meters: NVIDIA GPUs through NVML (the driver's cumulative energy counter,
//! Volta and later) and CPUs through RAPL (`/sys/class/powercap/intel-rapl:*`
//! package domains, where the kernel exposes them and they are readable).
//!
//! A meter reads a whole device, not one request. [`EnergyMeter`] splits what
//! it reads among the requests running at the time: each time a request
//! starts or ends the counter is read, and the energy since the last read is
//! shared equally by the requests that were running, so concurrent requests
//! are not counted twice and the figures add up to what the device used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use hearth_proto::v1::EnergyMeter as MeterKind;

/// A cumulative energy counter.
pub trait EnergySource: Send + Sync {
    /// `nvml` or `rapl`.
    /// Which meter it is.
    fn kind(&self) -> MeterKind;
    /// Joules since some fixed point; `None` if the read failed.
    fn read_joules(&self) -> Option<f64>;
}

/// NVIDIA GPUs through NVML: the sum of every device's energy counter.
pub struct NvmlEnergy {
    nvml: nvml_wrapper::Nvml,
    devices: u32,
}

impl NvmlEnergy {
    /// NVML, if the driver is installed and a device reports energy.
    pub fn open() -> Result<Self, String> {
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
        let devices = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        if devices == 0 {
            return Err("NVML: no NVIDIA GPU".into());
        }
        let me = Self { nvml, devices };
        me.read_joules()
            .map(|_| me)
            .ok_or_else(|| "NVML: the GPU reports no energy counter (needs Volta or newer)".into())
    }

    /// How many GPUs are summed.
    pub fn devices(&self) -> u32 {
        self.devices
    }
}

impl EnergySource for NvmlEnergy {
    fn kind(&self) -> MeterKind {
        MeterKind::Nvml
    }

    fn read_joules(&self) -> Option<f64> {
        let mut total_mj = 0u64;
        for i in 0..self.devices {
            total_mj += self
                .nvml
                .device_by_index(i)
                .ok()?
                .total_energy_consumption()
                .ok()?;
        }
        Some(total_mj as f64 / 1e3)
    }
}

/// One RAPL package domain: its counter and where it wraps.
struct Domain {
    energy: PathBuf,
    max_uj: u64,
}

/// CPU packages through RAPL. The counters wrap at `max_energy_range_uj`;
/// reads keep a running total across wraps.
pub struct RaplEnergy {
    domains: Vec<Domain>,
    state: Mutex<Vec<(u64, f64)>>, // per domain: last raw µJ, joules so far
}

impl RaplEnergy {
    /// The package domains under `/sys/class/powercap`.
    pub fn open() -> Result<Self, String> {
        Self::open_at(Path::new("/sys/class/powercap"))
    }

    /// The package domains under `root` (tests point it at a fake tree).
    pub fn open_at(root: &Path) -> Result<Self, String> {
        let entries = std::fs::read_dir(root)
            .map_err(|e| format!("RAPL: {} is not readable ({e})", root.display()))?;
        let mut domains = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Packages are `intel-rapl:N` (AMD exposes the same interface);
            // `intel-rapl:N:M` are sub-domains already inside the package.
            let is_package = name
                .strip_prefix("intel-rapl:")
                .is_some_and(|rest| !rest.contains(':'));
            if !is_package {
                continue;
            }
            let dir = entry.path();
            let energy = dir.join("energy_uj");
            let max_uj = std::fs::read_to_string(dir.join("max_energy_range_uj"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(u64::MAX);
            std::fs::read_to_string(&energy).map_err(|e| {
                format!(
                    "RAPL: {} is not readable ({e}); it is root-only on most kernels",
                    energy.display()
                )
            })?;
            domains.push(Domain { energy, max_uj });
        }
        if domains.is_empty() {
            return Err(format!("RAPL: no package domains under {}", root.display()));
        }
        domains.sort_by(|a, b| a.energy.cmp(&b.energy));
        let raw: Vec<(u64, f64)> = domains
            .iter()
            .map(|d| (read_uj(&d.energy).unwrap_or(0), 0.0))
            .collect();
        Ok(Self {
            domains,
            state: Mutex::new(raw),
        })
    }
}

fn read_uj(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl EnergySource for RaplEnergy {
    fn kind(&self) -> MeterKind {
        MeterKind::Rapl
    }

    fn read_joules(&self) -> Option<f64> {
        let mut state = self.state.lock().ok()?;
        let mut total = 0.0;
        for (d, (last, joules)) in self.domains.iter().zip(state.iter_mut()) {
            let now = read_uj(&d.energy)?;
            let delta = if now >= *last {
                now - *last
            } else {
                // Wrapped around.
                d.max_uj.saturating_sub(*last) + now
            };
            *last = now;
            *joules += delta as f64 / 1e6;
            total += *joules;
        }
        Some(total)
    }
}

#[derive(Default)]
struct Shares {
    last: f64,
    next_id: u64,
    running: HashMap<u64, f64>,
}

/// Splits a device's energy among the requests that ran on it.
pub struct EnergyMeter {
    source: Option<Box<dyn EnergySource>>,
    why_none: String,
    shares: Mutex<Shares>,
}

/// A request being metered: [`Metering::finish`] gives its share; dropped
/// unfinished (the caller went away), it stops taking a share.
pub struct Metering {
    meter: Arc<EnergyMeter>,
    id: u64,
    finished: bool,
}

impl Metering {
    /// The request ended: its share of the energy.
    pub fn finish(mut self) -> Energy {
        self.finished = true;
        self.meter.end(self.id)
    }
}

impl Drop for Metering {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.meter.end(self.id);
        }
    }
}

/// What a request used.
#[derive(Debug, Clone, PartialEq)]
pub enum Energy {
    /// Joules, and the meter (`nvml`, `rapl`).
    Measured(f64, MeterKind),
    /// No meter; why.
    Unmeasured(String),
}

impl EnergyMeter {
    /// A meter over `source`.
    pub fn new(source: Box<dyn EnergySource>) -> Self {
        let last = source.read_joules().unwrap_or(0.0);
        Self {
            source: Some(source),
            why_none: String::new(),
            shares: Mutex::new(Shares {
                last,
                ..Default::default()
            }),
        }
    }

    /// No meter, for the reason given (reported with every answer).
    pub fn none(why: impl Into<String>) -> Self {
        Self {
            source: None,
            why_none: why.into(),
            shares: Mutex::default(),
        }
    }

    /// The meter for inference on this machine's CPU: RAPL, if readable.
    pub fn for_cpu() -> Self {
        match RaplEnergy::open() {
            Ok(r) => Self::new(Box::new(r)),
            Err(e) => Self::none(format!("no CPU energy meter on this machine ({e})")),
        }
    }

    /// The meter for a GPU server on this machine: NVML, if present.
    pub fn for_local_gpu() -> Self {
        match NvmlEnergy::open() {
            Ok(n) => Self::new(Box::new(n)),
            Err(e) => Self::none(format!("no GPU energy meter on this machine ({e})")),
        }
    }

    /// Why there is no meter (empty when there is one).
    pub fn why_none(&self) -> &str {
        &self.why_none
    }

    /// Which meter, if any.
    pub fn source_kind(&self) -> Option<MeterKind> {
        self.source.as_ref().map(|s| s.kind())
    }

    /// Shares the energy since the last read among the running requests.
    fn settle(&self, shares: &mut Shares) {
        let Some(now) = self.source.as_ref().and_then(|s| s.read_joules()) else {
            return;
        };
        let delta = (now - shares.last).max(0.0);
        shares.last = now;
        if !shares.running.is_empty() {
            let each = delta / shares.running.len() as f64;
            for v in shares.running.values_mut() {
                *v += each;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shares> {
        hearth_mesh::sync::lock(&self.shares)
    }

    /// A request starts.
    pub fn begin(self: &Arc<Self>) -> Metering {
        let mut shares = self.lock();
        self.settle(&mut shares);
        shares.next_id += 1;
        let id = shares.next_id;
        if self.source.is_some() {
            shares.running.insert(id, 0.0);
        }
        Metering {
            meter: self.clone(),
            id,
            finished: false,
        }
    }

    fn end(&self, id: u64) -> Energy {
        let Some(source) = self.source.as_ref() else {
            return Energy::Unmeasured(self.why_none.clone());
        };
        let mut shares = self.lock();
        self.settle(&mut shares);
        match shares.running.remove(&id) {
            Some(j) => Energy::Measured(j, source.kind()),
            None => Energy::Unmeasured("the meter lost track of the request".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A counter the test advances (a test double for a meter).
    struct FakeCounter(Arc<AtomicU64>);

    impl EnergySource for FakeCounter {
        fn kind(&self) -> MeterKind {
            MeterKind::Rapl
        }
        fn read_joules(&self) -> Option<f64> {
            Some(self.0.load(Ordering::SeqCst) as f64)
        }
    }

    #[test]
    fn concurrent_requests_share_the_energy_and_it_adds_up() {
        let counter = Arc::new(AtomicU64::new(1000));
        let meter = Arc::new(EnergyMeter::new(Box::new(FakeCounter(counter.clone()))));
        let a = meter.begin();
        counter.fetch_add(10, Ordering::SeqCst); // a alone: 10 J
        let b = meter.begin();
        counter.fetch_add(20, Ordering::SeqCst); // a and b: 10 J each
        let ea = a.finish();
        counter.fetch_add(5, Ordering::SeqCst); // b alone: 5 J
        let eb = b.finish();
        assert_eq!(ea, Energy::Measured(20.0, MeterKind::Rapl));
        assert_eq!(eb, Energy::Measured(15.0, MeterKind::Rapl));
        // Idle energy between requests is nobody's.
        counter.fetch_add(100, Ordering::SeqCst);
        let c = meter.begin();
        counter.fetch_add(1, Ordering::SeqCst);
        assert_eq!(c.finish(), Energy::Measured(1.0, MeterKind::Rapl));
        // A request abandoned midway stops taking a share.
        let gone = meter.begin();
        let d = meter.begin();
        counter.fetch_add(4, Ordering::SeqCst); // 2 J each
        drop(gone);
        counter.fetch_add(3, Ordering::SeqCst); // d alone
        assert_eq!(d.finish(), Energy::Measured(5.0, MeterKind::Rapl));
    }

    #[test]
    fn no_meter_says_why_and_never_invents_a_figure() {
        let meter = Arc::new(EnergyMeter::none("no meter here (test)"));
        let m = meter.begin();
        assert_eq!(
            m.finish(),
            Energy::Unmeasured("no meter here (test)".into())
        );
        assert_eq!(meter.source_kind(), None);
    }

    #[test]
    fn rapl_reads_packages_and_survives_a_wrap() {
        let root = tempfile::tempdir().unwrap();
        let pkg = root.path().join("intel-rapl:0");
        let sub = root.path().join("intel-rapl:0:0");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(pkg.join("energy_uj"), "999000000\n").unwrap();
        std::fs::write(pkg.join("max_energy_range_uj"), "1000000000\n").unwrap();
        std::fs::write(sub.join("energy_uj"), "5\n").unwrap();
        let rapl = RaplEnergy::open_at(root.path()).unwrap();
        assert_eq!(rapl.read_joules(), Some(0.0));
        // 1 J to the wrap point, then 2 J past it.
        std::fs::write(pkg.join("energy_uj"), "2000000\n").unwrap();
        let j = rapl.read_joules().unwrap();
        assert!((j - 3.0).abs() < 1e-9, "{j}");
        let none = RaplEnergy::open_at(&root.path().join("absent"));
        assert!(none.is_err());
    }
}
