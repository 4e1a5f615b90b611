//! Budgets enforced before a request is sent: the spend ledger.
//!
//! Every request to a priced backend first reserves its worst-case cost
//! against each budget that applies — the day's, the month's and its root
//! task's — and one that does not fit is not sent. The reservation is
//! settled with the real cost when the answer's usage arrives, released when
//! the request was never sent, and kept whole when the answer never said
//! what it cost (a request cut off mid-way may still have been billed).
//!
//! The ledger is one JSON file in the data directory (`routing/spend.json`),
//! read and rewritten under an exclusive lock on the file, so concurrent
//! tasks of one process and concurrent `hearth` processes never overspend a
//! budget, and a restart keeps what was spent. Each routed call also appends
//! a line to `routing/usage.jsonl`, which `hearth usage` sums up. Days and
//! months are the machine's local calendar.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be opened, locked, read or written.
    #[error("the spend ledger {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file holds something that is not a ledger.
    #[error("the spend ledger {path} is not valid ({why}); move it aside to start a new one")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        why: String,
    },
}

/// The limits in force, in US dollars (`[budget]`); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Per calendar day.
    pub usd_per_day: Option<f64>,
    /// Per calendar month.
    pub usd_per_month: Option<f64>,
    /// Per task, its subtasks included.
    pub usd_per_task: Option<f64>,
}

/// Which budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// `[budget] usd_per_day`.
    UsdPerDay,
    /// `[budget] usd_per_month`.
    UsdPerMonth,
    /// `[budget] usd_per_task`.
    UsdPerTask,
}

impl Budget {
    /// Its key in the configuration.
    pub fn key(self) -> &'static str {
        match self {
            Budget::UsdPerDay => "usd_per_day",
            Budget::UsdPerMonth => "usd_per_month",
            Budget::UsdPerTask => "usd_per_task",
        }
    }
}

/// A request that does not fit a budget: which one, its limit, what is
/// spent and reserved, and what the request could cost at most.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "over budget: [budget] {} is ${limit:.4}, ${spent:.4} is spent and ${reserved:.4} reserved, and this request could cost up to ${asked:.4}",
    budget.key()
)]
pub struct OverBudget {
    /// The budget.
    pub budget: Budget,
    /// Its limit.
    pub limit: f64,
    /// Settled spend in its period (or task).
    pub spent: f64,
    /// Reservations still open in it.
    pub reserved: f64,
    /// The request's worst-case cost.
    pub asked: f64,
}

/// A calendar position: the local day and month, and the Unix time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Seconds since the Unix epoch.
    pub unix: u64,
}

impl Stamp {
    /// Now, on this machine's calendar.
    pub fn now() -> Self {
        let now = chrono::Local::now();
        Self {
            day: now.format("%Y-%m-%d").to_string(),
            month: now.format("%Y-%m").to_string(),
            unix: u64::try_from(now.timestamp()).unwrap_or(0),
        }
    }
}

