//! The assembler without a model: synthetic choice events through `collect` and the SSE driver.

use super::*;
use crate::jobs::ChoiceUsage;

/// Frames events as short strings and aggregates text per choice.
#[derive(Default)]
struct Probe {
    text: Vec<String>,
    finish: Vec<Option<String>>,
}

impl Framer for Probe {
    type Chunk = String;
    fn opening(&mut self) -> Vec<String> {
        vec!["open".into()]
    }
    fn chunk(&mut self, ev: &ChoiceEvent) -> Option<String> {
        match ev {
            ChoiceEvent::Delta { text, .. } if text.is_empty() => None,
            ChoiceEvent::Delta { index, text, .. } => Some(format!("{index}:{text}")),
            ChoiceEvent::Done { index, finish_reason, .. } => Some(format!("{index}:<{finish_reason}>")),
            ChoiceEvent::PromptLogprobs { .. } => None,
        }
    }
    fn usage_chunk(&mut self, u: Usage) -> String {
        format!("usage {} {} {}", u.prompt_tokens, u.completion_tokens, u.prompt_tokens_details.map_or(0, |d| d.cached_tokens))
    }
    fn absorb(&mut self, ev: ChoiceEvent) {
        match ev {
            ChoiceEvent::Delta { index, text, .. } => self.text[index].push_str(&text),
            ChoiceEvent::Done { index, finish_reason, .. } => self.finish[index] = Some(finish_reason),
            ChoiceEvent::PromptLogprobs { .. } => {}
        }
    }
}

fn delta(index: usize, text: &str) -> ChoiceEvent {
    ChoiceEvent::Delta { index, text: text.into(), token: None }
}

fn done(index: usize, completion: usize, cached: usize, error: Option<ApiError>) -> ChoiceEvent {
    let usage = ChoiceUsage { completion_tokens: completion, cached_tokens: cached, ..Default::default() };
    ChoiceEvent::Done { index, finish_reason: if error.is_some() { "error".into() } else { "stop".into() }, usage, error }
}

/// Two prompts (5 and 3 tokens) × n = 2; choice 3 optionally fails.
fn choices(fail: bool) -> Choices {
    let streams = vec![
        stream::iter(vec![delta(0, "a"), delta(0, ""), delta(0, "b"), done(0, 2, 4, None)]).boxed(),
        stream::iter(vec![delta(1, "c"), done(1, 1, 0, None)]).boxed(),
        stream::iter(vec![delta(2, "d"), done(2, 1, 2, None)]).boxed(),
        stream::iter(vec![delta(3, "e"), done(3, 1, 0, fail.then(|| ApiError::internal("boom")))]).boxed(),
    ];
    Choices::from_streams(streams, vec![5, 3], 2)
}

#[tokio::test]
async fn collect_aggregates_and_counts_each_prompt_once() {
    let probe = Probe { text: vec![String::new(); 4], finish: vec![None; 4] };
    let (p, u) = collect(choices(false), probe).await.expect("no choice fails");
    assert_eq!(p.text, ["ab", "c", "d", "e"]);
    assert!(p.finish.iter().all(|f| f.as_deref() == Some("stop")));
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (8, 5, 13));
    assert_eq!(u.prompt_tokens_details.map(|d| d.cached_tokens), Some(6));
}

#[tokio::test]
async fn collect_fails_with_the_first_error() {
    let probe = Probe { text: vec![String::new(); 4], finish: vec![None; 4] };
    let err = collect(choices(true), probe).await.err().expect("choice 3 fails");
    assert_eq!(err.status.as_u16(), 500);
    assert!(err.message.contains("boom"));
}

#[tokio::test]
async fn sse_sends_opening_chunks_error_event_usage_and_done() {
    let probe = Probe { text: vec![String::new(); 4], finish: vec![None; 4] };
    let out: Vec<String> = sse_payloads(choices(true), probe, true).collect().await;
    assert_eq!(out.first().map(String::as_str), Some("\"open\""));
    assert_eq!(out.last().map(String::as_str), Some(DONE));
    // Empty deltas send nothing; every choice's finish chunk is sent, the failed one's after an
    // error event.
    assert_eq!(out.iter().filter(|s| s.contains(":<")).count(), 4);
    assert!(!out.iter().any(|s| s == "\"0:\""));
    let err = out.iter().position(|s| s.contains("\"error\"") && s.contains("boom")).expect("an error event");
    assert_eq!(out[err + 1], "\"3:<error>\"");
    assert_eq!(out[out.len() - 2], "\"usage 8 5 6\"");
    // Per choice, events keep their order.
    let pos = |s: &str| out.iter().position(|x| x == s).unwrap_or(usize::MAX);
    assert!(pos("\"0:a\"") < pos("\"0:b\"") && pos("\"0:b\"") < pos("\"0:<stop>\""));
}

#[tokio::test]
async fn sse_without_usage_ends_with_the_last_finish_then_done() {
    let probe = Probe { text: vec![String::new(); 4], finish: vec![None; 4] };
    let out: Vec<String> = sse_payloads(choices(false), probe, false).collect().await;
    assert!(!out.iter().any(|s| s.starts_with("\"usage")));
    assert!(out[out.len() - 2].contains(":<stop>"));
    assert_eq!(out.len(), 1 + 5 + 4 + 1, "opening, five non-empty deltas, four finishes, [DONE]");
}
