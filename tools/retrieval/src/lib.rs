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
                let text = found
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
