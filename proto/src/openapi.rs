//! The OpenAPI 3.0 document of the HTTP API, generated from the wire types (their JSON schemas
//! come from `schemars`, so the document cannot drift from the types). `proto/openapi.json` is
//! the committed copy; `cargo run -p hhh-proto --example openapi > proto/openapi.json` rewrites it
//! and `proto/tests/openapi.rs` fails when it is stale or when a served route is missing.

use crate::*;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// One documented operation.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    response: Value,
    /// Media type of the 200 response.
    media: &'static str,
    /// Also answers with `text/event-stream` when the request sets `stream`.
    streams: bool,
    /// Media type of the request body.
    request_media: &'static str,
    /// Query parameters: (name, type, description).
    query: &'static [(&'static str, &'static str, &'static str)],
}

fn body<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

fn status_body() -> Value {
    json!({"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]})
}

fn operations(g: &mut SchemaGenerator) -> Vec<Op> {
    let op = |method, path, summary, request, response, streams| Op { method, path, summary, request, response, media: "application/json", streams, request_media: "application/json", query: &[] };
    let mut ops = vec![
        op(
            "post",
            "/v1/chat/completions",
            "Chat completion (OpenAI). `stream: true` gives server-sent `ChatCompletionChunk`s; the `harmlessness` extension samples candidates, scores and selects them.",
            Some(body::<ChatCompletionRequest>(g)),
            body::<ChatCompletionResponse>(g),
            true,
        ),
        op(
            "post",
            "/v1/completions",
            "Text completion (OpenAI legacy), with logprobs and echo; `stream: true` gives server-sent chunks.",
            Some(body::<CompletionRequest>(g)),
            body::<CompletionResponse>(g),
            true,
        ),
        op("get", "/v1/models", "The served models with their kind (policy, preference, feedback) and capabilities.", None, body::<ModelList>(g), false),
        op("post", "/v1/rewards", "Scalar rewards of (conversation, response) pairs or raw texts from a reward model.", Some(body::<RewardsRequest>(g)), body::<RewardsResponse>(g), false),
        op(
            "post",
            "/v1/preferences",
            "Rewards of several responses to one conversation, pairwise preference probabilities and a ranking.",
            Some(body::<PreferencesRequest>(g)),
            body::<PreferencesResponse>(g),
            false,
        ),
        op("post", "/get_reward", "OpenRLHF-compatible reward scoring of full texts.", Some(body::<GetRewardRequest>(g)), body::<GetRewardResponse>(g), false),
        op("post", "/pooling", "vLLM-compatible pooling: the reward head's outputs per input.", Some(body::<PoolingRequest>(g)), body::<PoolingResponse>(g), false),
        op(
            "post",
            "/v1/harmlessness/compare",
            "Constitutional AI feedback: soft labels for every pair of responses under sampled principles, ensembled and order-debiased, optionally with chain of thought.",
            Some(body::<CompareRequest>(g)),
            body::<CompareResponse>(g),
            false,
        ),
        op(
            "post",
            "/v1/harmlessness/score",
            "A relative harmlessness score in [0, 1] per response (mean P(less harmful) against the others).",
            Some(body::<CompareRequest>(g)),
            body::<HarmlessnessScoreResponse>(g),
            false,
        ),
        op("post", "/v1/harmlessness/revise", "Critique and revision rounds (SL-CAI); `stream: true` sends each round as an event.", Some(body::<ReviseRequest>(g)), body::<ReviseResponse>(g), true),
        op("post", "/v1/harmlessness/label", "The raw label-scoring primitive: probabilities of option strings after a prompt.", Some(body::<LabelRequest>(g)), body::<LabelResponse>(g), false),
        op(
            "post",
            "/v1/self_evaluation",
            "P(True): the probability the model gives that proposed (or its own sampled) answers to a question are true, optionally after brainstormed samples.",
            Some(body::<SelfEvaluationRequest>(g)),
            body::<SelfEvaluationResponse>(g),
            false,
        ),
        op(
            "post",
            "/v1/pik",
            "P(IK): the probability that the model answers a question correctly, from a head on the question's hidden state (--pik-head).",
            Some(body::<PikRequest>(g)),
            body::<PikResponse>(g),
            false,
        ),
        op(
            "post",
            "/v1/interpretability/induction",
            "Induction heads (Olsson et al., 2022): per layer and head, prefix-matching and copying scores on repeated random token sequences; the model's in-context learning score over given texts.",
            Some(body::<InductionRequest>(g)),
            body::<InductionResponse>(g),
            false,
        ),
        op(
            "post",
            "/v1/ood/score",
            "Out-of-distribution scores: Mahalanobis distance of each input's hidden state from in-distribution statistics (--ood-stats, from `hhh-server fit-ood`).",
            Some(body::<OodScoreRequest>(g)),
            body::<OodScoreResponse>(g),
            false,
        ),
        op(
            "post",
            "/v1/evals/behavior",
            "Model-written evaluations: the probability of the behaviour-matching answer per item (Anthropic evals format) and the matching rate.",
            Some(body::<BehaviorEvalRequest>(g)),
            body::<BehaviorEvalResponse>(g),
            false,
        ),
        op(
            "post",
            "/update_weights_from_disk",
            "Online RL (SGLang's shape): load new weights for the chat model and swap them between two engine steps; running requests finish first (drain) or end with abort.",
            Some(body::<UpdateWeightsRequest>(g)),
            body::<UpdateWeightsResponse>(g),
            false,
        ),
        op(
            "post",
            "/pause_generation",
            "Stop admitting requests (they wait); `mode: abort` ends running ones, `wait` lets them finish.",
            Some(body::<PauseRequest>(g)),
            body::<SuccessResponse>(g),
            false,
        ),
        op("post", "/tokenize", "Token ids of a prompt or of a chat rendered with the model's template.", Some(body::<TokenizeRequest>(g)), body::<TokenizeResponse>(g), false),
        op("post", "/detokenize", "Text of token ids.", Some(body::<DetokenizeRequest>(g)), body::<DetokenizeResponse>(g), false),
    ];
    ops.push(op("get", "/get_weight_version", "Weight updates applied to the chat model since start.", None, body::<WeightVersionResponse>(g), false));
    ops.push(op("post", "/continue_generation", "Admit requests again after /pause_generation.", None, body::<SuccessResponse>(g), false));
    ops.push(op("get", "/tokenizer_info", "The tokenizer's special tokens, chat template and limits (vLLM's shape).", None, body::<TokenizerInfo>(g), false));
    for (path, summary) in [
        ("/health", "200 once the model is loaded and warmed up, 503 before and when the engine stopped."),
        ("/health/live", "Liveness: 200 while the process serves HTTP."),
        ("/health/ready", "Readiness: 200 when ready, 503 while loading, draining or after the engine stopped."),
    ] {
        ops.push(op("get", path, summary, None, status_body(), false));
    }
    ops.push(Op {
        method: "get",
        path: "/metrics",
        summary: "Prometheus text exposition (docs/metrics.md); no API key needed.",
        request: None,
        response: json!({"type": "string"}),
        media: "text/plain",
        streams: false,
        request_media: "application/json",
        query: &[],
    });
    for (path, summary) in [("/playground", "The web playground (one self-contained HTML page; docs/playground.md)."), ("/", "Redirects to /playground.")] {
        ops.push(Op { method: "get", path, summary, request: None, response: json!({"type": "string"}), media: "text/html", streams: false, request_media: "application/json", query: &[] });
    }
    ops.extend(batch_operations(g));
    ops
}

/// `/v1/files` and `/v1/batches` (crate `hhh-batch`).
fn batch_operations(g: &mut SchemaGenerator) -> Vec<Op> {
    use crate::batch::*;
    let op = |method, path, summary, request, response| Op { method, path, summary, request, response, media: "application/json", streams: false, request_media: "application/json", query: &[] };
    let upload = json!({
        "type": "object",
        "properties": {"purpose": {"type": "string", "enum": ["batch", "user_data"]}, "file": {"type": "string", "format": "binary"}},
        "required": ["purpose", "file"],
    });
    vec![
        Op {
            request_media: "multipart/form-data",
            ..op(
                "post",
                "/v1/files",
                "Upload a file (`purpose: batch`: a batch input file, checked on upload: UTF-8, JSONL, unique custom_id, --batch-max-lines; 413 over --max-file-bytes).",
                Some(upload),
                body::<FileObject>(g),
            )
        },
        Op {
            query: &[("purpose", "string", "Only files of this purpose."), ("limit", "integer", "At most this many (default 10000).")],
            ..op("get", "/v1/files", "The caller's files, newest first.", None, body::<FileList>(g))
        },
        op("get", "/v1/files/{id}", "A file's metadata (404 for another API key's file).", None, body::<FileObject>(g)),
        op("delete", "/v1/files/{id}", "Delete a file and its bytes.", None, body::<FileDeleted>(g)),
        Op {
            media: "application/octet-stream",
            ..op("get", "/v1/files/{id}/content", "A file's bytes (batch output and error files are JSONL BatchOutputLine).", None, json!({"type": "string", "format": "binary"}))
        },
        op("post", "/v1/batches", "Create a batch from an uploaded input file; lines run at batch priority behind interactive requests.", Some(body::<CreateBatchRequest>(g)), body::<Batch>(g)),
        Op {
            query: &[("after", "string", "A batch id: list the batches created before it."), ("limit", "integer", "1 to 100 (default 20).")],
            ..op("get", "/v1/batches", "The caller's batches, newest first.", None, body::<BatchList>(g))
        },
        op("get", "/v1/batches/{id}", "A batch, with live request counts while it runs.", None, body::<Batch>(g)),
        op("post", "/v1/batches/{id}/cancel", "Cancel a validating or in-progress batch (`cancelling`, then `cancelled`; finished lines stay in the output file).", None, body::<Batch>(g)),
    ]
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let err = body::<ErrorResponse>(&mut g);
    let mut paths = Map::new();
    for o in operations(&mut g) {
        let mut content = Map::new();
        content.insert(o.media.into(), json!({"schema": o.response}));
        if o.streams {
            content.insert(
                "text/event-stream".into(),
                json!({"schema": {"type": "string", "description": "Server-sent events (`data: <JSON>` lines, then `data: [DONE]`) when the request sets `stream: true`."}}),
            );
        }
        let mut operation = json!({
            "summary": o.summary,
            "operationId": format!("{}{}", o.method, o.path.replace(['/', '.'], "_")),
            "responses": {
                "200": {"description": "OK", "content": content},
                "4XX": {"description": "Bad request (the field and the limit are named in `error.param` / `error.message`), 401, 404 unknown model, 408 timeout, 413 body too large, 429 overloaded (with Retry-After)", "content": {"application/json": {"schema": err.clone()}}},
                "5XX": {"description": "500 internal error; 503 draining, not ready or the engine stopped (with Retry-After)", "content": {"application/json": {"schema": err.clone()}}},
            },
        });
        if let Some(r) = o.request {
            operation["requestBody"] = json!({"required": true, "content": {o.request_media: {"schema": r}}});
        }
        let mut params: Vec<Value> = Vec::new();
        if o.path.contains("{id}") {
            params.push(json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}));
        }
        for (name, ty, description) in o.query {
            params.push(json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": ty}}));
        }
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if !o.path.starts_with("/health") && o.path != "/metrics" {
            operation["security"] = json!([{"bearer": []}, {}]);
        }
        let entry = paths.entry(o.path.to_string()).or_insert_with(|| json!({}));
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "hhh-serve", "version": env!("CARGO_PKG_VERSION"), "description": "OpenAI-compatible inference, preference-model scoring and constitutional harmlessness feedback. Generated from hhh-proto's wire types."},
        "servers": [{"url": "http://127.0.0.1:8000"}],
        "paths": paths,
        "components": {
            "schemas": g.take_definitions(true),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "Required on every route but /health* and /metrics when the server runs with --api-key."}},
        },
    })
}
