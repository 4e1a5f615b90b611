//! The calculator tool: an MCP server (rmcp) with one tool, `evaluate`, that
//! computes arithmetic exactly.
//!
//! Evaluation is fend's (arbitrary-precision rationals, so `0.1 + 0.2` is
//! exactly `0.3` and `2^100` is every digit). Each evaluation has a deadline
//! and an input-length cap, so no expression can hang the server; a malformed
//! expression is an MCP tool error (`isError: true`) with fend's explanation.
//!
//! Served over stdio by `hearth tool calculator`; [`Calculator`] can be served
//! on any rmcp transport.

use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use serde::Deserialize;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Longest result returned, in bytes.
pub const MAX_RESULT_BYTES: usize = 16 * 1024;
/// How long one evaluation may run.
pub const EVAL_DEADLINE: Duration = Duration::from_secs(2);

/// Why an expression has no value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalcError {
    /// Empty input.
    #[error("the expression is empty")]
    Empty,
    /// Longer than [`MAX_EXPRESSION_BYTES`].
    #[error("the expression is {0} bytes; the limit is {MAX_EXPRESSION_BYTES}")]
    TooLong(usize),
    /// fend could not parse or evaluate it.
    #[error("cannot evaluate `{expression}`: {reason}")]
    Invalid {
        /// The input.
        expression: String,
        /// fend's explanation.
        reason: String,
    },
    /// It ran past [`EVAL_DEADLINE`].
    #[error("evaluation took longer than {EVAL_DEADLINE:?} and was stopped")]
    Timeout,
    /// The result is larger than [`MAX_RESULT_BYTES`].
    #[error("the result is {0} bytes long; the limit is {MAX_RESULT_BYTES}")]
    ResultTooLong(usize),
}

struct Deadline(Instant);

