//! The evaluation harness: task suites, how an answer is scored, the report
//! of a run, and the paired bootstrap that decides whether one
//! configuration beats another on the same cases.
//!
//! A suite is JSONL, one case a line:
//! `{"id", "prompt", "expect": {"number": N} | {"contains": S} | {"regex": R} |
//! {"file": PATH, "contains": S}, "tool": NAME?, "memory": DIR?}`.
//! `tool` must have been called somewhere in the task (the orchestrator's own
//! calls and its operatives'); `file` is inside the files tool's root;
//! `memory` is a folder (relative to the suite) ingested before the cases run.
//!
//! Running cases needs a mesh, which this crate does not start: the caller
//! passes a [`Runner`].

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// What an answer must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    /// A file inside the files root holds the text.
    File {
        /// Its path, relative to the root.
        file: String,
        /// Text it must contain (case-insensitive).
        contains: String,
    },
    /// Some number in the answer equals this (relative tolerance 1e-9,
    /// thousands separators allowed).
    Number {
        /// The number.
        number: f64,
    },
    /// The answer contains this (case-insensitive).
    Contains {
        /// The text.
        contains: String,
    },
    /// The answer matches this regular expression.
    Regex {
        /// The pattern.
        regex: String,
    },
}

/// One case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique id.
    pub id: String,
    /// What is asked.
    pub prompt: String,
    /// How the answer is checked.
    pub expect: Expect,
    /// A tool that must have been called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// A folder to ingest into memory first (relative to the suite file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// A suite: its name, where it came from, its cases.
#[derive(Debug, Clone)]
pub struct Suite {
    /// `calculator.test`, or the file's stem.
    pub name: String,
    /// The folder `memory` paths are relative to.
    pub base: PathBuf,
    /// The cases.
    pub cases: Vec<Case>,
}

/// Why a suite could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// Neither a file nor a shipped suite.
    #[error("no suite `{0}`: not a file, and not a shipped suite ({1})")]
    Unknown(String, String),
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a case.
    #[error("{suite} line {line}: {reason}")]
    Invalid {
        /// The suite.
        suite: String,
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Where the shipped suites are.
pub fn shipped_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/suites"))
}

/// The shipped suites: `(name, file text)`, held-out splits and training
/// splits of each capability.
pub const SHIPPED: [(&str, &str); 16] = [
    (
        "calculator.train",
        include_str!("../suites/calculator.train.jsonl"),
    ),
    (
        "calculator.test",
        include_str!("../suites/calculator.test.jsonl"),
    ),
    ("files.train", include_str!("../suites/files.train.jsonl")),
    ("files.test", include_str!("../suites/files.test.jsonl")),
    ("python.train", include_str!("../suites/python.train.jsonl")),
    ("python.test", include_str!("../suites/python.test.jsonl")),
    (
        "retrieval.train",
        include_str!("../suites/retrieval.train.jsonl"),
    ),
    (
        "retrieval.test",
        include_str!("../suites/retrieval.test.jsonl"),
    ),
    (
        "delegation.train",
        include_str!("../suites/delegation.train.jsonl"),
    ),
    (
        "delegation.test",
        include_str!("../suites/delegation.test.jsonl"),
    ),
    ("plain.train", include_str!("../suites/plain.train.jsonl")),
    ("plain.test", include_str!("../suites/plain.test.jsonl")),
    (
        "newcomer.test",
        include_str!("../suites/newcomer.test.jsonl"),
    ),
    // Ten requests written blind (by a helper that saw no suite and no
    // generator) after the first adapter shipped: the honest measure of
    // generalisation for the second.
    ("fresh.test", include_str!("../suites/fresh.test.jsonl")),
    // Nine more written blind (by a helper that saw no suite and no
    // generator) after the fresh set's failures had been seen: the honest
    // measure for the fourth adapter. (A tenth, "What is the capital of
    // France?", turned out to be a training fact and was dropped.)
    ("blind.test", include_str!("../suites/blind.test.jsonl")),
    // Nine more written blind (by a helper that saw no suite and no
    // generator) before the fifth adapter was trained, after the blind set's
    // failures had been seen: the honest measure for it. (A tenth, "What is
    // the capital of France?", is a training fact and was dropped; case 06,
    // primes below 100 in Python, happens to be one of the generators' own
    // tasks in other words.)
    ("blind2.test", include_str!("../suites/blind2.test.jsonl")),
];

