//! hhh-proto: the OpenAI-compatible wire types shared by the server, the load tests and clients.
//!
//! Requests are deserialized after the API layer has checked the field names (see
//! `hhh-api::validate`), so unknown fields never silently reach these types.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub mod batch;
pub mod harmlessness;
pub mod hh_rlhf;
pub mod honesty;
pub mod interp;
pub mod openapi;
pub mod rl;
pub mod scoring;
pub use harmlessness::*;
pub use honesty::*;
pub use interp::*;
pub use rl::*;
pub use scoring::*;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

impl StopSpec {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSpec::One(s) => vec![s],
            StopSpec::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Message content: a string or a list of `{"type": "text", "text": ...}` parts.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant message's tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A tool the model may call (`tools[i]`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments object (absent: any object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Accepted; calls forced by `tool_choice` always follow the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `none`, `auto`, `required`, or `{"type": "function", "function": {"name"}}`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(NamedToolChoice),
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionName,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct FunctionName {
    pub name: String,
}

/// A tool call, in requests (assistant history) and responses.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// A streamed piece of a tool call (`delta.tool_calls[i]`): the first piece of a call carries
/// its id, type and name; `arguments` pieces concatenate.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCallDelta,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Sampling fields shared by chat and completions.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub n: Option<i64>,
    pub max_tokens: Option<i64>,
    pub stop: Option<StopSpec>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub ignore_eos: Option<bool>,
    /// Token id (as a string) → bias added to its logit before sampling, −100 to 100.
    #[serde(default)]
    pub logit_bias: Option<std::collections::BTreeMap<String, f64>>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// OpenAI's structured outputs: `text`, `json_object` or `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// vLLM's structured outputs: exactly one of `json`, `regex`, `choice`, `grammar`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_outputs: Option<StructuredOutputs>,
    /// vLLM's older names for `structured_outputs.json` / `.regex` / `.choice` / `.grammar`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_choice: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guided_grammar: Option<String>,
}

impl SamplingFields {
    /// `structured_outputs`, or the same built from the older `guided_*` fields; `Err` names
    /// the field when both shapes are given.
    pub fn structured(&self) -> Result<Option<StructuredOutputs>, &'static str> {
        let guided = self.guided_json.is_some() || self.guided_regex.is_some() || self.guided_choice.is_some() || self.guided_grammar.is_some();
        match (&self.structured_outputs, guided) {
            (Some(_), true) => Err("structured_outputs"),
            (Some(s), false) => Ok(Some(s.clone())),
            (None, false) => Ok(None),
            (None, true) => Ok(Some(StructuredOutputs { json: self.guided_json.clone(), regex: self.guided_regex.clone(), choice: self.guided_choice.clone(), grammar: self.guided_grammar.clone() })),
        }
    }
}

/// `response_format` (OpenAI).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ResponseFormat {
    /// `text` (no constraint), `json_object` (any JSON object) or `json_schema`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

/// `response_format.json_schema` (OpenAI).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct JsonSchemaFormat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema the output must validate against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Accepted; the output always follows the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `structured_outputs` (vLLM): exactly one constraint.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StructuredOutputs {
    /// A JSON Schema (an object, or its text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    /// A regular expression the whole output matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The output is one of these strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<Vec<String>>,
    /// A Lark grammar (llguidance's dialect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub add_generation_prompt: Option<bool>,
    /// Tools the model may call (see docs/tools.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether one turn may call several tools (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Extension: sample candidates, score their harmlessness, optionally keep the best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harmlessness: Option<crate::harmlessness::HarmlessnessOptions>,
    /// Extension: attach the prompt's out-of-distribution score (`--ood-stats`) as `ood`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<bool>,
}

/// `prompt`: a string, a list of strings, a list of token ids, or a list of such lists.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptInput,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub echo: Option<bool>,
    pub logprobs: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct AssistantMessage {
    pub role: String,
    /// The text (`null` when the turn is only tool calls, as OpenAI sends it).
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
    /// With the `harmlessness` extension: this choice's score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harmlessness: Option<crate::harmlessness::ChoiceHarmlessness>,
}

