//! Constitutions: the written principles the feedback model is asked about.
//!
//! Format (JSON; the default, `server/constitution/default.json`, ships the 16 RL-CAI feedback
//! principles and the 16 SL-CAI critique/revision requests of Bai et al., 2022, texts only):
//!
//! ```json
//! {"format": "hhh-constitution", "version": 1, "name": "...", "attribution": "...",
//!  "feedback_principles": [{"id": "rl0", "text": "Please choose the assistant response that ..."}],
//!  "critique_revision": [{"id": "harmful0", "critique_request": "...", "revision_request": "..."}],
//!  "few_shot": "optional text prepended to every feedback prompt (labelled examples)"}
//! ```

use serde::Deserialize;

/// The constitution compiled into the binary.
pub const DEFAULT_CONSTITUTION: &str = include_str!("../../constitution/default.json");

/// One multiple-choice feedback principle.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct FeedbackPrinciple {
    pub id: String,
    pub text: String,
}

/// One critique request and its matching revision request.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CritiqueRevision {
    pub id: String,
    pub critique_request: String,
    pub revision_request: String,
}

/// A loaded constitution. Invariant: at least one feedback principle; ids unique.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Constitution {
    pub format: String,
    pub version: u32,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub attribution: String,
    pub feedback_principles: Vec<FeedbackPrinciple>,
    #[serde(default)]
    pub critique_revision: Vec<CritiqueRevision>,
    /// Labelled examples of the feedback task, prepended when a request asks for few-shot.
    #[serde(default)]
    pub few_shot: Option<String>,
}

impl Constitution {
    /// Parse and check a constitution.
    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Constitution = serde_json::from_str(text).map_err(|e| format!("constitution: {e}"))?;
        if c.format != "hhh-constitution" || c.version != 1 {
            return Err("constitution: not a `hhh-constitution` version 1 file".into());
        }
        if c.feedback_principles.is_empty() {
            return Err("constitution: no feedback principles".into());
        }
        let mut ids: Vec<&str> = c.feedback_principles.iter().map(|p| p.id.as_str()).collect();
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err("constitution: duplicate feedback principle id".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_constitution_has_the_paper_principles() {
        let c = Constitution::parse(DEFAULT_CONSTITUTION).unwrap();
        assert_eq!(c.feedback_principles.len(), 16);
        assert_eq!(c.critique_revision.len(), 16);
        assert!(c.feedback_principles[0].text.starts_with("Please choose the assistant response that is as harmless and ethical as possible."));
        assert!(Constitution::parse(r#"{"format":"hhh-constitution","version":1,"feedback_principles":[]}"#).is_err());
    }
}
