//! The `Memory` service on the bus: chunks in, embedded through the engine
//! (over the bus) and stored with their BM25 weights; queries embedded the
//! same way and answered by dense search fused with keyword search.

use std::sync::Arc;
use std::time::Duration;

use hearth_mesh::clients::EngineClient;
use hearth_mesh::rpc::ServeAt;
use hearth_mesh::subjects::Service;
use hearth_mesh::{BusError, SharedBus, Subjects};
use hearth_proto::v1::memory_server::Memory;
use hearth_proto::v1::{
    CollectionInfo, DeleteRequest, DeleteResponse, EmbedRequest, Hit as WireHit, InfoRequest,
    InfoResponse, SearchRequest, SearchResponse, SourcesRequest, SourcesResponse, UpsertRequest,
    UpsertResponse,
};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use serde_json::Value;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::store::{CollectionMeta, Filter, Point, Sparse, VectorStore, check_meta};

/// Most chunks in one upsert.
pub const MAX_CHUNKS: usize = 256;
/// Longest chunk text, in bytes.
pub const MAX_CHUNK_BYTES: usize = 16 * 1024;
/// Most results of one search.
pub const MAX_LIMIT: u32 = 100;

/// The memory service.
#[derive(Clone)]
pub struct MemoryService {
    store: Arc<dyn VectorStore>,
    engine: EngineClient,
    bm25: Arc<EdgeBm25>,
}

/// The BM25 embedder (English stop words and stemming; Qdrant's own token
/// ids, so edge and server agree).
pub fn bm25() -> Result<EdgeBm25, String> {
    let config: EdgeBm25Config =
        serde_json::from_value(serde_json::json!({ "language": "english" }))
            .map_err(|e| e.to_string())?;
    EdgeBm25::new(config).map_err(|e| format!("{e:?}"))
}

fn sparse(v: qdrant_edge::SparseVector) -> Sparse {
    Sparse {
        indices: v.indices,
        values: v.values,
    }
}

/// A wire filter as the store's.
pub fn filter_of(f: Option<&hearth_proto::v1::Filter>) -> Filter {
    match f {
        None => Filter::default(),
        Some(f) => Filter {
            equals: f
                .equals
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            since: f.since,
            until: f.until,
        },
    }
}

impl MemoryService {
    /// A service over `store`, embedding through the engine on the bus.
    pub fn new(store: Arc<dyn VectorStore>, engine: EngineClient) -> Result<Self, String> {
        Ok(Self {
            store,
            engine,
            bm25: Arc::new(bm25()?),
        })
    }

    /// Embeds texts; returns the vectors and what model made them.
    async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, CollectionMeta), Status> {
        let n = texts.len();
        let resp = self
            .engine
            .embed(&EmbedRequest {
                model: String::new(),
                inputs: texts,
            })
            .await
            .map_err(|s| {
                Status::new(
                    s.code(),
                    format!("embedding through the engine: {}", s.message()),
                )
            })?;
        let vectors: Vec<Vec<f32>> = resp.embeddings.into_iter().map(|e| e.values).collect();
        let dims = vectors.first().map_or(0, Vec::len);
        if vectors.len() != n || dims == 0 || vectors.iter().any(|v| v.len() != dims) {
            return Err(Status::internal(format!(
                "the engine returned {} embeddings of uneven or zero size for {n} texts",
                vectors.len()
            )));
        }
        Ok((
            vectors,
            CollectionMeta {
                embed_model: resp.model,
                dims,
            },
        ))
    }
}