/// An open reservation: settle it or release it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reserved {
    /// Its id in the ledger.
    pub id: String,
    /// What was reserved.
    pub usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Reservation {
    usd: f64,
    day: String,
    month: String,
    task: String,
    at_unix: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct TaskSpend {
    usd: f64,
    last_unix: u64,
}

/// The ledger's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
struct Ledger {
    /// Settled spend per local day.
    days: BTreeMap<String, f64>,
    /// Settled spend per local month.
    months: BTreeMap<String, f64>,
    /// Settled spend per root task (pruned a week after its last call).
    tasks: BTreeMap<String, TaskSpend>,
    /// Open reservations by id.
    reservations: BTreeMap<String, Reservation>,
    /// The next reservation's number.
    next: u64,
}

/// A reservation older than this was never settled by its process (it
/// stopped): it is counted as spent, the safe side.
const STALE_AFTER_S: u64 = 3600;
/// Per-task spend is forgotten this long after the task's last call.
const TASK_KEPT_S: u64 = 7 * 24 * 3600;

impl Ledger {
    fn spend(&mut self, r: &Reservation, usd: f64) {
        *self.days.entry(r.day.clone()).or_default() += usd;
        *self.months.entry(r.month.clone()).or_default() += usd;
        if !r.task.is_empty() {
            let t = self.tasks.entry(r.task.clone()).or_default();
            t.usd += usd;
            t.last_unix = t.last_unix.max(r.at_unix);
        }
    }

    /// Stale reservations become spend; old tasks are forgotten.
    fn tidy(&mut self, now: u64) {
        let stale: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.at_unix) > STALE_AFTER_S)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(r) = self.reservations.remove(&id) {
                self.spend(&r, r.usd);
            }
        }
        self.tasks
            .retain(|_, t| now.saturating_sub(t.last_unix) <= TASK_KEPT_S);
    }

    fn reserved_where(&self, keep: impl Fn(&Reservation) -> bool) -> f64 {
        self.reservations
            .values()
            .filter(|r| keep(r))
            .map(|r| r.usd)
            .sum()
    }

    /// Each budget that applies at `at` (to root task `task`): its limit,
    /// settled spend and open reservations.
    fn scopes(
        &self,
        limits: &Limits,
        task: &str,
        at: &Stamp,
    ) -> [(Budget, Option<f64>, f64, f64); 3] {
        [
            (
                Budget::UsdPerDay,
                limits.usd_per_day,
                self.days.get(&at.day).copied().unwrap_or(0.0),
                self.reserved_where(|r| r.day == at.day),
            ),
            (
                Budget::UsdPerMonth,
                limits.usd_per_month,
                self.months.get(&at.month).copied().unwrap_or(0.0),
                self.reserved_where(|r| r.month == at.month),
            ),
            (
                Budget::UsdPerTask,
                limits.usd_per_task.filter(|_| !task.is_empty()),
                self.tasks.get(task).map_or(0.0, |t| t.usd),
                self.reserved_where(|r| r.task == task),
            ),
        ]
    }

    fn check(&self, limits: &Limits, task: &str, at: &Stamp, usd: f64) -> Result<(), OverBudget> {
        for (budget, limit, spent, reserved) in self.scopes(limits, task, at) {
            if let Some(limit) = limit
                && spent + reserved + usd > limit + 1e-12
            {
                return Err(OverBudget {
                    budget,
                    limit,
                    spent,
                    reserved,
                    asked: usd,
                });
            }
        }
        Ok(())
    }
}

/// What `hearth usage` shows of the budgets: each limit with what is spent
/// and reserved in the current period.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BudgetState {
    /// The budget's key.
    pub budget: Budget,
    /// Its limit.
    pub limit_usd: f64,
    /// Settled spend in the current day or month.
    pub spent_usd: f64,
    /// Open reservations in it.
    pub reserved_usd: f64,
    /// What is left.
    pub left_usd: f64,
}

/// The spend ledger of one data directory.
#[derive(Debug, Clone)]
pub struct SpendLedger {
    dir: PathBuf,
    limits: Limits,
}

