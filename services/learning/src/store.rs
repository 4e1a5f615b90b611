//! The trace store: one JSON file a trace under a directory (the data dir's
//! `traces/` when embedded), written whole to a temporary name and renamed,
//! so a crash leaves either the old file or the new one. Retention removes
//! the oldest by age and by count.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::convert::{Feedback, Rating, TraceDoc};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not a trace.
    #[error("{path} is not a trace: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No trace has that id.
    #[error("no trace `{0}`")]
    NotFound(String),
    /// An id that could name a file outside the store.
    #[error("`{0}` is not a trace id")]
    BadId(String),
}

/// One line of `hearth traces list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The trace id.
    pub id: String,
    /// The delegating task.
    pub parent_task_id: String,
    /// Agent.
    pub agent: String,
    /// Start (Unix ms).
    pub started_unix_ms: i64,
    /// Duration.
    pub duration_ms: f64,
    /// The task's text (the first user message).
    pub task: String,
    /// The answer, or the error.
    pub outcome: String,
    /// It failed.
    pub failed: bool,
    /// Model calls.
    pub model_calls: usize,
    /// Tool calls.
    pub tool_calls: usize,
    /// The verdict, if any.
    pub feedback: Option<Rating>,
    /// Where it came from.
    pub source: &'static str,
}

impl Summary {
    fn of(doc: &TraceDoc) -> Self {
        Summary {
            id: doc.id.clone(),
            parent_task_id: doc.parent_task_id.clone(),
            agent: doc.agent.clone(),
            started_unix_ms: doc.started_unix_ms,
            duration_ms: doc.duration_ms,
            task: doc
                .messages
                .iter()
                .find(|m| m.role == "user")
                .map(|m| m.content.clone())
                .unwrap_or_default(),
            outcome: if doc.error.is_empty() {
                doc.answer.clone()
            } else {
                doc.error.clone()
            },
            failed: !doc.error.is_empty(),
            model_calls: doc.model_calls.len(),
            tool_calls: doc.tool_runs.len(),
            feedback: doc.feedback.as_ref().map(|f| f.rating),
            source: doc.source.as_str(),
        }
    }
}

/// Traces on disk.
pub struct TraceStore {
    dir: PathBuf,
    /// Task id → the ids of the traces that ran it and of those it
    /// delegated to, for traces written by this process.
    index: Mutex<HashMap<String, Vec<String>>>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !id.starts_with('.')
}