impl fend_core::Interrupt for Deadline {
    fn should_interrupt(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// How long an evaluation may run on the async runtime's own thread before
/// it is stopped and run again on a blocking thread with the full
/// [`EVAL_DEADLINE`]. Everyday arithmetic takes microseconds, and a trip
/// through the blocking pool costs more than that.
const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// Evaluates an arithmetic expression exactly.
pub fn evaluate(expression: &str) -> Result<String, CalcError> {
    evaluate_within(expression, EVAL_DEADLINE)
}

/// [`evaluate`], stopped after `budget`.
fn evaluate_within(expression: &str, budget: Duration) -> Result<String, CalcError> {
    let expr = expression.trim();
    if expr.is_empty() {
        return Err(CalcError::Empty);
    }
    if expr.len() > MAX_EXPRESSION_BYTES {
        return Err(CalcError::TooLong(expr.len()));
    }
    let mut ctx = fend_core::Context::new();
    let deadline = Deadline(Instant::now() + budget);
    let result =
        fend_core::evaluate_with_interrupt(expr, &mut ctx, &deadline).map_err(|reason| {
            if deadline.should_interrupt_now() {
                CalcError::Timeout
            } else {
                CalcError::Invalid {
                    expression: expr.to_string(),
                    reason,
                }
            }
        })?;
    let value = result.get_main_result().to_string();
    if value.is_empty() {
        return Err(CalcError::Invalid {
            expression: expr.to_string(),
            reason: "it has no value".into(),
        });
    }
    if value.len() > MAX_RESULT_BYTES {
        return Err(CalcError::ResultTooLong(value.len()));
    }
    Ok(value)
}

impl Deadline {
    fn should_interrupt_now(&self) -> bool {
        fend_core::Interrupt::should_interrupt(self)
    }
}

/// The `evaluate` tool's input.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct EvaluateParams {
    /// The arithmetic expression, e.g. `2^64`, `(1/3) * 3`, `sqrt(2)`.
    // The pattern says what an expression is made of (digits, operators,
    // parentheses, lower-case function names): clients that constrain
    // their output to the schema (Hearth's llama.cpp engine does) then
    // cannot put prose in it.
    #[schemars(regex(pattern = r"^[0-9a-z+\-*/^().%!, ]{1,200}$"))]
    pub expression: String,
}

/// The calculator MCP server.
#[derive(Clone)]
pub struct Calculator {
    tool_router: ToolRouter<Self>,
}

impl Default for Calculator {
    fn default() -> Self {
        Self::new()
    }
}

#[tool_router]
impl Calculator {
    /// A calculator server.
    pub fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    /// The one tool.
    #[tool(
        description = "Evaluate an arithmetic expression exactly (integers and fractions are exact; + - * / ^ % parentheses, sqrt, sin, ln, …). Returns the value as text.",
        annotations(read_only_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    async fn evaluate(&self, Parameters(p): Parameters<EvaluateParams>) -> CallToolResult {
        let expr = p.expression;
        let outcome = match evaluate_within(&expr, INLINE_BUDGET) {
            // Something heavier: off the runtime, with the full deadline.
            Err(CalcError::Timeout) => tokio::task::spawn_blocking(move || evaluate(&expr))
                .await
                .map_err(|e| format!("evaluation failed: {e}")),
            done => Ok(done),
        };
        match outcome {
            Ok(Ok(v)) => CallToolResult::success(vec![ContentBlock::text(v)]),
            Ok(Err(e)) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e)]),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Calculator {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "hearth-calculator",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("Use `evaluate` for any arithmetic; it is exact.")
    }
}

/// Serves the calculator over stdio until the client goes away.
pub async fn serve_stdio() -> Result<(), std::io::Error> {
    let running = Calculator::new()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_arithmetic_is_exact() {
        assert_eq!(evaluate("17*23+4").as_deref(), Ok("395"));
        assert_eq!(
            evaluate("2^100").as_deref(),
            Ok("1267650600228229401496703205376")
        );
        assert_eq!(evaluate("0.1 + 0.2").as_deref(), Ok("0.3"));
        assert_eq!(evaluate("(1/3) * 3").as_deref(), Ok("1"));
    }

    #[test]
    fn malformed_expressions_are_clear_errors() {
        let err = evaluate("17*/+").unwrap_err();
        assert!(matches!(err, CalcError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("17*/+"));
        assert_eq!(evaluate("   "), Err(CalcError::Empty));
        assert!(matches!(
            evaluate(&"1+".repeat(5000)),
            Err(CalcError::TooLong(_))
        ));
    }

    #[test]
    fn huge_results_are_refused_not_returned() {
        let r = evaluate("10^100000");
        assert!(
            matches!(
                r,
                Err(CalcError::ResultTooLong(_)) | Err(CalcError::Timeout)
            ),
            "{r:?}"
        );
    }

    #[test]
    fn heavy_work_overruns_the_inline_budget_and_is_stopped() {
        // What the tool then retries on a blocking thread.
        assert_eq!(
            evaluate_within("10^100000", Duration::ZERO),
            Err(CalcError::Timeout)
        );
        assert_eq!(
            evaluate_within("17*23+4", EVAL_DEADLINE).as_deref(),
            Ok("395")
        );
    }

    #[tokio::test]
    async fn the_tool_answers_over_mcp_in_process() {
        use rmcp::model::CallToolRequestParams;
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            if let Ok(s) = Calculator::new().serve(server_io).await {
                let _ = s.waiting().await;
            }
        });
        let client = ().serve(client_io).await.unwrap();
        let tools = client.list_all_tools().await.unwrap();
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].name, "evaluate");
        let mut args = serde_json::Map::new();
        args.insert("expression".into(), "6*7".into());
        let ok = client
            .call_tool(CallToolRequestParams::new("evaluate").with_arguments(args))
            .await
            .unwrap();
        assert_ne!(ok.is_error, Some(true));
        assert_eq!(ok.content[0].as_text().map(|t| t.text.as_str()), Some("42"));
        let mut bad = serde_json::Map::new();
        bad.insert("expression".into(), "6*".into());
        let err = client
            .call_tool(CallToolRequestParams::new("evaluate").with_arguments(bad))
            .await
            .unwrap();
        assert_eq!(err.is_error, Some(true));
        client.cancel().await.unwrap();
        server.abort();
    }
}