/// The held-out split of every shipped capability (the gate's suites).
pub const HELD_OUT: [&str; 10] = [
    "calculator.test",
    "files.test",
    "python.test",
    "retrieval.test",
    "delegation.test",
    "plain.test",
    "newcomer.test",
    "fresh.test",
    "blind.test",
    "blind2.test",
];

/// Parses suite text.
pub fn parse(name: &str, base: PathBuf, text: &str) -> Result<Suite, SuiteError> {
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line).map_err(|e| SuiteError::Invalid {
            suite: name.to_string(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        if let Expect::Regex { regex } = &case.expect
            && let Err(e) = Regex::new(regex)
        {
            return Err(SuiteError::Invalid {
                suite: name.to_string(),
                line: i + 1,
                reason: format!("the regex does not compile: {e}"),
            });
        }
        cases.push(case);
    }
    Ok(Suite {
        name: name.to_string(),
        base,
        cases,
    })
}

/// A suite by path or shipped name: `calculator` is the held-out split
/// (`calculator.test`), `calculator.train` the training split, `held-out`
/// every held-out split.
pub fn load(spec: &str) -> Result<Vec<Suite>, SuiteError> {
    let path = Path::new(spec);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".jsonl").to_string())
            .unwrap_or_else(|| spec.to_string());
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok(vec![parse(&name, base, &text)?]);
    }
    if spec == "held-out" {
        return HELD_OUT.iter().map(|n| shipped(n)).collect();
    }
    let name = if spec.contains('.') {
        spec.to_string()
    } else {
        format!("{spec}.test")
    };
    Ok(vec![shipped(&name).map_err(|_| {
        SuiteError::Unknown(
            spec.to_string(),
            SHIPPED
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?])
}

fn shipped(name: &str) -> Result<Suite, SuiteError> {
    let (_, text) = SHIPPED
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| SuiteError::Unknown(name.to_string(), String::new()))?;
    parse(name, shipped_dir(), text)
}

/// Every number written in `text` (thousands separators allowed).
pub fn numbers_in(text: &str) -> Vec<f64> {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    let Some(re) = RE
        .get_or_init(|| {
            Regex::new(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?").ok()
        })
        .as_ref()
    else {
        return Vec::new();
    };
    re.find_iter(text)
        .filter_map(|m| m.as_str().replace(',', "").parse::<f64>().ok())
        .collect()
}

/// Whether `answer` (and the files root) satisfies `expect`; the reason
/// when not.
pub fn check(expect: &Expect, answer: &str, files_root: &Path) -> Result<(), String> {
    match expect {
        Expect::Number { number } => {
            let found = numbers_in(answer);
            if found
                .iter()
                .any(|x| (x - number).abs() <= 1e-9 * number.abs().max(1.0))
            {
                Ok(())
            } else {
                Err(format!("no number in the answer equals {number}"))
            }
        }
        Expect::Contains { contains } => {
            if answer.to_lowercase().contains(&contains.to_lowercase()) {
                Ok(())
            } else {
                Err(format!("the answer does not contain {contains:?}"))
            }
        }
        Expect::Regex { regex } => match Regex::new(regex) {
            Ok(r) if r.is_match(answer) => Ok(()),
            Ok(_) => Err(format!("the answer does not match /{regex}/")),
            Err(e) => Err(format!("the regex does not compile: {e}")),
        },
        Expect::File { file, contains } => {
            let rel = Path::new(file);
            if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
                return Err(format!("{file} is not a path inside the files root"));
            }
            match std::fs::read_to_string(files_root.join(rel)) {
                Ok(text) if text.to_lowercase().contains(&contains.to_lowercase()) => Ok(()),
                Ok(_) => Err(format!("{file} does not contain {contains:?}")),
                Err(e) => Err(format!("{file}: {e}")),
            }
        }
    }
}

/// What running one case's prompt produced.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// The answer (or why the task failed).
    pub answer: String,
    /// Its final A2A state name.
    pub state: String,
    /// Whether it completed.
    pub completed: bool,
    /// The task id.
    pub task_id: String,
    /// Wall time, ms.
    pub latency_ms: f64,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Of those, found in the engine's prompt cache.
    pub tokens_cached: u64,
    /// Reply tokens.
    pub tokens_out: u64,
    /// Model calls.
    pub model_calls: u32,
    /// Joules, if measured.
    pub energy_joules: Option<f64>,
    /// Dollars, if known.
    pub cost_usd: Option<f64>,
}

