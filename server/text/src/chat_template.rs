//! Chat templates: the model's Jinja template rendered with minijinja, configured like
//! Hugging Face's `apply_chat_template` (`trim_blocks`, `lstrip_blocks`, `raise_exception`,
//! `tojson`, Python string methods).

use crate::error::TextError;
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

/// One message as the template sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(msg: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(fmt: String) -> String {
    // Templates use this for "today's date" in system prompts; we keep output reproducible by
    // formatting the current UTC date only for the common `%d %b %Y` / `%Y-%m-%d` patterns.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    fmt.replace("%Y", &y.to_string()).replace("%m", &format!("{m:02}")).replace("%d", &format!("{d:02}")).replace("%b", MON[(m - 1) as usize])
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl ChatTemplate {
    /// Compile `source`; `bos_token`/`eos_token` are passed to the template as HF does.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self, TextError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", source.to_string()).map_err(|e| TextError::Template(e.to_string()))?;
        Ok(Self { env, bos_token: bos_token.unwrap_or_default().to_string(), eos_token: eos_token.unwrap_or_default().to_string() })
    }

    /// Render a conversation. Errors raised by the template (`raise_exception`) come back as
    /// [`TextError::Template`] with the template's message.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, TextError> {
        let tmpl = self.env.get_template("chat").map_err(|e| TextError::Template(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        };
        tmpl.render(ctx).map_err(|e| {
            let mut msg = e.detail().map(str::to_string).unwrap_or_else(|| e.to_string());
            if e.kind() != ErrorKind::InvalidOperation {
                msg = e.to_string();
            }
            TextError::Template(msg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_exception_surfaces_message() {
        let t = ChatTemplate::new("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok", None, None).unwrap();
        let err = t.render(&[ChatMessage { role: "assistant".into(), content: "x".into() }], false).unwrap_err();
        assert!(err.to_string().contains("first must be user"), "{err}");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new("{{ messages[0].content.strip() }}|{{ bos_token }}", Some("<s>"), None).unwrap();
        let s = t.render(&[ChatMessage { role: "user".into(), content: "  hi ".into() }], false).unwrap();
        assert_eq!(s, "hi|<s>");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
