//! Incremental Server-Sent-Events parsing: bytes in, `data:` payloads out.

/// Splits a byte stream into SSE events and yields each event's `data` (multi-line data joined
/// with `\n`, as the SSE spec says). Accepts `\n`, `\r\n` and `\r\n\r\n` framing.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Feed bytes; returns the data of every event completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            let text = String::from_utf8_lossy(&event);
            let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
        out
    }

    /// Whether undelivered bytes remain (a stream that ended mid-event).
    pub fn has_partial(&self) -> bool {
        self.buf.iter().any(|b| !b.is_ascii_whitespace())
    }
}

/// Position of the first blank line (event end) and the separator's length.
fn find_event_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' && b[i + 1] == b'\n' {
            return Some((i, 2));
        }
        if b[i] == b'\r' && b.get(i + 1..i + 4) == Some(b"\n\r\n") {
            return Some((i, 4));
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert!(p.has_partial());
        assert_eq!(p.push(b":1}\n\ndata: [DONE]\n"), vec!["{\"a\":1}"]);
        assert_eq!(p.push(b"\n"), vec!["[DONE]"]);
        assert!(!p.has_partial());
    }

    #[test]
    fn crlf_comments_and_multiline_data() {
        let mut p = SseParser::default();
        let got = p.push(b": keep-alive\r\n\r\nevent: x\r\ndata: one\r\ndata:two\r\n\r\ndata: 3\n\n");
        assert_eq!(got, vec!["one\ntwo", "3"]);
    }
}
