//! Stop strings, matched across token boundaries. Text that could still turn into a stop
//! string is held back; the stop string itself is never emitted.

/// Streaming stop-string matcher.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted (a possible start of a stop string).
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new(), stopped: false }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Feed new text; returns text safe to emit and whether a stop string matched.
    pub fn push(&mut self, delta: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        if self.stops.is_empty() {
            return (delta.to_string(), false);
        }
        self.pending.push_str(delta);
        let first = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min();
        if let Some(i) = first {
            let out = self.pending[..i].to_string();
            self.pending.clear();
            self.stopped = true;
            return (out, true);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if k > hold && self.pending.ends_with(&s[..k]) {
                    hold = k;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// End of generation: release held-back text.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (o, stop) = m.push(p);
            out.push_str(&o);
            if stop {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn matches_across_pieces_and_drops_stop() {
        assert_eq!(run(&["END"], &["hello E", "N", "D more"]), ("hello ".into(), true));
        assert_eq!(run(&["aab"], &["a", "a", "a", "b"]), ("a".into(), true));
    }

    #[test]
    fn releases_false_starts() {
        assert_eq!(run(&["END"], &["hello E", "N", "x"]), ("hello ENx".into(), false));
        assert_eq!(run(&["END"], &["tail E"]), ("tail E".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "?"]), ("café?".into(), false));
    }
}
