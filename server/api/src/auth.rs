//! Optional API keys (`Authorization: Bearer <key>`), compared in constant time.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// The accepted keys; empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl ApiKeys {
    /// Keys from flags and from a file (one per line; blank lines and `#` comments skipped).
    pub fn new(keys: impl IntoIterator<Item = String>) -> Self {
        Self { keys: keys.into_iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).map(String::into_bytes).collect() }
    }

    /// Parse a key file's contents.
    pub fn parse_file(text: &str) -> Vec<String> {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect()
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Who owns what a request creates (files, batches): `""` when authentication is off,
    /// otherwise the first 16 bytes of the SHA-256 of the request's key, in hex (the key itself
    /// is never stored). Call after [`Self::allows`].
    pub fn owner(&self, headers: &HeaderMap) -> String {
        use sha2::Digest;
        if self.keys.is_empty() {
            return String::new();
        }
        let token = bearer(headers).unwrap_or_default();
        sha2::Sha256::digest(token.as_bytes())[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the request carries a valid key (always true when authentication is off).
    /// Every configured key is compared, each in constant time, so the time taken does not
    /// depend on which key matched or on how many leading bytes were right.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let Some(token) = bearer(headers) else {
            return false;
        };
        let token = token.as_bytes();
        let mut ok = subtle::Choice::from(0u8);
        for k in &self.keys {
            ok |= k.as_slice().ct_eq(token);
        }
        ok.into()
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let given = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    given.strip_prefix("Bearer ").or_else(|| given.strip_prefix("bearer ")).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        m
    }

    #[test]
    fn keys_are_checked() {
        let k = ApiKeys::new(["alpha".to_string(), "beta".to_string()]);
        assert!(k.allows(&h("Bearer alpha")));
        assert!(k.allows(&h("Bearer beta")));
        assert!(!k.allows(&h("Bearer alph")));
        assert!(!k.allows(&h("Bearer alphaa")));
        assert!(!k.allows(&h("Basic alpha")));
        assert!(!k.allows(&HeaderMap::new()));
        assert!(ApiKeys::default().allows(&HeaderMap::new()));
        assert_eq!(ApiKeys::parse_file("# c\n\nk1\n  k2 \n"), vec!["k1", "k2"]);
        assert_eq!(ApiKeys::default().owner(&h("Bearer alpha")), "");
        assert_ne!(k.owner(&h("Bearer alpha")), k.owner(&h("Bearer beta")));
        assert_eq!(k.owner(&h("Bearer alpha")).len(), 32);
    }
}
