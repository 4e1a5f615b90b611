//! The shared backend: a Qdrant server reached over gRPC (`qdrant-client`),
//! so every process and machine of the mesh sees the same memory.
//!
//! Hearth's collection `x` is the server's `hearth_x`; what each was built
//! with is kept in the server too, in the small collection `hearth__meta`.

use std::collections::BTreeMap;

use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Fusion, GetPointsBuilder, Modifier, NamedVectors,
    PointStruct, PointsIdsList, PrefetchQueryBuilder, Query, QueryPointsBuilder, Range,
    ScrollPointsBuilder, SparseVectorParamsBuilder, SparseVectorsConfigBuilder,
    UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};
use serde_json::Value;

use crate::store::{
    CollectionMeta, DENSE, Filter, Hit, Point, SPARSE, Sparse, StoreError, VectorStore, check_name,
};

const META: &str = "hearth__meta";

/// Collections in a Qdrant server.
pub struct ServerStore {
    client: Qdrant,
    url: String,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn remote(name: &str) -> String {
    format!("hearth_{name}")
}

fn meta_id(name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("hearth-collection:{name}").as_bytes(),
    )
    .to_string()
}

fn to_filter(f: &Filter) -> Option<qdrant_client::qdrant::Filter> {
    if f.is_empty() {
        return None;
    }
    let mut must: Vec<Condition> = f
        .equals
        .iter()
        .map(|(k, v)| Condition::matches(k.clone(), v.clone()))
        .collect();
    if f.since.is_some() || f.until.is_some() {
        must.push(Condition::range(
            "ts",
            Range {
                gte: f.since.map(|s| s as f64),
                lt: f.until.map(|u| u as f64),
                ..Default::default()
            },
        ));
    }
    Some(qdrant_client::qdrant::Filter::must(must))
}

fn payload_json(
    p: std::collections::HashMap<String, qdrant_client::qdrant::Value>,
) -> serde_json::Map<String, Value> {
    p.into_iter().map(|(k, v)| (k, v.into_json())).collect()
}

fn point_id(id: Option<qdrant_client::qdrant::PointId>) -> String {
    use qdrant_client::qdrant::point_id::PointIdOptions;
    match id.and_then(|i| i.point_id_options) {
        Some(PointIdOptions::Uuid(u)) => u,
        Some(PointIdOptions::Num(n)) => n.to_string(),
        None => String::new(),
    }
}

impl ServerStore {
    /// Connects to the server's gRPC address (`http://host:6334`) with an
    /// API key if given; fails clearly if it does not answer.
    pub async fn connect(url: &str, api_key: Option<&str>) -> Result<Self, StoreError> {
        let unreachable = |reason: String| StoreError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let mut b = Qdrant::from_url(url)
            .timeout(std::time::Duration::from_secs(30))
            .skip_compatibility_check();
        if let Some(k) = api_key {
            b = b.api_key(k.to_string());
        }
        let client = b.build().map_err(|e| unreachable(e.to_string()))?;
        let refused = |e: qdrant_client::QdrantError| match &e {
            qdrant_client::QdrantError::ResponseError { status }
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
                ) =>
            {
                unreachable(format!(
                    "it refused the API key ({}; set HEARTH_QDRANT_API_KEY to the server's key)",
                    if api_key.is_some() {
                        "a key was sent"
                    } else {
                        "none was sent"
                    }
                ))
            }
            _ => unreachable(e.to_string()),
        };
        client.health_check().await.map_err(refused)?;
        let me = Self {
            client,
            url: url.to_string(),
        };
        // The first call that needs the key: a wrong one is reported here.
        let exists = me.client.collection_exists(META).await.map_err(refused)?;
        if !exists {
            let mut v = VectorsConfigBuilder::default();
            v.add_named_vector_params("x", VectorParamsBuilder::new(1, Distance::Dot));
            let created = me
                .client
                .create_collection(CreateCollectionBuilder::new(META).vectors_config(v))
                .await;
            // Another process may have created it meanwhile.
            if created.is_err() && !me.client.collection_exists(META).await.map_err(backend)? {
                created.map_err(backend)?;
            }
        }
        Ok(me)
    }

    async fn read_meta(&self, name: &str) -> Result<Option<CollectionMeta>, StoreError> {
        let got = self
            .client
            .get_points(GetPointsBuilder::new(META, vec![meta_id(name).into()]).with_payload(true))
            .await
            .map_err(backend)?;
        let Some(p) = got.result.into_iter().next() else {
            return Ok(None);
        };
        let json = Value::Object(payload_json(p.payload));
        Ok(serde_json::from_value(json).ok())
    }
}

