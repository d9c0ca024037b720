//! `/v1/files` and `/v1/batches` in OpenAI's shapes. Every file and batch belongs to the API key
//! that created it ([`hhh_api::ApiKeys::owner`]); another key gets 404.

use crate::lines::{self, URLS};
use crate::service::{now, BatchService};
use crate::store::FINAL;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Extension, Multipart, Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hhh_api::{ApiError, AppState};
use hhh_proto::batch::{Batch, BatchList, CreateBatchRequest, FileDeleted, FileList, FileObject, RequestCounts};
use std::sync::Arc;

/// Purposes a client may upload a file for.
const PURPOSES: &[&str] = &["batch", "user_data"];

/// The routes, to merge into the API router (behind its middleware: keys, drain, logs).
pub fn routes(svc: Arc<BatchService>) -> Router<AppState> {
    Router::new()
        .route("/v1/files", post(upload).get(list_files))
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(content))
        .route("/v1/batches", post(create).get(list_batches))
        .route("/v1/batches/{id}", get(retrieve))
        .route("/v1/batches/{id}/cancel", post(cancel))
        .layer(Extension(svc))
        // Uploads are limited by --max-file-bytes while they stream to disk.
        .layer(DefaultBodyLimit::disable())
}

type Svc = Extension<Arc<BatchService>>;

fn owner(st: &AppState, headers: &HeaderMap) -> String {
    st.api_keys.owner(headers)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{:024x}", rand::random::<u128>() >> 32)
}

fn file_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("No file with id `{id}`."))
}

fn batch_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("No batch with id `{id}`."))
}

