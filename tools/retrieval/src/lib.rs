//! The retrieval tool: an MCP server (rmcp) with `search`, which finds the
//! passages of the ingested documents (`hearth memory ingest`) most relevant
//! to a query — by meaning and by keywords, fused — with their source and
//! score.
//!
//! The server does not open the store itself: it asks a [`Searcher`] (in
//! Hearth, the memory service over the bus), so in a mesh only the memory
//! service touches the vectors.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};

/// One passage found.
#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    /// Relevance (higher is better).
    pub score: f32,
    /// The file it came from.
    pub source: String,
    /// The document's title.
    pub title: String,
    /// The passage.
    pub text: String,
}

/// Where passages come from.
#[async_trait::async_trait]
pub trait Searcher: Send + Sync + 'static {
    /// The `limit` best passages for `query`, from `source` only if given.
    async fn search(
        &self,
        query: &str,
        limit: usize,
        source: Option<&str>,
    ) -> Result<Vec<Passage>, String>;
}

/// `search`'s input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchParams {
    /// What to look for, in words.
    pub query: String,
    /// How many passages (1–20, default 5).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only passages from this source file.
    #[serde(default)]
    pub source: Option<String>,
}

/// The retrieval MCP server.
#[derive(Clone)]
pub struct Retrieval {
    searcher: Arc<dyn Searcher>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Retrieval {
    /// A server over `searcher`.
    pub fn new(searcher: Arc<dyn Searcher>) -> Self {
        Self {
            searcher,
            tool_router: Self::tool_router(),
        }
    }

    /// Search the documents.
    #[tool(
        description = "Search the user's ingested documents and notes; returns the most relevant passages with their source file and score.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn search(&self, Parameters(p): Parameters<SearchParams>) -> CallToolResult {
        if p.query.trim().is_empty() {
            return CallToolResult::error(vec![ContentBlock::text("the query is empty")]);
        }
        let limit = p.limit.unwrap_or(5).clamp(1, 20);
        match self
            .searcher
            .search(&p.query, limit, p.source.as_deref())
            .await
        {
            Ok(found) if found.is_empty() => {
                CallToolResult::success(vec![ContentBlock::text("nothing relevant was found")])
            }
            Ok(found) => {
                let best = best_sentence(&p.query, &found);
                let text = best
                    .map(|b| format!("Best match: {b}\n\n"))
                    .unwrap_or_default()
                    + &found
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            format!(
                                "[{}] {} — {} (score {:.3})\n{}",
                                i + 1,
                                f.title,
                                f.source,
                                f.score,
                                f.text
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n\n");
                let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                r.structured_content =
                    serde_json::to_value(serde_json::json!({ "passages": found })).ok();
                r
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e)]),
        }
    }
}

/// Words too common to say what a sentence is about.
const STOPWORDS: [&str; 48] = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "and",
    "or",
    "is",
    "are",
    "was",
    "were",
    "be",
    "by",
    "with",
    "what",
    "which",
    "who",
    "when",
    "where",
    "how",
    "many",
    "much",
    "does",
    "do",
    "did",
    "it",
    "its",
    "my",
    "me",
    "i",
    "you",
    "that",
    "this",
    "from",
    "as",
    "into",
    "about",
    "notes",
    "note",
    "tell",
    "say",
    "according",
    "documents",
    "find",
];

/// A word reduced to a rough stem (`closes` and `close` meet).
fn stem(word: &str) -> String {
    let w = word.to_lowercase();
    for suffix in ["ing", "ed", "s"] {
        if w.len() > suffix.len() + 3
            && let Some(s) = w.strip_suffix(suffix)
        {
            return s.to_string();
        }
    }
    w
}

fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(&w.to_lowercase().as_str()))
        .map(stem)
        .collect()
}

/// The sentence of the passages that shares the query's rarest words most
/// (each shared word weighs by how few sentences hold it), like the
/// snippet a search engine shows; none when no sentence shares a word.
pub fn best_sentence(query: &str, passages: &[Passage]) -> Option<String> {
    let wanted: std::collections::HashSet<String> = terms(query).into_iter().collect();
    let sentences: Vec<&str> = passages
        .iter()
        .flat_map(|p| p.text.split_inclusive(['.', '!', '?', '\n']))
        .map(str::trim)
        .filter(|s| s.split_whitespace().count() >= 4 && !s.starts_with('#'))
        .collect();
    let bags: Vec<std::collections::HashSet<String>> = sentences
        .iter()
        .map(|s| terms(s).into_iter().collect())
        .collect();
    let n = sentences.len() as f32;
    let weight = |w: &String| {
        let df = bags.iter().filter(|b| b.contains(w)).count() as f32;
        (1.0 + n / (1.0 + df)).ln()
    };
    let mut best: Option<(f32, usize)> = None;
    for (i, bag) in bags.iter().enumerate() {
        let score: f32 = wanted.iter().filter(|w| bag.contains(*w)).map(weight).sum();
        if score > 0.0 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i));
        }
    }
    best.map(|(_, i)| sentences[i].to_string())
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Retrieval {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "hearth-retrieval",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Search the user's documents with `search`.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str) -> Passage {
        Passage {
            score: 0.5,
            source: "notes.md".into(),
            title: "Notes".into(),
            text: text.into(),
        }
    }

    #[test]
    fn the_best_sentence_shares_the_querys_rarest_words() {
        let found = [
            passage(
                "Hearth's Lisbon office occupies the fourth floor of Rua das Flores 88. \
                 The office opens at 08:30 and closes at 20:00 on weekdays. Visitors sign in.",
            ),
            passage("The Porto office closes early on Fridays, at 16:00."),
        ];
        assert_eq!(
            best_sentence(
                "What time does the Lisbon office close on weekdays?",
                &found
            )
            .as_deref(),
            Some("The office opens at 08:30 and closes at 20:00 on weekdays.")
        );
        assert_eq!(best_sentence("zebra migration", &found), None);
    }
}