#[tonic::async_trait]
impl Memory for MemoryService {
    async fn upsert(
        &self,
        request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let req = request.into_inner();
        crate::store::check_name(&req.collection)?;
        if req.chunks.is_empty() {
            return Err(Status::invalid_argument("no chunks"));
        }
        if req.chunks.len() > MAX_CHUNKS {
            return Err(Status::invalid_argument(format!(
                "{} chunks in one request; the limit is {MAX_CHUNKS}",
                req.chunks.len()
            )));
        }
        let mut parsed = Vec::with_capacity(req.chunks.len());
        for c in &req.chunks {
            if c.text.len() > MAX_CHUNK_BYTES {
                return Err(Status::invalid_argument(format!(
                    "chunk {} is {} bytes; the limit is {MAX_CHUNK_BYTES}",
                    c.id,
                    c.text.len()
                )));
            }
            let id = uuid::Uuid::parse_str(&c.id)
                .map_err(|e| Status::invalid_argument(format!("chunk id `{}`: {e}", c.id)))?;
            let payload = if c.payload_json.trim().is_empty() {
                serde_json::Map::new()
            } else {
                match serde_json::from_str::<Value>(&c.payload_json) {
                    Ok(Value::Object(m)) => m,
                    _ => {
                        return Err(Status::invalid_argument(format!(
                            "chunk {}: the payload must be a JSON object",
                            c.id
                        )));
                    }
                }
            };
            parsed.push((id, payload));
        }
        let (vectors, meta) = self
            .embed(req.chunks.iter().map(|c| c.text.clone()).collect())
            .await?;
        let built = self.store.ensure(&req.collection, &meta).await?;
        check_meta(&req.collection, &built, &meta)?;
        let points = req
            .chunks
            .iter()
            .zip(parsed)
            .zip(vectors)
            .map(|((c, (id, mut payload)), dense)| {
                payload.insert("text".into(), Value::String(c.text.clone()));
                Point {
                    id,
                    dense,
                    sparse: sparse(self.bm25.embed_document(&c.text)),
                    payload,
                }
            })
            .collect::<Vec<_>>();
        let n = points.len() as u32;
        self.store.upsert(&req.collection, points).await?;
        Ok(Response::new(UpsertResponse {
            upserted: n,
            model: meta.embed_model,
        }))
    }

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let req = request.into_inner();
        crate::store::check_name(&req.collection)?;
        if req.query.trim().is_empty() {
            return Err(Status::invalid_argument("the query is empty"));
        }
        let Some(built) = self.store.meta(&req.collection).await? else {
            return Err(crate::store::StoreError::NoCollection(req.collection).into());
        };
        let (mut vectors, meta) = self.embed(vec![req.query.clone()]).await?;
        check_meta(&req.collection, &built, &meta)?;
        let dense = vectors.pop().unwrap_or_default();
        let sparse_q = (!req.dense_only).then(|| sparse(self.bm25.embed_query(&req.query)));
        let limit = req.limit.clamp(1, MAX_LIMIT) as usize;
        let hits = self
            .store
            .search(
                &req.collection,
                dense,
                sparse_q,
                limit,
                &filter_of(req.filter.as_ref()),
            )
            .await?;
        Ok(Response::new(SearchResponse {
            hits: hits
                .into_iter()
                .map(|mut h| {
                    let text = match h.payload.remove("text") {
                        Some(Value::String(t)) => t,
                        _ => String::new(),
                    };
                    WireHit {
                        id: h.id,
                        score: h.score,
                        text,
                        payload_json: Value::Object(h.payload).to_string(),
                    }
                })
                .collect(),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        crate::store::check_name(&req.collection)?;
        let ids = req
            .ids
            .iter()
            .map(|s| {
                uuid::Uuid::parse_str(s)
                    .map_err(|e| Status::invalid_argument(format!("id `{s}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let filter = filter_of(req.filter.as_ref());
        if ids.is_empty() && filter.is_empty() {
            return Err(Status::invalid_argument(
                "give ids or a filter (deleting everything needs a filter that says so)",
            ));
        }
        let deleted = self
            .store
            .delete(
                &req.collection,
                ids,
                (!filter.is_empty()).then_some(&filter),
            )
            .await?;
        Ok(Response::new(DeleteResponse { deleted }))
    }

    async fn sources(
        &self,
        request: Request<SourcesRequest>,
    ) -> Result<Response<SourcesResponse>, Status> {
        let req = request.into_inner();
        crate::store::check_name(&req.collection)?;
        let digests = self
            .store
            .field_pairs(&req.collection, "source", "digest")
            .await?;
        Ok(Response::new(SourcesResponse {
            digests: digests.into_iter().collect(),
        }))
    }

    async fn info(&self, _request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let mut collections = Vec::new();
        for (name, meta) in self.store.collections().await? {
            let points = self.store.count(&name).await.unwrap_or(0);
            collections.push(CollectionInfo {
                name,
                points,
                embed_model: meta.embed_model,
                dims: meta.dims as u32,
            });
        }
        Ok(Response::new(InfoResponse {
            backend: self.store.describe(),
            collections,
        }))
    }
}

/// Serves `svc` on the bus (queue group `memory`).
pub async fn serve(
    svc: MemoryService,
    bus: SharedBus,
    subjects: &Subjects,
) -> Result<Vec<JoinHandle<()>>, BusError> {
    let at = ServeAt::role(bus, subjects.clone(), Service::Memory);
    hearth_mesh::bindings::memory_bus::serve(Arc::new(svc), &at).await
}

/// How long an upsert may take (it embeds its chunks first).
pub const UPSERT_TIMEOUT: Duration = Duration::from_secs(300);
