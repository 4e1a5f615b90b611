//! Agent specs: TOML files that say who an agent is and what it may do.
//!
//! Configuration data, read by every service that needs to know an agent
//! (the agent services that run them, the toolhost that enforces their tool
//! lists, the gateway that publishes their cards), so it is a crate of its
//! own and none of those depends on the agent runtime. The built-in specs
//! are `agents/specs/*.toml`, beside this crate; `[agents] dir` adds or
//! overrides specs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What an agent does in the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives tasks, plans, delegates.
    Orchestrator,
    /// Executes subtasks with tools.
    Operative,
}

/// One agent spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Unique name.
    pub name: String,
    /// Orchestrator or operative.
    pub role: Role,
    /// One line for agent cards and listings.
    #[serde(default)]
    pub description: String,
    /// The model to ask; empty means the engine's configured model.
    #[serde(default)]
    pub model: String,
    /// The system prompt.
    pub system_prompt: String,
    /// Tools this agent may call, by bus name; `server.*` allows a whole server.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Most model calls in one task.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Malformed tool calls tolerated in a row before the task fails.
    #[serde(default = "default_retries")]
    pub max_tool_retries: u32,
    /// Estimated tokens of context sent to the model at most; older turns are
    /// dropped first.
    #[serde(default = "default_budget")]
    pub context_budget_tokens: u32,
    /// Most tokens per model call; 0 means the engine's default.
    #[serde(default)]
    pub max_tokens: u32,
    /// Tools whose successful result is the agent's answer as it is, with
    /// no further model call (the orchestrator's `hearth.delegate`: the
    /// operative's answer goes straight back to the user).
    #[serde(default)]
    pub return_direct: Vec<String>,
}

fn default_max_steps() -> u32 {
    8
}
fn default_retries() -> u32 {
    2
}
fn default_budget() -> u32 {
    6000
}

/// Why specs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A file could not be read.
    #[error("reading agent spec {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not a valid spec.
    #[error("agent spec {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No spec of that name.
    #[error("no agent spec named `{0}`")]
    NotFound(String),
}

impl AgentSpec {
    /// Parses a spec from TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SpecError> {
        let spec: AgentSpec = toml::from_str(text).map_err(|e| SpecError::Invalid {
            path: origin.to_string(),
            reason: e.to_string(),
        })?;
        if spec.name.trim().is_empty() {
            return Err(SpecError::Invalid {
                path: origin.to_string(),
                reason: "`name` is empty".into(),
            });
        }
        if spec.max_steps == 0 {
            return Err(SpecError::Invalid {
                path: origin.to_string(),
                reason: "`max_steps` must be at least 1".into(),
            });
        }
        Ok(spec)
    }

    /// Whether this agent may call the tool `name` (`server.tool`).
    pub fn allows_tool(&self, name: &str) -> bool {
        self.tools
            .iter()
            .any(|pattern| match pattern.strip_suffix(".*") {
                Some(server) => name.split_once('.').is_some_and(|(s, _)| s == server),
                None => pattern == "*" || pattern == name,
            })
    }
}

/// The specs an agent service can run, by name.
#[derive(Debug, Clone, Default)]
pub struct Specs {
    by_name: BTreeMap<String, AgentSpec>,
}

const BUILTIN: [(&str, &str); 2] = [
    (
        "agents/specs/orchestrator.toml",
        include_str!("../orchestrator.toml"),
    ),
    (
        "agents/specs/operative.toml",
        include_str!("../operative.toml"),
    ),
];

impl Specs {
    /// The built-in specs, overridden and extended by `*.toml` files in `dir`.
    pub fn load(dir: Option<&Path>) -> Result<Self, SpecError> {
        let mut specs = Specs::default();
        for (origin, text) in BUILTIN {
            specs.insert(AgentSpec::from_toml(text, origin)?);
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|source| SpecError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let mut paths: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                specs.insert(AgentSpec::from_toml(&text, &path.display().to_string())?);
            }
        }
        Ok(specs)
    }

    /// Adds or replaces a spec.
    pub fn insert(&mut self, spec: AgentSpec) {
        self.by_name.insert(spec.name.clone(), spec);
    }

    /// The spec called `name`.
    pub fn get(&self, name: &str) -> Result<&AgentSpec, SpecError> {
        self.by_name
            .get(name)
            .ok_or_else(|| SpecError::NotFound(name.to_string()))
    }

    /// Every spec, by name.
    pub fn iter(&self) -> impl Iterator<Item = &AgentSpec> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_specs_load() {
        let specs = Specs::load(None).unwrap();
        assert_eq!(specs.get("orchestrator").unwrap().role, Role::Orchestrator);
        let op = specs.get("operative").unwrap();
        assert!(op.allows_tool("calculator.evaluate"));
        assert!(op.allows_tool("files.write"));
        assert!(!op.allows_tool("time.get_current_time"));
        assert!(!op.allows_tool("calculatorx.evaluate"));
    }

    #[test]
    fn a_directory_overrides_and_extends() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("math.toml"),
            "name = \"math\"\nrole = \"operative\"\nsystem_prompt = \"x\"\ntools = [\"calculator.evaluate\"]\n",
        )
        .unwrap();
        let specs = Specs::load(Some(dir.path())).unwrap();
        assert!(
            specs
                .get("math")
                .unwrap()
                .allows_tool("calculator.evaluate")
        );
        assert!(specs.get("operative").is_ok());
        assert!(matches!(specs.get("nope"), Err(SpecError::NotFound(_))));
    }

    #[test]
    fn invalid_specs_say_where_and_why() {
        let err = AgentSpec::from_toml(
            "name = \"a\"\nrole = \"boss\"\nsystem_prompt = \"\"",
            "x.toml",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml") && msg.contains("boss"), "{msg}");
    }
}