impl SpendLedger {
    /// The ledger kept in `dir` (`<data dir>/routing`), enforcing `limits`.
    pub fn new(dir: impl Into<PathBuf>, limits: Limits) -> Self {
        Self {
            dir: dir.into(),
            limits,
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn path(&self) -> PathBuf {
        self.dir.join("spend.json")
    }

    /// The usage log's path.
    pub fn usage_path(&self) -> PathBuf {
        self.dir.join("usage.jsonl")
    }

    /// Runs `f` on the ledger under the file's exclusive lock, writing it
    /// back when `f` says it changed it.
    fn with<T>(&self, f: impl FnOnce(&mut Ledger) -> (T, bool)) -> Result<T, LedgerError> {
        let path = self.path();
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;
        let mut ledger: Ledger = if text.trim().is_empty() {
            Ledger::default()
        } else {
            serde_json::from_str(&text).map_err(|e| LedgerError::Corrupt {
                path: path.clone(),
                why: e.to_string(),
            })?
        };
        let (out, changed) = f(&mut ledger);
        if changed {
            write_whole(&mut file, &ledger).map_err(io)?;
        }
        // Unlocked when the file closes.
        Ok(out)
    }

    /// Reserves up to `usd` for a request of root task `task` at `at`:
    /// the outer error is the ledger's, the inner says which budget the
    /// request does not fit.
    pub fn reserve(
        &self,
        task: &str,
        usd: f64,
        at: &Stamp,
    ) -> Result<Result<Reserved, OverBudget>, LedgerError> {
        let limits = self.limits;
        self.with(|l| {
            l.tidy(at.unix);
            if let Err(over) = l.check(&limits, task, at, usd) {
                return (Err(over), true);
            }
            l.next += 1;
            let id = format!("r{}", l.next);
            l.reservations.insert(
                id.clone(),
                Reservation {
                    usd,
                    day: at.day.clone(),
                    month: at.month.clone(),
                    task: task.to_string(),
                    at_unix: at.unix,
                },
            );
            (Ok(Reserved { id, usd }), true)
        })
    }

    /// Settles a reservation at the request's real cost.
    pub fn settle(&self, r: &Reserved, usd: f64) -> Result<(), LedgerError> {
        self.with(|l| match l.reservations.remove(&r.id) {
            Some(res) => {
                l.spend(&res, usd.max(0.0));
                ((), true)
            }
            // Tidied away as stale: already counted whole.
            None => ((), false),
        })
    }

    /// Drops a reservation whose request was never sent.
    pub fn release(&self, r: &Reserved) -> Result<(), LedgerError> {
        self.with(|l| ((), l.reservations.remove(&r.id).is_some()))
    }

    /// Each budget with what is spent, reserved and left now.
    pub fn state(&self, at: &Stamp) -> Result<Vec<BudgetState>, LedgerError> {
        let limits = self.limits;
        self.with(|l| {
            // The day's and the month's (a task's budget has no "now").
            let out = l
                .scopes(&limits, "", at)
                .into_iter()
                .filter_map(|(budget, limit, spent, reserved)| {
                    limit.map(|limit| BudgetState {
                        budget,
                        limit_usd: limit,
                        spent_usd: spent,
                        reserved_usd: reserved,
                        left_usd: (limit - spent - reserved).max(0.0),
                    })
                })
                .collect();
            (out, false)
        })
    }

    /// Appends one routed call to the usage log.
    pub fn log(&self, line: &UsageLine) -> Result<(), LedgerError> {
        let path = self.usage_path();
        let io = |source| LedgerError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut text = serde_json::to_string(line).map_err(|e| LedgerError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        text.push('\n');
        // One write of a whole line to a file opened for appending.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(io)
    }
}

fn write_whole(file: &mut File, ledger: &Ledger) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(ledger).map_err(std::io::Error::other)?;
    file.seek(SeekFrom::Start(0))?;
    file.set_len(0)?;
    file.write_all(&text)?;
    file.sync_data()
}

/// Why a call went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// The routing policy's first choice.
    Policy,
    /// The request was sensitive: only a local backend may serve it.
    Sensitive,
    /// The remote's budget was spent: kept local.
    Budget,
    /// The first choice failed (down, unreachable): the next one served.
    Fallback,
    /// The local model's tool call was malformed: escalated to the remote.
    Escalated,
}

impl Why {
    /// How it reads in a route (`local: sensitive`).
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Policy => "policy",
            Why::Sensitive => "sensitive",
            Why::Budget => "budget",
            Why::Fallback => "fallback",
            Why::Escalated => "escalated",
        }
    }
}

/// One routed call, as the usage log keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageLine {
    /// Unix seconds.
    pub at_unix: u64,
    /// Local day.
    pub day: String,
    /// The backend's name in the routing (`local` for `[engine]`).
    pub backend: String,
    /// Whether that backend is local.
    pub local: bool,
    /// The model it served.
    pub model: String,
    /// The agent that asked.
    pub agent: String,
    /// Why it was chosen.
    pub why: Why,
    /// Tokens in and out.
    pub tokens_in: u64,
    /// Tokens out.
    pub tokens_out: u64,
    /// Dollars (None: unpriced).
    pub usd: Option<f64>,
    /// The call failed.
    #[serde(default)]
    pub failed: bool,
}

