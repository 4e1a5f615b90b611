//! The backend trait every inference engine implements.

use futures::stream::BoxStream;
use hearth_proto::v1::{
    EmbedRequest, EmbedResponse, GenerateChunk, GenerateRequest, RenderResponse,
};

/// A stream of generated chunks; the backend fills `usage` on the last one
/// with what it measured (tokens), and the service adds timings.
pub type ChunkStream = BoxStream<'static, Result<GenerateChunk, EngineError>>;

/// Why a generation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (no messages, a bad schema…).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The backend is not configured well enough to run.
    #[error("engine not configured: {0}")]
    NotConfigured(String),
    /// The backend could not be reached.
    #[error("backend unreachable at {url}: {reason}")]
    Unreachable {
        /// Where it was expected.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The backend answered with an error status.
    #[error("backend answered {status}: {body}")]
    Backend {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The backend answered something that is not what its protocol says.
    #[error("backend sent a malformed reply: {0}")]
    Malformed(String),
    /// The backend took longer than the deadline.
    #[error("backend did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The backend does not do this (embeddings on a chat-only backend, say).
    #[error("{0} is not supported by this backend")]
    Unsupported(&'static str),
    /// The engine could not be served on the bus.
    #[error(transparent)]
    Bus(#[from] hearth_mesh::BusError),
    /// The routing refused to send it anywhere (a sensitive request with no
    /// local backend, say).
    #[error("not sent: {0}")]
    Refused(String),
    /// No backend allowed could take it within the budgets.
    #[error(transparent)]
    OverBudget(#[from] crate::spend::OverBudget),
}

impl From<EngineError> for tonic::Status {
    fn from(e: EngineError) -> Self {
        use tonic::Code;
        let code = match &e {
            EngineError::InvalidRequest(_) => Code::InvalidArgument,
            EngineError::NotConfigured(_) => Code::FailedPrecondition,
            EngineError::Unreachable { .. } => Code::Unavailable,
            EngineError::Backend { .. } | EngineError::Malformed(_) => Code::Internal,
            EngineError::Timeout(_) => Code::DeadlineExceeded,
            EngineError::Unsupported(_) => Code::Unimplemented,
            EngineError::Bus(_) => Code::Unavailable,
            EngineError::Refused(_) => Code::FailedPrecondition,
            EngineError::OverBudget(_) => Code::ResourceExhausted,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// An inference backend.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which kind of backend it is, for usage reports.
    fn kind(&self) -> hearth_proto::v1::EngineBackend;

    /// The model this backend serves when a request names none.
    fn default_model(&self) -> &str;

    /// Starts a generation and streams its chunks.
    async fn generate(&self, req: GenerateRequest) -> Result<ChunkStream, EngineError>;

    /// Embeds texts.
    async fn embed(&self, _req: EmbedRequest) -> Result<EmbedResponse, EngineError> {
        Err(EngineError::Unsupported("embeddings"))
    }

    /// The prompt exactly as the model reads it (and the request's last
    /// assistant message as the model writes it): only a backend that
    /// templates and tokenizes itself can say.
    fn render(&self, _req: GenerateRequest) -> Result<RenderResponse, EngineError> {
        Err(EngineError::Unsupported("rendering prompts"))
    }
}
