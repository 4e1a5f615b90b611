//! The model an agent talks to, as a trait; [`BusModel`] asks the engine
//! over the bus and collects its streamed reply into one turn.

use std::time::Duration;

use futures::StreamExt;
use hearth_mesh::clients::EngineClient;
use hearth_proto::v1::{GenerateRequest, ToolCall, Usage};

/// One model turn: text, tool calls, and what it cost.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    /// The text the model produced.
    pub text: String,
    /// The tool calls it made.
    pub tool_calls: Vec<ToolCall>,
    /// What the call cost.
    pub usage: Usage,
}

/// A model the agent loop can call.
#[async_trait::async_trait]
pub trait Model: Send + Sync {
    /// Generates one turn.
    async fn turn(&self, req: GenerateRequest) -> Result<Turn, tonic::Status>;
}

/// The engine, over the bus.
#[derive(Clone)]
pub struct BusModel {
    engine: EngineClient,
}

impl BusModel {
    /// Asks the engine through `engine`.
    pub fn new(engine: EngineClient) -> Self {
        Self { engine }
    }
}

/// How many times a model call cut off by a dropped connection is asked
/// again (generating has no side effect), and the pause before each.
const ASK_AGAIN: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

impl BusModel {
    async fn turn_once(&self, req: &GenerateRequest) -> Result<Turn, tonic::Status> {
        let mut stream = self.engine.generate(req).await?;
        let mut turn = Turn::default();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            turn.text.push_str(&chunk.delta);
            turn.tool_calls.extend(chunk.tool_calls);
            if let Some(u) = chunk.usage {
                turn.usage = u;
            }
        }
        Ok(turn)
    }
}

#[async_trait::async_trait]
impl Model for BusModel {
    async fn turn(&self, req: GenerateRequest) -> Result<Turn, tonic::Status> {
        let mut pauses = ASK_AGAIN.iter();
        loop {
            match self.turn_once(&req).await {
                // The bus lost its connection while the reply was on its
                // way (NATS restarted): the reply will not come.
                Err(status) if status.code() == tonic::Code::Aborted => {
                    let Some(pause) = pauses.next() else {
                        return Err(status);
                    };
                    tracing::info!(error = %status.message(), "the model call was cut off; asking again");
                    tokio::time::sleep(*pause).await;
                }
                other => return other,
            }
        }
    }
}