/// Runs prompts on a mesh.
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// Sends one prompt as a new task and waits for its end.
    async fn ask(&self, prompt: &str) -> Result<Asked, String>;
    /// The tools called anywhere in the task's tree.
    async fn tools_called(&self, task_id: &str) -> Vec<String>;
    /// Ingests a folder into memory.
    async fn ingest(&self, dir: &Path) -> Result<(), String>;
    /// The files tool's root.
    fn files_root(&self) -> PathBuf;
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Case id.
    pub id: String,
    /// Suite.
    pub suite: String,
    /// What was asked.
    pub prompt: String,
    /// Scored right.
    pub passed: bool,
    /// The answer.
    pub answer: String,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The task's final state.
    pub state: String,
    /// The task id (its traces hold the trajectory).
    pub task_id: String,
    /// Tools called.
    pub tools_called: Vec<String>,
    /// Wall time, ms.
    pub latency_ms: f64,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Of those, found in the engine's prompt cache (not computed again).
    #[serde(default)]
    pub tokens_cached: u64,
    /// Reply tokens.
    pub tokens_out: u64,
    /// Model calls.
    pub model_calls: u32,
    /// Joules, if measured.
    pub energy_joules: Option<f64>,
    /// Dollars, if known.
    pub cost_usd: Option<f64>,
}

/// One suite's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteTotals {
    /// Its name.
    pub name: String,
    /// Cases.
    pub cases: usize,
    /// Passed.
    pub passed: usize,
    /// passed / cases.
    pub accuracy: f64,
}

/// An evaluation run's report (`hearth eval run --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Run id.
    pub run_id: String,
    /// What ran: model, adapter, backend.
    pub config: serde_json::Value,
    /// Cases in all.
    pub cases: usize,
    /// Passed in all.
    pub passed: usize,
    /// passed / cases.
    pub accuracy: f64,
    /// Each suite's totals.
    pub suites: Vec<SuiteTotals>,
    /// Median wall time per case, ms.
    pub median_latency_ms: Option<f64>,
    /// Median prompt tokens per case.
    pub median_tokens_in: Option<f64>,
    /// Median prompt tokens per case that were computed (not found in the
    /// engine's prompt cache).
    #[serde(default)]
    pub median_tokens_computed: Option<f64>,
    /// Median reply tokens per case.
    pub median_tokens_out: Option<f64>,
    /// Median energy per case (null when unmeasured).
    pub median_energy_joules: Option<f64>,
    /// Median dollars per case (null when unknown).
    pub median_cost_usd: Option<f64>,
    /// Every case.
    pub results: Vec<CaseResult>,
}

