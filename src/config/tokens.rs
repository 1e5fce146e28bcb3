//! Client tokens (`server.client_tokens_file`): what a request must present when the proxy is
//! exposed beyond loopback. The tokens are kept only as SHA-256 digests, so checking a
//! request costs one hash and a constant-time comparison per token, and the tokens themselves
//! are not held in memory.

use std::fmt;
use std::path::PathBuf;

use subtle::ConstantTimeEq;

/// Shortest client token accepted: shorter ones can be guessed.
pub const MIN_CLIENT_TOKEN_LEN: usize = 16;

/// The accepted tokens. `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTokens {
    digests: Vec<[u8; 32]>,
    /// The file they were read from (for messages).
    pub file: Option<PathBuf>,
}

impl fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientTokens({} tokens)", self.digests.len())
    }
}

impl ClientTokens {
    /// Whether clients must present a token.
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there is no token (every request is let in).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Parses the text of a tokens file: one token per line; blank lines and lines starting
    /// with `#` are ignored. Messages name the line, never a token.
    pub fn parse(text: &str) -> Result<ClientTokens, String> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a token may contain only visible ASCII characters, no spaces",
                    i + 1
                ));
            }
            if token.len() < MIN_CLIENT_TOKEN_LEN {
                return Err(format!(
                    "line {}: the token is shorter than {MIN_CLIENT_TOKEN_LEN} characters \
                     (make one with `openssl rand -hex 32`)",
                    i + 1
                ));
            }
            digests.push(sha256(token.as_bytes()));
        }
        if digests.is_empty() {
            return Err("contains no token (one token per line)".into());
        }
        Ok(ClientTokens {
            digests,
            file: None,
        })
    }

    /// Whether `headers` carry `Authorization: Bearer TOKEN` with one of the tokens. The
    /// presented token is hashed and compared with every digest in constant time, so the time
    /// taken says nothing about how close a guess was or which token matched.
    pub fn allows(&self, headers: &http::HeaderMap) -> bool {
        self.digest_of_header(headers).is_some()
    }

    /// [`ClientTokens::allows`], giving the token's digest ([`ClientTokens::digest_of`]).
    pub fn digest_of_header(&self, headers: &http::HeaderMap) -> Option<[u8; 32]> {
        let b = headers.get(http::header::AUTHORIZATION)?.as_bytes();
        let token = b
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .and_then(|_| b.get(7..))?;
        self.digest_of(token)
    }

    /// Whether `token` is one of the tokens (compared as [`ClientTokens::allows`] does).
    pub fn allows_token(&self, token: &[u8]) -> bool {
        self.digest_of(token).is_some()
    }

    /// The SHA-256 digest of `token` when it is one of the tokens: what a WebSocket session
    /// opened with it remembers, to be closed when a reload no longer allows it.
    pub fn digest_of(&self, token: &[u8]) -> Option<[u8; 32]> {
        let token = token.trim_ascii();
        if token.is_empty() {
            return None;
        }
        let presented = sha256(token);
        self.allows_digest(&presented).then_some(presented)
    }

    /// Whether a token's digest ([`ClientTokens::digest_of`]) is one of the tokens', compared
    /// with every one in constant time.
    pub fn allows_digest(&self, digest: &[u8; 32]) -> bool {
        let mut found = subtle::Choice::from(0);
        for known in &self.digests {
            found |= digest.ct_eq(known);
        }
        found.into()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