/// The `system_fingerprint` of a response generated with weight version `weight_version`
/// (`/get_weight_version`): it changes with every `/update_weights_from_disk`.
pub fn fingerprint(weight_version: u64) -> String {
    format!("fp_hhh_w{weight_version}")
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// `fp_hhh_w<N>`: the weight version the response was generated with (see
    /// [`fingerprint`]). Streams carry it from the first chunk that ends a choice on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Extension (`ood: true` in the request): the prompt's out-of-distribution score; in a
    /// stream, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<crate::OodItem>,
    /// With the `harmlessness` extension: every candidate's score and the selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harmlessness: Option<crate::harmlessness::HarmlessnessSummary>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
    /// Extension: this choice's harmlessness (streams with `harmlessness`, on the first chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harmlessness: Option<crate::harmlessness::ChoiceHarmlessness>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `fp_hhh_w<N>`: the weight version the response was generated with (see
    /// [`fingerprint`]). Streams carry it from the first chunk that ends a choice on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// Extension (`ood: true` in the request): the prompt's out-of-distribution score; in a
    /// stream, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<crate::OodItem>,
    /// Extension: the selection summary (streams with `harmlessness`, on the last chunk before
    /// `[DONE]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harmlessness: Option<crate::harmlessness::HarmlessnessSummary>,
}

/// Legacy completions logprobs (`echo` puts the prompt tokens first, the first one `null`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `fp_hhh_w<N>`: the weight version the response was generated with (see
    /// [`fingerprint`]). Streams carry it from the first chunk that ends a choice on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    pub max_model_len: usize,
    /// `"policy"` (generates; may also score, with a reward head) or `"preference"` (scores only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Endpoint families the model answers: `"generate"` and/or `"score"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Sampling defaults applied to the fields a request leaves out (the model's
    /// `generation_config.json`, `--override-generation-config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_defaults: Option<GenerationDefaults>,
    /// Weight updates applied to this model since the server started (`/update_weights_from_disk`;
    /// the chat model only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_version: Option<u64>,
}

/// Sampling defaults of a model: each applies when a request leaves the field out (vLLM's
/// `--generation-config`). Read from Hugging Face `generation_config.json` keys (`max_new_tokens`
/// becomes `max_tokens`) or GGUF `general.sampling.*` metadata.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub struct GenerationDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
}

impl GenerationDefaults {
    /// No default set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `self` with every field `over` sets replaced.
    pub fn merged(&self, over: &GenerationDefaults) -> GenerationDefaults {
        GenerationDefaults {
            temperature: over.temperature.or(self.temperature),
            top_p: over.top_p.or(self.top_p),
            top_k: over.top_k.or(self.top_k),
            min_p: over.min_p.or(self.min_p),
            repetition_penalty: over.repetition_penalty.or(self.repetition_penalty),
            max_tokens: over.max_tokens.or(self.max_tokens),
        }
    }

    /// The request's sampling fields with the defaults filled in where it left them out
    /// (`max_tokens` excepted: routes use it as the default length, clamped to the context).
    pub fn apply(&self, s: &SamplingFields) -> SamplingFields {
        let mut s = s.clone();
        s.temperature = s.temperature.or(self.temperature);
        s.top_p = s.top_p.or(self.top_p);
        s.top_k = s.top_k.or(self.top_k);
        s.min_p = s.min_p.or(self.min_p);
        s.repetition_penalty = s.repetition_penalty.or(self.repetition_penalty);
        s
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub add_special_tokens: Option<bool>,
    pub add_generation_prompt: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct TokenizeResponse {
    pub tokens: Vec<u32>,
    pub count: usize,
    pub max_model_len: usize,
}

/// `GET /tokenizer_info` (vLLM's shape; lm-evaluation-harness's remote tokenizer reads it).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct TokenizerInfo {
    pub tokenizer_class: String,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    /// The chat template served (the model's, or `--chat-template`).
    pub chat_template: Option<String>,
    /// Whether plain-text encoding starts with the BOS token.
    pub add_bos_token: bool,
    pub model_max_length: usize,
    pub vocab_size: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

/// The OpenAI error shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}