/// `POST /v1/files` (multipart: `purpose`, `file`).
async fn upload(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, mut form: Multipart) -> Result<Json<FileObject>, ApiError> {
    let bad_form = |e: axum::extract::multipart::MultipartError| ApiError::bad_request(format!("Could not read the multipart form: {e}."));
    let (mut purpose, mut upload) = (None, None);
    let tmp = svc.store.temp_path();
    let result = async {
        while let Some(mut field) = form.next_field().await.map_err(bad_form)? {
            match field.name() {
                Some("purpose") => purpose = Some(field.text().await.map_err(bad_form)?),
                Some("file") => {
                    let name = field.file_name().unwrap_or("upload.jsonl").to_string();
                    let limit = svc.cfg.max_file_bytes;
                    let mut f = tokio::fs::File::create(&tmp).await.map_err(|e| ApiError::from(crate::BatchError::io("creating the upload", e)))?;
                    let mut size = 0u64;
                    while let Some(chunk) = field.chunk().await.map_err(bad_form)? {
                        size += chunk.len() as u64;
                        if size > limit {
                            return Err(ApiError::too_large_field("file", format!("The file is larger than the limit of {limit} bytes (--max-file-bytes).")));
                        }
                        use tokio::io::AsyncWriteExt;
                        f.write_all(&chunk).await.map_err(|e| ApiError::from(crate::BatchError::io("writing the upload", e)))?;
                    }
                    f.sync_all().await.map_err(|e| ApiError::from(crate::BatchError::io("writing the upload", e)))?;
                    upload = Some((name, size));
                }
                _ => {}
            }
        }
        let purpose = purpose.ok_or_else(|| ApiError::invalid("purpose", "`purpose` is required."))?;
        if !PURPOSES.contains(&purpose.as_str()) {
            return Err(ApiError::invalid("purpose", format!("`purpose` must be one of {}; got `{purpose}`.", PURPOSES.join(", "))));
        }
        let (filename, bytes) = upload.ok_or_else(|| ApiError::invalid("file", "`file` is required."))?;
        if purpose == "batch" {
            let data = tokio::fs::read(&tmp).await.map_err(|e| ApiError::from(crate::BatchError::io("reading the upload", e)))?;
            lines::parse(&data, svc.cfg.lines).map_err(|e| ApiError::invalid("file", e.to_string()))?;
        }
        let file = FileObject { id: new_id("file-"), object: "file".into(), bytes, created_at: now(), filename, purpose, status: "processed".into() };
        let (o, f, t) = (owner(&st, &headers), file.clone(), tmp.clone());
        svc.db(move |s| s.adopt_file(&o, &f, &t)).await?;
        Ok(file)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(Json)
}

#[derive(serde::Deserialize)]
struct FileQuery {
    purpose: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/files`.
async fn list_files(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, Query(q): Query<FileQuery>) -> Result<Json<FileList>, ApiError> {
    let limit = q.limit.unwrap_or(10_000).clamp(1, 10_000);
    let o = owner(&st, &headers);
    let mut data = svc.db(move |s| s.files(&o, q.purpose.as_deref(), limit + 1)).await?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(Json(FileList { object: "list".into(), data, has_more }))
}

async fn find_file(st: &AppState, svc: &BatchService, headers: &HeaderMap, id: String) -> Result<FileObject, ApiError> {
    let o = owner(st, headers);
    let key = id.clone();
    svc.db(move |s| s.file(&o, &key)).await?.ok_or_else(|| file_not_found(&id))
}

/// `GET /v1/files/{id}`.
async fn get_file(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(find_file(&st, &svc, &headers, id).await?))
}

/// `GET /v1/files/{id}/content`: the bytes, streamed from disk.
async fn content(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    let f = find_file(&st, &svc, &headers, id).await?;
    let file = tokio::fs::File::open(svc.store.path_of(&f.id)).await.map_err(|e| ApiError::from(crate::BatchError::io(format!("opening file {}", f.id), e)))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// `DELETE /v1/files/{id}`.
async fn delete_file(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<FileDeleted>, ApiError> {
    let (o, key) = (owner(&st, &headers), id.clone());
    if !svc.db(move |s| s.delete_file(&o, &key)).await? {
        return Err(file_not_found(&id));
    }
    Ok(Json(FileDeleted { id, object: "file".into(), deleted: true }))
}

/// Hours in a completion window such as `24h`.
fn window_hours(w: &str) -> Option<u64> {
    w.strip_suffix('h')?.parse().ok().filter(|h| (1..=24 * 365).contains(h))
}

/// `POST /v1/batches`.
async fn create(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, body: Body) -> Result<Json<Batch>, ApiError> {
    let bytes = axum::body::to_bytes(body, st.limits.max_body_bytes).await.map_err(|_| ApiError::too_large(st.limits.max_body_bytes))?;
    let req: CreateBatchRequest = serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("Invalid batch request: {e}.")))?;
    if !URLS.contains(&req.endpoint.as_str()) {
        return Err(ApiError::invalid("endpoint", format!("`endpoint` must be one of {}; got `{}`.", URLS.join(", "), req.endpoint)));
    }
    let hours = window_hours(&req.completion_window).ok_or_else(|| ApiError::invalid("completion_window", format!("`completion_window` must look like `24h`; got `{}`.", req.completion_window)))?;
    if let Some(m) = &req.metadata {
        if m.len() > 16 || m.iter().any(|(k, v)| k.chars().count() > 64 || v.chars().count() > 512) {
            return Err(ApiError::invalid("metadata", "`metadata` takes at most 16 pairs, keys up to 64 characters and values up to 512."));
        }
    }
    let file = find_file(&st, &svc, &headers, req.input_file_id.clone()).await.map_err(|e| ApiError { param: Some("input_file_id".into()), ..e })?;
    if file.purpose != "batch" {
        return Err(ApiError::invalid("input_file_id", format!("The file `{}` was uploaded with purpose `{}`; a batch needs purpose `batch`.", file.id, file.purpose)));
    }
    let data = tokio::fs::read(svc.store.path_of(&file.id)).await.map_err(|e| ApiError::from(crate::BatchError::io("reading the input file", e)))?;
    let lines = lines::parse(&data, svc.cfg.lines).map_err(|e| ApiError::invalid("input_file_id", e.to_string()))?;
    let t = now();
    let b = Batch {
        id: new_id("batch_"),
        object: "batch".into(),
        endpoint: req.endpoint,
        errors: None,
        input_file_id: file.id,
        completion_window: req.completion_window,
        status: "validating".into(),
        output_file_id: None,
        error_file_id: None,
        created_at: t,
        in_progress_at: None,
        expires_at: Some(t + hours * 3600),
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        expired_at: None,
        cancelling_at: None,
        cancelled_at: None,
        request_counts: RequestCounts { total: lines.len() as u64, completed: 0, failed: 0 },
        metadata: req.metadata,
    };
    let (o, bb) = (owner(&st, &headers), b.clone());
    svc.db(move |s| s.put_batch(&o, &bb)).await?;
    svc.notify();
    tracing::info!(batch = %b.id, lines = lines.len(), "batch created");
    Ok(Json(b))
}

/// A batch with live counts while it runs.
async fn current(svc: &BatchService, st: &AppState, headers: &HeaderMap, id: &str) -> Result<(String, Batch), ApiError> {
    let (o, key) = (owner(st, headers), id.to_string());
    let (owner, mut b) = svc.db(move |s| s.batch(Some(&o), &key)).await?.ok_or_else(|| batch_not_found(id))?;
    if !FINAL.contains(&b.status.as_str()) {
        let key = id.to_string();
        let (completed, failed) = svc.db(move |s| s.counts(&key)).await?;
        b.request_counts = RequestCounts { total: b.request_counts.total, completed, failed };
    }
    Ok((owner, b))
}

/// `GET /v1/batches/{id}`.
async fn retrieve(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Batch>, ApiError> {
    Ok(Json(current(&svc, &st, &headers, &id).await?.1))
}

#[derive(serde::Deserialize)]
struct BatchQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/batches` (newest first).
async fn list_batches(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, Query(q): Query<BatchQuery>) -> Result<Json<BatchList>, ApiError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("`limit` must be between 1 and 100; got {limit}.")));
    }
    let o = owner(&st, &headers);
    let mut data = svc.db(move |s| s.batches(&o, q.after.as_deref(), limit)).await?;
    let has_more = data.len() > limit;
    data.truncate(limit);
    Ok(Json(BatchList { object: "list".into(), first_id: data.first().map(|b| b.id.clone()), last_id: data.last().map(|b| b.id.clone()), data, has_more }))
}

/// `POST /v1/batches/{id}/cancel`: `cancelling` now, `cancelled` once the runner has stopped its
/// lines (the lines already finished stay in the output file).
async fn cancel(State(st): State<AppState>, Extension(svc): Svc, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Batch>, ApiError> {
    let (owner, mut b) = current(&svc, &st, &headers, &id).await?;
    match b.status.as_str() {
        "validating" | "in_progress" => {
            b.status = "cancelling".into();
            b.cancelling_at = Some(now());
            let (o, bb) = (owner, b.clone());
            svc.db(move |s| s.put_batch(&o, &bb)).await?;
            svc.request_cancel(&id);
            Ok(Json(b))
        }
        "cancelling" | "cancelled" => Ok(Json(b)),
        other => Err(ApiError::invalid("batch_id", format!("The batch is {other} and can no longer be cancelled."))),
    }
}