#[async_trait::async_trait]
impl VectorStore for ServerStore {
    fn describe(&self) -> String {
        format!("qdrant server ({})", self.url)
    }

    async fn meta(&self, collection: &str) -> Result<Option<CollectionMeta>, StoreError> {
        check_name(collection)?;
        self.read_meta(collection).await
    }

    async fn ensure(
        &self,
        collection: &str,
        meta: &CollectionMeta,
    ) -> Result<CollectionMeta, StoreError> {
        check_name(collection)?;
        if let Some(m) = self.read_meta(collection).await? {
            return Ok(m);
        }
        let name = remote(collection);
        if !self
            .client
            .collection_exists(&name)
            .await
            .map_err(backend)?
        {
            let mut dense = VectorsConfigBuilder::default();
            dense.add_named_vector_params(
                DENSE,
                VectorParamsBuilder::new(meta.dims as u64, Distance::Cosine),
            );
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(
                SPARSE,
                SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
            );
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(&name)
                        .vectors_config(dense)
                        .sparse_vectors_config(sparse),
                )
                .await;
            if created.is_err()
                && !self
                    .client
                    .collection_exists(&name)
                    .await
                    .map_err(backend)?
            {
                created.map_err(backend)?;
            }
            for (field, ty) in [
                ("source", FieldType::Keyword),
                ("agent", FieldType::Keyword),
                ("kind", FieldType::Keyword),
                ("ts", FieldType::Integer),
            ] {
                self.client
                    .create_field_index(CreateFieldIndexCollectionBuilder::new(&name, field, ty))
                    .await
                    .map_err(backend)?;
            }
        }
        let payload =
            Payload::try_from(serde_json::to_value(meta).map_err(backend)?).map_err(backend)?;
        let vectors = NamedVectors::default().add_vector("x", Vector::new_dense(vec![1.0]));
        self.client
            .upsert_points(
                UpsertPointsBuilder::new(
                    META,
                    vec![PointStruct::new(meta_id(collection), vectors, payload)],
                )
                .wait(true),
            )
            .await
            .map_err(backend)?;
        Ok(meta.clone())
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<(), StoreError> {
        check_name(collection)?;
        if self.read_meta(collection).await?.is_none() {
            return Err(StoreError::NoCollection(collection.to_string()));
        }
        let mut batch = Vec::with_capacity(points.len());
        for p in points {
            let vectors = NamedVectors::default()
                .add_vector(DENSE, Vector::new_dense(p.dense))
                .add_vector(
                    SPARSE,
                    Vector::new_sparse(p.sparse.indices, p.sparse.values),
                );
            let payload = Payload::try_from(Value::Object(p.payload)).map_err(backend)?;
            batch.push(PointStruct::new(p.id.to_string(), vectors, payload));
        }
        self.client
            .upsert_points(UpsertPointsBuilder::new(remote(collection), batch).wait(true))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn search(
        &self,
        collection: &str,
        dense: Vec<f32>,
        sparse: Option<Sparse>,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>, StoreError> {
        check_name(collection)?;
        if self.read_meta(collection).await?.is_none() {
            return Err(StoreError::NoCollection(collection.to_string()));
        }
        let f = to_filter(filter);
        let mut q = QueryPointsBuilder::new(remote(collection))
            .limit(limit as u64)
            .with_payload(true);
        match sparse {
            None => {
                q = q.query(Query::new_nearest(dense)).using(DENSE);
                if let Some(f) = f {
                    q = q.filter(f);
                }
            }
            Some(s) => {
                let pre = (limit * 5).max(20) as u64;
                let mut dense_pre = PrefetchQueryBuilder::default()
                    .query(Query::new_nearest(dense))
                    .using(DENSE)
                    .limit(pre);
                let mut sparse_pre = PrefetchQueryBuilder::default()
                    .query(Query::new_nearest(VectorInput::new_sparse(
                        s.indices, s.values,
                    )))
                    .using(SPARSE)
                    .limit(pre);
                if let Some(f) = f {
                    dense_pre = dense_pre.filter(f.clone());
                    sparse_pre = sparse_pre.filter(f);
                }
                q = q
                    .add_prefetch(dense_pre)
                    .add_prefetch(sparse_pre)
                    .query(Fusion::Rrf);
            }
        }
        let r = self.client.query(q).await.map_err(backend)?;
        Ok(r.result
            .into_iter()
            .map(|p| Hit {
                id: point_id(p.id),
                score: p.score,
                payload: payload_json(p.payload),
            })
            .collect())
    }

    async fn delete(
        &self,
        collection: &str,
        ids: Vec<uuid::Uuid>,
        filter: Option<&Filter>,
    ) -> Result<u64, StoreError> {
        check_name(collection)?;
        if self.read_meta(collection).await?.is_none() {
            return Ok(0);
        }
        let before = self.count(collection).await?;
        let name = remote(collection);
        if !ids.is_empty() {
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&name)
                        .points(PointsIdsList {
                            ids: ids.into_iter().map(|u| u.to_string().into()).collect(),
                        })
                        .wait(true),
                )
                .await
                .map_err(backend)?;
        }
        if let Some(f) = filter.and_then(to_filter) {
            self.client
                .delete_points(DeletePointsBuilder::new(&name).points(f).wait(true))
                .await
                .map_err(backend)?;
        }
        Ok(before.saturating_sub(self.count(collection).await?))
    }

