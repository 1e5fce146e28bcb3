//! What happens to credentials on the way to a backend: the [`AuthPolicy`] and the key it may
//! inject, held as a [`Secret`] that never prints its value.

use std::fmt;
use std::path::PathBuf;

use http::{HeaderName, HeaderValue};

/// An API key, as the value of the header it is sent in. Its `Debug` never shows the value,
/// and the header value is marked sensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(HeaderValue);

impl Secret {
    /// The header value: `Bearer KEY` for `Authorization`, the bare key for any other header
    /// (`x-api-key`, `api-key`, ...).
    pub fn value(&self) -> &HeaderValue {
        &self.0
    }

    pub(super) fn from_key(key: &str, header: &HeaderName) -> Result<Secret, String> {
        let key = key.trim();
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the key contains spaces or characters not allowed in an HTTP header".into(),
            );
        }
        let value = if header == http::header::AUTHORIZATION {
            format!("Bearer {key}")
        } else {
            key.to_string()
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| "the key is not a valid HTTP header value".to_string())?;
        v.set_sensitive(true);
        Ok(Secret(v))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where an injected key came from (for messages; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
    Credential(String, PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(v) => write!(f, "env ${v}"),
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Credential(n, p) => write!(f, "credential {n} ({})", p.display()),
        }
    }
}

/// What happens to the client's credentials on the way to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthPolicy {
    /// Remove the secret headers (`Authorization`, `Cookie`, vendors' key headers and
    /// `server.secret_headers`).
    Strip,
    /// Pass the client's credentials through unchanged.
    Forward,
    /// Remove the client's credentials and send this key in `header` (`api_key_header`:
    /// `Authorization: Bearer KEY` unless set).
    Inject {
        /// The key (never printed).
        key: Secret,
        /// The header it goes in.
        header: HeaderName,
        /// Where it was read from (for messages).
        source: KeySource,
    },
}

impl AuthPolicy {
    /// What the policy does, in words (for the `/` page).
    pub fn describe(&self) -> &'static str {
        match self {
            AuthPolicy::Inject { .. } => "key injected by the proxy",
            AuthPolicy::Forward => "client's key forwarded",
            AuthPolicy::Strip => "client's key removed",
        }
    }
}

impl fmt::Display for AuthPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthPolicy::Strip => f.write_str("strip"),
            AuthPolicy::Forward => f.write_str("forward"),
            AuthPolicy::Inject { source, header, .. } if header == http::header::AUTHORIZATION => {
                write!(f, "inject from {source}")
            }
            AuthPolicy::Inject { source, header, .. } => {
                write!(f, "inject as {header} from {source}")
            }
        }
    }
}
