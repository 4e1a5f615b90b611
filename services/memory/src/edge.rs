//! The embedded backend: qdrant-edge (Qdrant's engine in this process), one
//! shard per collection under `<dir>/<collection>/`, with `meta.json` beside
//! it saying which embedding model built it.
//!
//! qdrant-edge 0.7.2's calls block, and its `flush` must not run while
//! another call is inside the shard, so every call on a collection runs on a
//! blocking thread under that collection's lock. 0.7.2 never replays its
//! write-ahead log, so every write is flushed before it is acknowledged
//! (durability), and its log segments are kept small (1 MiB, not 32). After a
//! large write the shard is optimized (its HNSW index built) in the same
//! critical section.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hearth_mesh::sync::lock;
use qdrant_edge::external::serde_json;
use qdrant_edge::{
    Distance, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams, Modifier,
    NamedQuery, PointId, PointInsertOperations, PointOperations, PointStruct, Prefetch, QueryEnum,
    QueryRequest, ScoringQuery, ScrollRequest, UpdateOperation, Vector, VectorInternal, Vectors,
    WalOptions, WithPayloadInterface, WithVector,
};

use crate::store::{
    CollectionMeta, DENSE, Filter, Hit, Point, SPARSE, Sparse, StoreError, VectorStore, check_name,
};

/// Points written since the last optimization that trigger another.
const OPTIMIZE_AFTER: usize = 5_000;

struct Collection {
    shard: EdgeShard,
    meta: CollectionMeta,
    unoptimized: usize,
}

/// qdrant-edge collections in a directory.
pub struct EdgeStore {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<Mutex<Collection>>>>,
    /// Held (locked) while this store is open: one process at a time.
    _lock: std::fs::File,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn to_edge_filter(f: &Filter) -> Result<Option<qdrant_edge::Filter>, StoreError> {
    if f.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(f.to_qdrant_json())
        .map(Some)
        .map_err(backend)
}

/// Our UUID as qdrant-edge's point id (it has its own `uuid` crate).
fn edge_id(id: uuid::Uuid) -> PointId {
    PointId::Uuid(qdrant_edge::external::uuid::Uuid::from_bytes(
        *id.as_bytes(),
    ))
}

fn point_id(id: &PointId) -> String {
    match id {
        PointId::NumId(n) => n.to_string(),
        PointId::Uuid(u) => u.to_string(),
    }
}

fn nearest(using: &str, v: VectorInternal) -> ScoringQuery {
    ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
        query: v,
        using: Some(using.to_string()),
    }))
}

fn sparse_internal(s: Sparse) -> Result<VectorInternal, StoreError> {
    let v = Vector::new_sparse(s.indices, s.values).map_err(backend)?;
    Ok(v.into())
}

