//! Secrets out of traces, before anything is written: the secrets in the
//! configuration (API keys, tokens, passwords) wherever they appear, and
//! text shaped like a credential (provider key formats, bearer tokens,
//! private-key blocks, `api_key=…` assignments).

use regex::Regex;
use serde_json::Value;

use crate::convert::TraceDoc;

/// What redacted text is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Replaces secrets in text.
pub struct Redactor {
    secrets: Vec<String>,
    patterns: Vec<Regex>,
}

const PATTERNS: &[&str] = hearth_mesh::secrets::CREDENTIAL_PATTERNS;

impl Redactor {
    /// A redactor for these configured secrets (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.trim().len() >= 4)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let patterns = PATTERNS
            .iter()
            .filter_map(|p| match Regex::new(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(pattern = p, error = %e, "a redaction pattern does not compile");
                    None
                }
            })
            .collect();
        Self { secrets, patterns }
    }

    /// The secrets a configuration holds.
    pub fn from_config(config: &hearth_mesh::Config) -> Self {
        let mut s = vec![
            config.engine.api_key.expose().to_string(),
            config.gateway.token.expose().to_string(),
            config.memory.qdrant_api_key.expose().to_string(),
            config.tools.web.search_api_key.expose().to_string(),
        ];
        for m in &config.mcp.servers {
            s.push(m.token.expose().to_string());
        }
        for r in &config.engine.remote {
            s.push(r.api_key.expose().to_string());
            if let Ok(Some(k)) = r.api_key_value() {
                s.push(k);
            }
        }
        for r in &config.agents.remote {
            s.push(r.token.expose().to_string());
            s.push(r.api_key.expose().to_string());
        }
        Self::new(s)
    }

    /// `text` with every secret replaced.
    pub fn text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        for (i, p) in self.patterns.iter().enumerate() {
            // The assignment pattern keeps its key and separator.
            out = if i == PATTERNS.len() - 1 {
                p.replace_all(&out, format!("${{1}}${{2}}{REDACTED}").as_str())
                    .into_owned()
            } else {
                p.replace_all(&out, REDACTED).into_owned()
            };
        }
        out
    }

    /// The trace with every string in it redacted.
    pub fn trace(&self, doc: &TraceDoc) -> TraceDoc {
        let Ok(mut v) = serde_json::to_value(doc) else {
            return doc.clone();
        };
        self.value(&mut v);
        serde_json::from_value(v).unwrap_or_else(|_| doc.clone())
    }

    fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.text(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            Value::Object(m) => m.values_mut().for_each(|x| self.value(x)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_secrets_and_credential_shapes_are_replaced() {
        let r = Redactor::new(["hunter2-long-secret".to_string(), String::new()]);
        let t = r.text(
            "key hunter2-long-secret and sk-abcdefghijklmnopqrstuv, Authorization: Bearer abc.def.ghi123, api_key=zzzz9999",
        );
        assert!(!t.contains("hunter2"), "{t}");
        assert!(!t.contains("sk-abc"), "{t}");
        assert!(!t.contains("abc.def.ghi123"), "{t}");
        assert!(!t.contains("zzzz9999") && t.contains("api_key="), "{t}");
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----";
        assert_eq!(r.text(pem), REDACTED);
        // Ordinary text is left alone.
        assert_eq!(r.text("What is 12*12? 144"), "What is 12*12? 144");
    }
}
