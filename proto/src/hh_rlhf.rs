//! The hh-rlhf transcript format (`\n\nHuman: …\n\nAssistant: …`), shared by the reward-head
//! trainer and the load tests.

/// One turn of a transcript: `role` is `"user"` or `"assistant"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: &'static str,
    pub content: String,
}

/// Split an hh-rlhf transcript into turns; `None` unless it alternates (user first) and ends with
/// the assistant.
pub fn parse_transcript(t: &str) -> Option<Vec<Turn>> {
    const H: &str = "\n\nHuman: ";
    const A: &str = "\n\nAssistant: ";
    const A_BARE: &str = "\n\nAssistant:";
    let mut turns = Vec::new();
    let mut rest = t;
    loop {
        let (role, body) = if let Some(r) = rest.strip_prefix(H) {
            ("user", r)
        } else if let Some(r) = rest.strip_prefix(A) {
            ("assistant", r)
        } else if let Some(r) = rest.strip_prefix(A_BARE) {
            ("assistant", r)
        } else {
            return None;
        };
        let next = [body.find(H), body.find(A), body.find(A_BARE)].into_iter().flatten().min();
        let (content, tail) = match next {
            Some(i) => (&body[..i], &body[i..]),
            None => (body, ""),
        };
        turns.push(Turn { role, content: content.trim().to_string() });
        if tail.is_empty() {
            break;
        }
        rest = tail;
    }
    let alternates = turns.iter().enumerate().all(|(i, m)| m.role == if i % 2 == 0 { "user" } else { "assistant" });
    (alternates && turns.last().is_some_and(|m| m.role == "assistant")).then_some(turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hh_transcripts() {
        let t = "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this";
        let m = parse_transcript(t).unwrap();
        assert_eq!(m.iter().map(|m| m.role).collect::<Vec<_>>(), ["user", "assistant", "user", "assistant"]);
        assert_eq!(m[3].content, "like this");
        assert!(parse_transcript("\n\nHuman: only a question").is_none());
        assert!(parse_transcript("no markers").is_none());
        assert!(parse_transcript("\n\nAssistant: first\n\nHuman: q\n\nAssistant: a").is_none());
        assert_eq!(parse_transcript("\n\nHuman: q\n\nAssistant:").unwrap()[1].content, "");
    }
}