/// The median of some numbers (None for none).
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Runs every case of `suites`; `progress` hears each result.
pub async fn run(
    runner: &dyn Runner,
    suites: &[Suite],
    config: serde_json::Value,
    progress: &(dyn Fn(&CaseResult, usize, usize) + Send + Sync),
) -> Report {
    let total: usize = suites.iter().map(|s| s.cases.len()).sum();
    let mut results = Vec::with_capacity(total);
    let mut ingested: Vec<PathBuf> = Vec::new();
    for suite in suites {
        for case in &suite.cases {
            let mut setup_error = None;
            if let Some(m) = &case.memory {
                let dir = suite.base.join(m);
                if !ingested.contains(&dir) {
                    match runner.ingest(&dir).await {
                        Ok(()) => ingested.push(dir),
                        Err(e) => setup_error = Some(format!("ingesting {}: {e}", dir.display())),
                    }
                }
            }
            let r = match (setup_error, runner.ask(&case.prompt).await) {
                (Some(e), _) | (None, Err(e)) => CaseResult {
                    id: case.id.clone(),
                    suite: suite.name.clone(),
                    prompt: case.prompt.clone(),
                    passed: false,
                    answer: String::new(),
                    reason: Some(e),
                    state: "ERROR".into(),
                    task_id: String::new(),
                    tools_called: Vec::new(),
                    latency_ms: 0.0,
                    tokens_in: 0,
                    tokens_cached: 0,
                    tokens_out: 0,
                    model_calls: 0,
                    energy_joules: None,
                    cost_usd: None,
                },
                (None, Ok(a)) => {
                    let tools_called = runner.tools_called(&a.task_id).await;
                    let mut reason = if a.completed {
                        check(&case.expect, &a.answer, &runner.files_root()).err()
                    } else {
                        Some(format!("the task ended {}", a.state))
                    };
                    if reason.is_none()
                        && let Some(t) = &case.tool
                        && !tools_called.iter().any(|c| c == t)
                    {
                        reason = Some(format!("{t} was not called"));
                    }
                    CaseResult {
                        id: case.id.clone(),
                        suite: suite.name.clone(),
                        prompt: case.prompt.clone(),
                        passed: reason.is_none(),
                        answer: a.answer,
                        reason,
                        state: a.state,
                        task_id: a.task_id,
                        tools_called,
                        latency_ms: a.latency_ms,
                        tokens_in: a.tokens_in,
                        tokens_cached: a.tokens_cached,
                        tokens_out: a.tokens_out,
                        model_calls: a.model_calls,
                        energy_joules: a.energy_joules,
                        cost_usd: a.cost_usd,
                    }
                }
            };
            results.push(r);
            if let Some(last) = results.last() {
                progress(last, results.len(), total);
            }
        }
    }
    report(config, suites, results)
}