impl TraceStore {
    /// The store under `dir` (created when the first trace is written).
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            index: Mutex::default(),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> Result<PathBuf, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::BadId(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn write(&self, id: &str, doc: &TraceDoc) -> Result<(), StoreError> {
        let path = self.path(id)?;
        std::fs::create_dir_all(&self.dir).map_err(Self::io(&self.dir))?;
        let text = serde_json::to_vec_pretty(doc).map_err(|e| StoreError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let part = self.dir.join(format!(".{id}.part"));
        std::fs::write(&part, text).map_err(Self::io(&part))?;
        std::fs::rename(&part, &path).map_err(Self::io(&path))
    }

    /// Keeps a trace (already redacted); returns its id: the task id, or
    /// `<task id>.<n>` for a later turn of the same task.
    pub fn put(&self, mut doc: TraceDoc) -> Result<String, StoreError> {
        if !valid_id(&doc.id) {
            return Err(StoreError::BadId(doc.id));
        }
        let task_id = doc.id.clone();
        let mut id = task_id.clone();
        let mut n = 1;
        while self.path(&id)?.exists() {
            n += 1;
            id = format!("{task_id}.{n}");
        }
        doc.id.clone_from(&id);
        self.write(&id, &doc)?;
        if let Ok(mut index) = self.index.lock() {
            index.entry(task_id).or_default().push(id.clone());
            if !doc.parent_task_id.is_empty() {
                index
                    .entry(doc.parent_task_id.clone())
                    .or_default()
                    .push(id.clone());
            }
            if index.len() > 50_000 {
                index.clear();
            }
        }
        Ok(id)
    }

    /// One trace.
    pub fn get(&self, id: &str) -> Result<TraceDoc, StoreError> {
        let path = self.path(id)?;
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.to_string()));
            }
            Err(e) => return Err(Self::io(&path)(e)),
        };
        serde_json::from_slice(&text).map_err(|e| StoreError::Malformed {
            path,
            reason: e.to_string(),
        })
    }

    /// Every trace, oldest first. Unreadable files are skipped with a warning.
    pub fn all(&self) -> Result<Vec<TraceDoc>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.dir)(e)),
        };
        let mut docs = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            match self.get(id) {
                Ok(d) => docs.push(d),
                Err(e) => tracing::warn!(error = %e, "skipping a trace file"),
            }
        }
        docs.sort_by(|a, b| {
            a.started_unix_ms
                .cmp(&b.started_unix_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(docs)
    }

    /// Summaries, newest first.
    pub fn list(&self) -> Result<Vec<Summary>, StoreError> {
        let mut all: Vec<Summary> = self.all()?.iter().map(Summary::of).collect();
        all.reverse();
        Ok(all)
    }

    /// The traces of `task_id` and of every task it delegated, depth first.
    pub fn tree(&self, task_id: &str) -> Result<Vec<TraceDoc>, StoreError> {
        let indexed: Option<Vec<String>> =
            self.index.lock().ok().and_then(|i| i.get(task_id).cloned());
        let mut out = Vec::new();
        match indexed {
            Some(ids) => {
                for id in ids {
                    let doc = self.get(&id)?;
                    let child = doc.parent_task_id == task_id && doc.id != task_id;
                    let sub_task = doc.id.split('.').next().unwrap_or_default().to_string();
                    out.push(doc);
                    if child && sub_task != task_id {
                        for d in self.tree(&sub_task)? {
                            if !out.iter().any(|o| o.id == d.id) {
                                out.push(d);
                            }
                        }
                    }
                }
            }
            None => {
                let all = self.all()?;
                let mut frontier = vec![task_id.to_string()];
                while let Some(t) = frontier.pop() {
                    for d in &all {
                        let own = d.id.split('.').next() == Some(t.as_str());
                        if (own || d.parent_task_id == t)
                            && !out.iter().any(|o: &TraceDoc| o.id == d.id)
                        {
                            if !own {
                                frontier
                                    .push(d.id.split('.').next().unwrap_or_default().to_string());
                            }
                            out.push(d.clone());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes one trace.
    pub fn rm(&self, id: &str) -> Result<(), StoreError> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(id.to_string()))
            }
            Err(e) => Err(Self::io(&path)(e)),
        }
    }

    /// Records a verdict on a trace.
    pub fn feedback(
        &self,
        id: &str,
        rating: Rating,
        correction: Option<String>,
    ) -> Result<(), StoreError> {
        let mut doc = self.get(id)?;
        doc.feedback = Some(Feedback {
            rating,
            correction,
            at_unix_ms: now_ms(),
        });
        self.write(id, &doc)
    }

    /// Removes traces older than `keep_days` (0: none by age), then the
    /// oldest beyond `max` (0: no cap). Returns how many went.
    pub fn prune(&self, keep_days: u32, max: usize) -> Result<usize, StoreError> {
        let all = self.all()?;
        let cutoff = now_ms() - i64::from(keep_days) * 86_400_000;
        let mut removed = 0;
        let mut left = all.len();
        for d in &all {
            let old = keep_days > 0 && d.started_unix_ms < cutoff;
            let over = max > 0 && left > max;
            if (old || over) && self.rm(&d.id).is_ok() {
                removed += 1;
                left -= 1;
            }
        }
        Ok(removed)
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::{Message, Source, UsageDoc};

    pub(crate) fn doc(id: &str, parent: &str, started: i64) -> TraceDoc {
        TraceDoc {
            id: id.into(),
            parent_task_id: parent.into(),
            agent: "operative".into(),
            context_id: String::new(),
            worker: String::new(),
            started_unix_ms: started,
            duration_ms: 1.0,
            messages: vec![Message {
                role: "user".into(),
                content: "What is 2+2?".into(),
                tool_calls: vec![],
                tool_call_id: String::new(),
            }],
            tools: vec![],
            model_calls: vec![],
            tool_runs: vec![],
            answer: "4".into(),
            error: String::new(),
            usage: UsageDoc::default(),
            source: Source::Live,
            feedback: None,
        }
    }

    #[test]
    fn put_get_tree_feedback_prune_and_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::open(dir.path().join("traces"));
        let now = now_ms();
        assert_eq!(store.put(doc("root", "", now)).unwrap(), "root");
        assert_eq!(store.put(doc("root", "", now + 1)).unwrap(), "root.2");
        store.put(doc("child", "root", now + 2)).unwrap();
        store.put(doc("other", "", now + 3)).unwrap();
        let tree: Vec<String> = store
            .tree("root")
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(tree.len(), 3, "{tree:?}");
        assert!(tree.contains(&"child".to_string()));
        // Without the in-memory index (another process), the same tree.
        let cold = TraceStore::open(dir.path().join("traces"));
        assert_eq!(cold.tree("root").unwrap().len(), 3);
        store
            .feedback("child", Rating::Good, Some("four".into()))
            .unwrap();
        assert_eq!(
            store.get("child").unwrap().feedback.unwrap().rating,
            Rating::Good
        );
        assert!(matches!(
            store.get("../etc/passwd"),
            Err(StoreError::BadId(_))
        ));
        assert!(matches!(store.get("nope"), Err(StoreError::NotFound(_))));
        // An old trace goes by age; then the cap removes the oldest.
        store
            .put(doc("ancient", "", now - 40 * 86_400_000))
            .unwrap();
        assert_eq!(store.prune(30, 0).unwrap(), 1);
        assert_eq!(store.prune(0, 2).unwrap(), 2);
        assert_eq!(store.list().unwrap().len(), 2);
    }
}