impl EdgeStore {
    /// Collections under `dir` (created if missing). Only one process may
    /// hold a directory: a second gets [`StoreError::Busy`] rather than two
    /// engines writing the same files.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| backend(format!("{}: {e}", dir.display())))?;
        let lock_path = dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| backend(format!("{}: {e}", lock_path.display())))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Busy(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(backend(format!("{}: {e}", lock_path.display())));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            open: Mutex::default(),
            _lock: lock,
        })
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("meta.json")
    }

    fn read_meta(&self, name: &str) -> Option<CollectionMeta> {
        let bytes = std::fs::read(self.meta_path(name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The open collection, opening it from disk if it exists.
    fn get(&self, name: &str) -> Result<Option<Arc<Mutex<Collection>>>, StoreError> {
        check_name(name)?;
        let mut open = lock(&self.open);
        if let Some(c) = open.get(name) {
            return Ok(Some(c.clone()));
        }
        let Some(meta) = self.read_meta(name) else {
            return Ok(None);
        };
        let shard = EdgeShard::load(&self.dir.join(name).join("shard"), None).map_err(backend)?;
        let c = Arc::new(Mutex::new(Collection {
            shard,
            meta,
            unoptimized: 0,
        }));
        open.insert(name.to_string(), c.clone());
        Ok(Some(c))
    }

    fn create(
        &self,
        name: &str,
        meta: &CollectionMeta,
    ) -> Result<Arc<Mutex<Collection>>, StoreError> {
        check_name(name)?;
        let mut open = lock(&self.open);
        if let Some(c) = open.get(name) {
            return Ok(c.clone());
        }
        let root = self.dir.join(name);
        let shard_dir = root.join("shard");
        std::fs::create_dir_all(&shard_dir).map_err(backend)?;
        let config = EdgeConfig::builder()
            .vector(
                DENSE,
                EdgeVectorParams::builder(meta.dims, Distance::Cosine).build(),
            )
            .sparse_vector(
                SPARSE,
                EdgeSparseVectorParams::builder()
                    .modifier(Modifier::Idf)
                    .build(),
            )
            .on_disk_payload(true)
            .wal_options(WalOptions {
                segment_capacity: 1 << 20,
                segment_queue_len: 0,
                retain_closed: NonZeroUsize::MIN,
            })
            .build();
        let shard = EdgeShard::new(&shard_dir, config).map_err(backend)?;
        // The model record goes last: a collection without it is not one yet.
        std::fs::write(
            self.meta_path(name),
            serde_json::to_vec(meta).map_err(backend)?,
        )
        .map_err(backend)?;
        let c = Arc::new(Mutex::new(Collection {
            shard,
            meta: meta.clone(),
            unoptimized: 0,
        }));
        open.insert(name.to_string(), c.clone());
        Ok(c)
    }

    fn required(&self, name: &str) -> Result<Arc<Mutex<Collection>>, StoreError> {
        self.get(name)?
            .ok_or_else(|| StoreError::NoCollection(name.to_string()))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(backend)?
}

#[async_trait::async_trait]
impl VectorStore for Arc<EdgeStore> {
    fn describe(&self) -> String {
        format!("qdrant-edge ({})", self.dir.display())
    }

    async fn meta(&self, collection: &str) -> Result<Option<CollectionMeta>, StoreError> {
        check_name(collection)?;
        Ok(self.read_meta(collection))
    }

    async fn ensure(
        &self,
        collection: &str,
        meta: &CollectionMeta,
    ) -> Result<CollectionMeta, StoreError> {
        let me = self.clone();
        let (name, meta) = (collection.to_string(), meta.clone());
        blocking(move || match me.get(&name)? {
            Some(c) => Ok(lock(&c).meta.clone()),
            None => {
                let c = me.create(&name, &meta)?;
                let built = lock(&c).meta.clone();
                Ok(built)
            }
        })
        .await
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<(), StoreError> {
        let c = self.required(collection)?;
        blocking(move || {
            let mut c = lock(&c);
            let n = points.len();
            let mut batch = Vec::with_capacity(n);
            for p in points {
                let sparse =
                    Vector::new_sparse(p.sparse.indices, p.sparse.values).map_err(backend)?;
                let vectors =
                    Vectors::new_named([(DENSE, Vector::new_dense(p.dense)), (SPARSE, sparse)]);
                let point =
                    PointStruct::new(edge_id(p.id), vectors, serde_json::Value::Object(p.payload));
                batch.push(point.into());
            }
            c.shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(batch)),
                ))
                .map_err(backend)?;
            c.unoptimized += n;
            if c.unoptimized >= OPTIMIZE_AFTER {
                c.shard.optimize().map_err(backend)?;
                c.unoptimized = 0;
            }
            c.shard.flush();
            Ok(())
        })
        .await
    }

    async fn search(
        &self,
        collection: &str,
        dense: Vec<f32>,
        sparse: Option<Sparse>,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, StoreError> {
        let c = self.required(collection)?;
        let filter = to_edge_filter(filter)?;
        blocking(move || {
            let c = lock(&c);
            let request = match sparse {
                None => QueryRequest {
                    prefetches: vec![],
                    query: Some(nearest(DENSE, VectorInternal::from(dense))),
                    filter,
                    score_threshold: None,
                    limit,
                    offset: 0,
                    params: None,
                    with_vector: WithVector::Bool(false),
                    with_payload: WithPayloadInterface::Bool(true),
                },
                Some(s) => {
                    let pre = |q: ScoringQuery| Prefetch {
                        prefetches: vec![],
                        query: Some(q),
                        limit: (limit * 5).max(20),
                        params: None,
                        filter: filter.clone(),
                        score_threshold: None,
                    };
                    QueryRequest {
                        prefetches: vec![
                            pre(nearest(DENSE, VectorInternal::from(dense))),
                            pre(nearest(SPARSE, sparse_internal(s)?)),
                        ],
                        query: Some(ScoringQuery::Fusion(qdrant_edge::Fusion::Rrf {
                            k: 2,
                            weights: None,
                        })),
                        filter: None,
                        score_threshold: None,
                        limit,
                        offset: 0,
                        params: None,
                        with_vector: WithVector::Bool(false),
                        with_payload: WithPayloadInterface::Bool(true),
                    }
                }
            };
            let points = c.shard.query(request).map_err(backend)?;
            Ok(points
                .into_iter()
                .map(|p| Hit {
                    id: point_id(&p.id),
                    score: p.score,
                    payload: p.payload.map(|pl| pl.0).unwrap_or_default(),
                })
                .collect())
        })
        .await
    }

    async fn delete(
        &self,
        collection: &str,
        ids: Vec<uuid::Uuid>,
        filter: Option<&Filter>,
    ) -> Result<u64, StoreError> {
        let Some(c) = self.get(collection)? else {
            return Ok(0);
        };
        let filter = match filter {
            Some(f) => to_edge_filter(f)?,
            None => None,
        };
        blocking(move || {
            let c = lock(&c);
            let before = count_of(&c.shard)?;
            if !ids.is_empty() {
                c.shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePoints {
                            ids: ids.into_iter().map(edge_id).collect(),
                        },
                    ))
                    .map_err(backend)?;
            }
            if let Some(f) = filter {
                c.shard
                    .update(UpdateOperation::PointOperation(
                        PointOperations::DeletePointsByFilter(f),
                    ))
                    .map_err(backend)?;
            }
            c.shard.flush();
            Ok(before.saturating_sub(count_of(&c.shard)?))
        })
        .await
    }

    async fn field_pairs(
        &self,
        collection: &str,
        field: &str,
        value_field: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let Some(c) = self.get(collection)? else {
            return Ok(BTreeMap::new());
        };
        let (field, value_field) = (field.to_string(), value_field.to_string());
        blocking(move || {
            let c = lock(&c);
            let mut out = BTreeMap::new();
            let mut offset = None;
            loop {
                let (records, next) = c
                    .shard
                    .scroll(ScrollRequest {
                        offset,
                        limit: Some(1000),
                        filter: None,
                        with_payload: Some(WithPayloadInterface::Bool(true)),
                        with_vector: WithVector::Bool(false),
                        order_by: None,
                    })
                    .map_err(backend)?;
                for r in records {
                    let Some(p) = r.payload else { continue };
                    if let (Some(k), Some(v)) = (
                        p.0.get(&field).and_then(|v| v.as_str()),
                        p.0.get(&value_field).and_then(|v| v.as_str()),
                    ) {
                        out.insert(k.to_string(), v.to_string());
                    }
                }
                match next {
                    Some(n) => offset = Some(n),
                    None => break,
                }
            }
            Ok(out)
        })
        .await
    }

    async fn count(&self, collection: &str) -> Result<u64, StoreError> {
        let c = self.required(collection)?;
        blocking(move || count_of(&lock(&c).shard)).await
    }

    async fn collections(&self) -> Result<Vec<(String, CollectionMeta)>, StoreError> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(backend)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if check_name(&name).is_err() {
                continue;
            }
            if let Some(m) = self.read_meta(&name) {
                out.push((name, m));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn count_of(shard: &EdgeShard) -> Result<u64, StoreError> {
    shard
        .count(qdrant_edge::CountRequest {
            filter: None,
            exact: true,
        })
        .map(|n| n as u64)
        .map_err(backend)
}