/// Totals and medians over `results`.
pub fn report(config: serde_json::Value, suites: &[Suite], results: Vec<CaseResult>) -> Report {
    let totals = suites
        .iter()
        .map(|s| {
            let mine: Vec<&CaseResult> = results.iter().filter(|r| r.suite == s.name).collect();
            let passed = mine.iter().filter(|r| r.passed).count();
            SuiteTotals {
                name: s.name.clone(),
                cases: mine.len(),
                passed,
                accuracy: ratio(passed, mine.len()),
            }
        })
        .collect();
    let passed = results.iter().filter(|r| r.passed).count();
    let ran: Vec<&CaseResult> = results.iter().filter(|r| !r.task_id.is_empty()).collect();
    Report {
        run_id: uuid::Uuid::now_v7().to_string(),
        config,
        cases: results.len(),
        passed,
        accuracy: ratio(passed, results.len()),
        suites: totals,
        median_latency_ms: median(ran.iter().map(|r| r.latency_ms)),
        median_tokens_in: median(ran.iter().map(|r| r.tokens_in as f64)),
        median_tokens_computed: median(
            ran.iter()
                .map(|r| r.tokens_in.saturating_sub(r.tokens_cached) as f64),
        ),
        median_tokens_out: median(ran.iter().map(|r| r.tokens_out as f64)),
        median_energy_joules: median(ran.iter().filter_map(|r| r.energy_joules)),
        median_cost_usd: median(ran.iter().filter_map(|r| r.cost_usd)),
        results,
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The paired bootstrap of two runs over the same cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Cases both runs scored.
    pub cases: usize,
    /// Baseline accuracy.
    pub baseline: f64,
    /// Candidate accuracy.
    pub candidate: f64,
    /// candidate − baseline.
    pub difference: f64,
    /// 95% interval of the difference (2.5th and 97.5th percentiles).
    pub ci95: (f64, f64),
    /// Resamples drawn.
    pub resamples: usize,
    /// The interval lies above zero: the candidate wins beyond the noise.
    pub wins: bool,
}

/// Fewer shared cases than this never make a win: an interval over a
/// handful of cases says little.
pub const MIN_CASES_TO_WIN: usize = 8;

/// Compares a candidate run with a baseline on the cases they share (by
/// id): the difference in accuracy and its 95% paired-bootstrap interval.
pub fn compare(baseline: &Report, candidate: &Report, resamples: usize, seed: u64) -> Comparison {
    let pairs: Vec<(f64, f64)> = baseline
        .results
        .iter()
        .filter_map(|b| {
            candidate
                .results
                .iter()
                .find(|c| c.id == b.id)
                .map(|c| (f64::from(u8::from(b.passed)), f64::from(u8::from(c.passed))))
        })
        .collect();
    let n = pairs.len();
    let mean = |f: &dyn Fn(&(f64, f64)) -> f64| {
        if n == 0 {
            0.0
        } else {
            pairs.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let base = mean(&|p| p.0);
    let cand = mean(&|p| p.1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut diffs: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            if n == 0 {
                return 0.0;
            }
            let mut d = 0.0;
            for _ in 0..n {
                let (b, c) = pairs[rng.gen_range(0..n)];
                d += c - b;
            }
            d / n as f64
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    let at = |q: f64| diffs[((diffs.len() - 1) as f64 * q).round() as usize];
    let ci95 = (at(0.025), at(0.975));
    Comparison {
        cases: n,
        baseline: base,
        candidate: cand,
        difference: cand - base,
        ci95,
        resamples: diffs.len(),
        wins: n >= MIN_CASES_TO_WIN && ci95.0 > 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_suite_parses_and_held_out_ids_never_appear_in_training_splits() {
        let mut train_prompts = Vec::new();
        for (name, text) in SHIPPED {
            let s = parse(name, shipped_dir(), text).unwrap();
            assert!(!s.cases.is_empty(), "{name}");
            if name.ends_with(".train") {
                train_prompts.extend(s.cases.iter().map(|c| c.prompt.clone()));
            }
        }
        for name in HELD_OUT {
            for c in &shipped(name).unwrap().cases {
                assert!(
                    !train_prompts.contains(&c.prompt),
                    "{} is in a training split",
                    c.id
                );
            }
        }
    }

    #[test]
    fn numbers_regexes_text_and_files_are_scored() {
        let root = tempfile::tempdir().unwrap();
        let n = |x: f64| Expect::Number { number: x };
        assert!(check(&n(144.0), "12*12 = 144", root.path()).is_ok());
        assert!(check(&n(1_234_567.0), "It is 1,234,567.", root.path()).is_ok());
        assert!(check(&n(0.1), "0.1", root.path()).is_ok());
        // A wrong expectation fails the case.
        assert!(check(&n(145.0), "12*12 = 144", root.path()).is_err());
        assert!(check(&n(144.0), "12*12", root.path()).is_err());
        let c = Expect::Contains {
            contains: "Paris".into(),
        };
        assert!(check(&c, "It is paris.", root.path()).is_ok());
        assert!(check(&c, "Lyon", root.path()).is_err());
        let r = Expect::Regex {
            regex: "(?i)^hel+o".into(),
        };
        assert!(check(&r, "Hello!", root.path()).is_ok());
        std::fs::write(root.path().join("todo.txt"), "Buy milk").unwrap();
        let f = |file: &str| Expect::File {
            file: file.into(),
            contains: "buy milk".into(),
        };
        assert!(check(&f("todo.txt"), "", root.path()).is_ok());
        assert!(check(&f("none.txt"), "", root.path()).is_err());
        assert!(check(&f("../todo.txt"), "", root.path()).is_err());
    }

    /// A runner double (test-only): answers from a table, reports tools.
    struct Table(Vec<(&'static str, &'static str, Vec<&'static str>)>);

    #[async_trait::async_trait]
    impl Runner for Table {
        async fn ask(&self, prompt: &str) -> Result<Asked, String> {
            let (_, answer, _) = self
                .0
                .iter()
                .find(|(p, ..)| *p == prompt)
                .ok_or("unknown prompt")?;
            Ok(Asked {
                answer: answer.to_string(),
                state: "TASK_STATE_COMPLETED".into(),
                completed: true,
                task_id: prompt.to_string(),
                latency_ms: 10.0,
                ..Default::default()
            })
        }
        async fn tools_called(&self, task_id: &str) -> Vec<String> {
            self.0
                .iter()
                .find(|(p, ..)| *p == task_id)
                .map(|(_, _, t)| t.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        }
        async fn ingest(&self, _dir: &Path) -> Result<(), String> {
            Ok(())
        }
        fn files_root(&self) -> PathBuf {
            PathBuf::from("/nonexistent")
        }
    }

    #[tokio::test]
    async fn a_tool_case_fails_when_the_tool_was_not_called_and_totals_add_up() {
        let suite = parse(
            "t",
            PathBuf::new(),
            r#"{"id":"a","prompt":"2+2","expect":{"number":4},"tool":"calculator.evaluate"}
{"id":"b","prompt":"3+3","expect":{"number":6},"tool":"calculator.evaluate"}
{"id":"c","prompt":"capital","expect":{"contains":"Paris"}}
{"id":"d","prompt":"wrong","expect":{"number":5}}"#,
        )
        .unwrap();
        let runner = Table(vec![
            ("2+2", "4", vec!["hearth.delegate", "calculator.evaluate"]),
            ("3+3", "6", vec![]),
            ("capital", "Paris", vec![]),
            ("wrong", "4", vec![]),
        ]);
        let report = run(&runner, &[suite], serde_json::json!({}), &|_, _, _| {}).await;
        let passed: Vec<(&str, bool)> = report
            .results
            .iter()
            .map(|r| (r.id.as_str(), r.passed))
            .collect();
        assert_eq!(
            passed,
            [("a", true), ("b", false), ("c", true), ("d", false)]
        );
        assert!(
            report.results[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("not called")
        );
        assert_eq!((report.cases, report.passed), (4, 2));
        assert_eq!(report.accuracy, 0.5);
        assert_eq!(report.median_latency_ms, Some(10.0));
    }

    fn scored(passes: &[bool]) -> Report {
        report(
            serde_json::json!({}),
            &[],
            passes
                .iter()
                .enumerate()
                .map(|(i, p)| CaseResult {
                    id: i.to_string(),
                    suite: "s".into(),
                    prompt: String::new(),
                    passed: *p,
                    answer: String::new(),
                    reason: None,
                    state: String::new(),
                    task_id: "t".into(),
                    tools_called: vec![],
                    latency_ms: 1.0,
                    tokens_in: 0,
                    tokens_cached: 0,
                    tokens_out: 0,
                    model_calls: 0,
                    energy_joules: None,
                    cost_usd: None,
                })
                .collect(),
        )
    }

    #[test]
    fn the_bootstrap_calls_a_clear_win_a_win_and_a_worse_or_tied_candidate_not() {
        let base = scored(&[false; 30]);
        let better = scored(&[true; 30]);
        let c = compare(&base, &better, 2000, 7);
        assert!(
            c.wins && c.ci95.0 > 0.0 && (c.difference - 1.0).abs() < 1e-12,
            "{c:?}"
        );
        // Worse: no win.
        assert!(!compare(&better, &base, 2000, 7).wins);
        // One case of thirty better is within the noise.
        let mut one = vec![false; 30];
        one[0] = true;
        assert!(!compare(&base, &scored(&one), 2000, 7).wins);
    }
}
