//! The vector store behind one trait, whichever Qdrant holds the vectors.
//!
//! Every collection has two named vectors: `dense` (the embedding model's,
//! cosine) and `bm25` (sparse keyword weights, with inverse document
//! frequency applied by the store), and a payload per point. Each collection
//! records the embedding model and dimensions it was built with; a query or
//! an upsert with another model's vectors is refused with a clear error
//! instead of returning nonsense.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The dense vector's name.
pub const DENSE: &str = "dense";
/// The sparse (BM25) vector's name.
pub const SPARSE: &str = "bm25";

/// What a collection was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionMeta {
    /// The embedding model.
    pub embed_model: String,
    /// Its dimensions.
    pub dims: usize,
}

/// A sparse vector (BM25 weights).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sparse {
    /// Token ids.
    pub indices: Vec<u32>,
    /// Their weights.
    pub values: Vec<f32>,
}

/// A point to store.
#[derive(Debug, Clone)]
pub struct Point {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its embedding.
    pub dense: Vec<f32>,
    /// Its BM25 weights.
    pub sparse: Sparse,
    /// Its payload (a JSON object; `text` holds the chunk).
    pub payload: serde_json::Map<String, Value>,
}

/// A search result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// The point's id.
    pub id: String,
    /// Its score (cosine similarity; fused rank score for hybrid search).
    pub score: f32,
    /// Its payload.
    pub payload: serde_json::Map<String, Value>,
}

/// Payload conditions (all must hold).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Keyword fields equal to these values.
    pub equals: BTreeMap<String, String>,
    /// `ts` at or after (Unix seconds).
    pub since: Option<i64>,
    /// `ts` before.
    pub until: Option<i64>,
}

impl Filter {
    /// Whether it has no condition.
    pub fn is_empty(&self) -> bool {
        self.equals.is_empty() && self.since.is_none() && self.until.is_none()
    }

    /// In Qdrant's JSON filter language (both backends read it).
    pub fn to_qdrant_json(&self) -> Value {
        let mut must: Vec<Value> = self
            .equals
            .iter()
            .map(|(k, v)| serde_json::json!({"key": k, "match": {"value": v}}))
            .collect();
        if self.since.is_some() || self.until.is_some() {
            let mut range = serde_json::Map::new();
            if let Some(s) = self.since {
                range.insert("gte".into(), s.into());
            }
            if let Some(u) = self.until {
                range.insert("lt".into(), u.into());
            }
            must.push(serde_json::json!({"key": "ts", "range": range}));
        }
        serde_json::json!({ "must": must })
    }
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such collection.
    #[error("there is no collection `{0}` (ingest something into it first)")]
    NoCollection(String),
    /// The collection was built with another model.
    #[error(
        "collection `{collection}` was built with {built_model} ({built_dims} dimensions) but the engine now embeds with {model} ({dims} dimensions); re-ingest into a new collection or configure the same embedding model"
    )]
    ModelMismatch {
        /// The collection.
        collection: String,
        /// What it was built with.
        built_model: String,
        /// Its dimensions.
        built_dims: usize,
        /// The model now.
        model: String,
        /// Its dimensions.
        dims: usize,
    },
    /// A malformed collection name.
    #[error("`{0}` is not a collection name (1-64 lowercase letters, digits, `-` or `_`)")]
    BadName(String),
    /// The store failed.
    #[error("the vector store failed: {0}")]
    Backend(String),
    /// Another process holds the embedded store.
    #[error(
        "another Hearth process holds the memory at {0} (qdrant-edge serves one process): stop it, or join its mesh over NATS so both use its memory service"
    )]
    Busy(String),
    /// The server could not be reached.
    #[error("the Qdrant server at {url} cannot be reached: {reason}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> Self {
        use tonic::Code;
        let code = match &e {
            StoreError::NoCollection(_) => Code::NotFound,
            StoreError::ModelMismatch { .. } => Code::FailedPrecondition,
            StoreError::BadName(_) => Code::InvalidArgument,
            StoreError::Backend(_) => Code::Internal,
            StoreError::Unreachable { .. } | StoreError::Busy(_) => Code::Unavailable,
        };
        tonic::Status::new(code, e.to_string())
    }
}

/// Checks a collection name.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(name.to_string()))
    }
}

/// Checks that `meta` (what a collection was built with) matches `now`.
pub fn check_meta(
    collection: &str,
    built: &CollectionMeta,
    now: &CollectionMeta,
) -> Result<(), StoreError> {
    if built == now {
        return Ok(());
    }
    Err(StoreError::ModelMismatch {
        collection: collection.to_string(),
        built_model: built.embed_model.clone(),
        built_dims: built.dims,
        model: now.embed_model.clone(),
        dims: now.dims,
    })
}

/// A vector store.
#[async_trait::async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// `qdrant-edge (<dir>)` or `qdrant server (<url>)`.
    fn describe(&self) -> String;
    /// What `collection` was built with, if it exists.
    async fn meta(&self, collection: &str) -> Result<Option<CollectionMeta>, StoreError>;
    /// Creates `collection` for `meta` if it does not exist; returns what it
    /// was (or is now) built with.
    async fn ensure(
        &self,
        collection: &str,
        meta: &CollectionMeta,
    ) -> Result<CollectionMeta, StoreError>;
    /// Stores points (replacing those with the same ids).
    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<(), StoreError>;
    /// The `limit` best points for the dense query, fused with the sparse
    /// one when given, among those the filter admits.
    async fn search(
        &self,
        collection: &str,
        dense: Vec<f32>,
        sparse: Option<Sparse>,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, StoreError>;
    /// Deletes points by id and by filter; returns how many went.
    async fn delete(
        &self,
        collection: &str,
        ids: Vec<uuid::Uuid>,
        filter: Option<&Filter>,
    ) -> Result<u64, StoreError>;
    /// Every point's payload field `field` → payload field `value_field`
    /// (deduplicated): used for the documents' digests.
    async fn field_pairs(
        &self,
        collection: &str,
        field: &str,
        value_field: &str,
    ) -> Result<BTreeMap<String, String>, StoreError>;
    /// Points in the collection.
    async fn count(&self, collection: &str) -> Result<u64, StoreError>;
    /// Every collection and what it was built with.
    async fn collections(&self) -> Result<Vec<(String, CollectionMeta)>, StoreError>;
}