    async fn field_pairs(
        &self,
        collection: &str,
        field: &str,
        value_field: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        check_name(collection)?;
        if self.read_meta(collection).await?.is_none() {
            return Ok(BTreeMap::new());
        }
        let mut out = BTreeMap::new();
        let mut offset = None;
        loop {
            let mut b = ScrollPointsBuilder::new(remote(collection))
                .limit(1000)
                .with_payload(true);
            if let Some(o) = offset.take() {
                b = b.offset(o);
            }
            let page = self.client.scroll(b).await.map_err(backend)?;
            for p in page.result {
                let pl = payload_json(p.payload);
                if let (Some(k), Some(v)) = (
                    pl.get(field).and_then(Value::as_str),
                    pl.get(value_field).and_then(Value::as_str),
                ) {
                    out.insert(k.to_string(), v.to_string());
                }
            }
            match page.next_page_offset {
                Some(o) => offset = Some(o),
                None => break,
            }
        }
        Ok(out)
    }

    async fn count(&self, collection: &str) -> Result<u64, StoreError> {
        check_name(collection)?;
        let r = self
            .client
            .count(CountPointsBuilder::new(remote(collection)).exact(true))
            .await
            .map_err(backend)?;
        Ok(r.result.map_or(0, |c| c.count))
    }

    async fn collections(&self) -> Result<Vec<(String, CollectionMeta)>, StoreError> {
        let r = self
            .client
            .scroll(
                ScrollPointsBuilder::new(META)
                    .limit(10_000)
                    .with_payload(true),
            )
            .await
            .map_err(backend)?;
        let mut out: Vec<(String, CollectionMeta)> = Vec::new();
        let all = self.client.list_collections().await.map_err(backend)?;
        let names: Vec<String> = all.collections.into_iter().map(|c| c.name).collect();
        for p in r.result {
            let json = Value::Object(payload_json(p.payload));
            let Ok(meta) = serde_json::from_value::<CollectionMeta>(json) else {
                continue;
            };
            if let Some(name) = names
                .iter()
                .filter_map(|n| n.strip_prefix("hearth_"))
                .find(|n| meta_id(n) == point_id(p.id.clone()))
            {
                out.push((name.to_string(), meta));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