/// Reads every line of a usage log (missing: none; a torn last line is
/// skipped).
pub fn read_usage(path: &Path) -> Result<Vec<UsageLine>, LedgerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LedgerError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: &str, unix: u64) -> Stamp {
        Stamp {
            day: day.into(),
            month: day[..7].into(),
            unix,
        }
    }

    #[test]
    fn a_request_that_does_not_fit_is_refused_and_names_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let l = SpendLedger::new(
            dir.path(),
            Limits {
                usd_per_day: Some(1.0),
                ..Default::default()
            },
        );
        let now = at("2026-12-07", 1000);
        let r = l.reserve("t1", 0.6, &now).unwrap().unwrap();
        // 0.6 reserved: 0.5 more does not fit.
        let over = l.reserve("t1", 0.5, &now).unwrap().unwrap_err();
        assert_eq!(over.budget, Budget::UsdPerDay);
        assert!((over.reserved - 0.6).abs() < 1e-12);
        assert!(over.to_string().contains("usd_per_day"), "{over}");
        // Settled at its real cost, the rest is free again.
        l.settle(&r, 0.1).unwrap();
        let r2 = l.reserve("t1", 0.5, &now).unwrap().unwrap();
        l.release(&r2).unwrap();
        let state = l.state(&now).unwrap();
        assert!((state[0].spent_usd - 0.1).abs() < 1e-12, "{state:?}");
        assert!((state[0].left_usd - 0.9).abs() < 1e-12, "{state:?}");
        // A new day starts afresh; the month does not.
        let l = SpendLedger::new(
            dir.path(),
            Limits {
                usd_per_day: Some(1.0),
                usd_per_month: Some(1.05),
                ..Default::default()
            },
        );
        let over = l
            .reserve("t2", 1.0, &at("2026-12-08", 90_000))
            .unwrap()
            .unwrap_err();
        assert_eq!(over.budget, Budget::UsdPerMonth);
    }

    #[test]
    fn a_tasks_budget_counts_its_subtasks_and_a_stale_reservation_counts_whole() {
        let dir = tempfile::tempdir().unwrap();
        let l = SpendLedger::new(
            dir.path(),
            Limits {
                usd_per_task: Some(0.3),
                ..Default::default()
            },
        );
        let now = at("2026-12-07", 1000);
        let r = l.reserve("root", 0.2, &now).unwrap().unwrap();
        l.settle(&r, 0.2).unwrap();
        assert_eq!(
            l.reserve("root", 0.2, &now).unwrap().unwrap_err().budget,
            Budget::UsdPerTask
        );
        // Another task has its own.
        assert!(l.reserve("other", 0.2, &now).unwrap().is_ok());
        // "other"'s 0.2 was never settled: an hour later it is spent.
        let later = at("2026-12-07", 1000 + STALE_AFTER_S + 1);
        assert!(l.reserve("other", 0.2, &later).unwrap().is_err());
    }

    #[test]
    fn twenty_racers_for_a_budget_that_fits_five_get_five() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            usd_per_day: Some(0.5),
            ..Default::default()
        };
        let now = at("2026-12-07", 1000);
        let got: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|i| {
                    // Each its own ledger handle and file: as separate
                    // processes would be.
                    let l = SpendLedger::new(dir.path(), limits);
                    let now = now.clone();
                    s.spawn(move || l.reserve(&format!("t{i}"), 0.1, &now).unwrap().is_ok())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.iter().filter(|ok| **ok).count(), 5, "{got:?}");
    }

    #[test]
    fn a_corrupt_ledger_is_an_error_not_an_empty_budget() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spend.json"), "{not json").unwrap();
        let l = SpendLedger::new(dir.path(), Limits::default());
        let e = l.reserve("t", 0.1, &at("2026-12-07", 1)).unwrap_err();
        assert!(e.to_string().contains("move it aside"), "{e}");
    }
}
