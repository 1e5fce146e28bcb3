//! Client tokens (`server.client_tokens_file`): what a request must present when the proxy is
//! exposed beyond loopback, and the names they go by (who made a request: the access log, the
//! ledger, the metrics' `client` label; never the token). The tokens are kept only as SHA-256
//! digests, so the tokens themselves are not held in memory, and checking a request costs one
//! hash and one lookup of that digest in a table, whatever the number of tokens.
//!
//! The lookup is not constant-time, and need not be: its timing could at most say something
//! about the stored digests, and a digest gives no token back (SHA-256 is preimage-resistant;
//! the file may even hold the digests as `sha256:HEX`). What an attacker controls, the token,
//! is never compared byte by byte with a secret.

use std::fmt;
use std::path::PathBuf;

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Shortest client token accepted: shorter ones can be guessed.
pub const MIN_CLIENT_TOKEN_LEN: usize = 16;

/// The accepted tokens, and the name each goes by (when the file gives one). `Debug` shows
/// only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTokens {
    /// Each token's digest, and where its name is in `names`.
    digests: FxHashMap<[u8; 32], usize>,
    /// The name of each token, in file order.
    names: Vec<Option<Arc<str>>>,
    /// The file they were read from (for messages).
    pub file: Option<PathBuf>,
}

impl fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientTokens({} tokens)", self.digests.len())
    }
}

/// A hash in place of a token: `sha256:` and 64 hex digits.
const HASH_PREFIX: &str = "sha256:";

/// The longest client name.
pub(crate) const MAX_NAME: usize = 64;

/// Whether `name` can name a client (a tokens-file line, `[clients.NAME]`): letters, digits,
/// `-`, `_`, `.` and `@`, at most [`MAX_NAME`].
pub(crate) fn valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// What [`valid_client_name`] asks, for messages.
pub(crate) fn client_name_rule() -> String {
    format!("a client name may have letters, digits, '-', '_', '.' and '@', at most {MAX_NAME}")
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

    /// The names tokens go by, each once, in file order.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for n in self.names.iter().flatten() {
            if !names.contains(&&**n) {
                names.push(n);
            }
        }
        names
    }

    /// Parses the text of a tokens file: a token per line, or a name and a token separated
    /// by spaces (`alice TOKEN`); in place of a token, its SHA-256 hash as `sha256:HEX`.
    /// Blank lines and lines starting with `#` are ignored. Messages name the line, never a
    /// token.
    pub fn parse(text: &str) -> Result<ClientTokens, String> {
        let mut tokens = ClientTokens::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |what: String| format!("line {}: {what}", i + 1);
            let mut words = line.split_ascii_whitespace();
            let (name, token) = match (words.next(), words.next(), words.next()) {
                (Some(token), None, _) => (None, token),
                (Some(name), Some(token), None) => (Some(name), token),
                _ => {
                    return Err(at(
                        "give a token, or a name and a token separated by a space \
                                   (NAME TOKEN)"
                            .into(),
                    ))
                }
            };
            if let Some(name) = name {
                if !valid_client_name(name) {
                    return Err(at(client_name_rule()));
                }
            }
            let digest = token_digest(token).map_err(at)?;
            tokens.insert(digest, name.map(Arc::from));
        }
        if tokens.digests.is_empty() {
            return Err("contains no token (one token per line)".into());
        }
        Ok(tokens)
    }

    /// Adds the token of client `name` given as its hash (`sha256:HEX`, `[clients.NAME]
    /// token_hash`); the error never quotes it.
    pub fn add_hash(&mut self, name: &str, hash: &str) -> Result<(), String> {
        if !hash.starts_with(HASH_PREFIX) {
            return Err(format!(
                "a hash is {HASH_PREFIX} and 64 hex digits (its SHA-256); \
                 `openai-proxy client add` makes one"
            ));
        }
        let digest = token_digest(hash)?;
        self.insert(digest, Some(Arc::from(name)));
        Ok(())
    }

    /// Adds a token's digest and name; the same token twice keeps its first name.
    fn insert(&mut self, digest: [u8; 32], name: Option<Arc<str>>) {
        let at = self.names.len();
        self.digests.entry(digest).or_insert(at);
        self.names.push(name);
    }

    /// Whether `headers` carry `Authorization: Bearer TOKEN` with one of the tokens (the
    /// presented token is hashed, and its digest looked up).
    pub fn allows(&self, headers: &http::HeaderMap) -> bool {
        self.digest_of_header(headers).is_some()
    }

    /// [`ClientTokens::allows`], giving the token's digest ([`ClientTokens::digest_of`]).
    pub fn digest_of_header(&self, headers: &http::HeaderMap) -> Option<[u8; 32]> {
        self.find_in_header(headers).map(|(digest, _)| digest)
    }

    /// The token of `Authorization: Bearer TOKEN`, when it is one of the tokens: its digest,
    /// and its place ([`ClientTokens::name_at`]).
    pub fn find_in_header(&self, headers: &http::HeaderMap) -> Option<([u8; 32], usize)> {
        let b = headers.get(http::header::AUTHORIZATION)?.as_bytes();
        let token = b
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .and_then(|_| b.get(7..))?;
        self.find(token)
    }

    /// `token`, when it is one of the tokens: its digest, and its place.
    pub fn find(&self, token: &[u8]) -> Option<([u8; 32], usize)> {
        let token = token.trim_ascii();
        if token.is_empty() {
            return None;
        }
        let presented = sha256(token);
        Some((presented, self.index_of(&presented)?))
    }

    /// The name of the token at `place` ([`ClientTokens::find`]), when it has one.
    pub fn name_at(&self, place: usize) -> Option<&Arc<str>> {
        self.names.get(place)?.as_ref()
    }

    /// The names of the tokens, by place (`None`: unnamed).
    pub fn by_place(&self) -> &[Option<Arc<str>>] {
        &self.names
    }

    /// Whether `token` is one of the tokens (compared as [`ClientTokens::allows`] does).
    pub fn allows_token(&self, token: &[u8]) -> bool {
        self.digest_of(token).is_some()
    }

    /// The SHA-256 digest of `token` when it is one of the tokens: what a WebSocket session
    /// opened with it remembers, to be closed when a reload no longer allows it.
    pub fn digest_of(&self, token: &[u8]) -> Option<[u8; 32]> {
        self.find(token).map(|(digest, _)| digest)
    }

    /// Whether a token's digest ([`ClientTokens::digest_of`]) is one of the tokens'.
    pub fn allows_digest(&self, digest: &[u8; 32]) -> bool {
        self.index_of(digest).is_some()
    }

    /// Where `digest`'s name is in `names`, when it is one of the tokens'.
    fn index_of(&self, digest: &[u8; 32]) -> Option<usize> {
        self.digests.get(digest).copied()
    }
}

/// The digest a token (or its `sha256:HEX` hash) stands for; the error never quotes it.
fn token_digest(token: &str) -> Result<[u8; 32], String> {
    if let Some(hex) = token.strip_prefix(HASH_PREFIX) {
        let mut digest = [0u8; 32];
        let ok = hex.len() == 64
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
            && digest.iter_mut().enumerate().all(|(i, d)| {
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map(|b| *d = b)
                    .is_ok()
            });
        return if ok {
            Ok(digest)
        } else {
            Err(format!(
                "a hash is {HASH_PREFIX} and 64 hex digits (its SHA-256)"
            ))
        };
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token may contain only visible ASCII characters, no spaces".into());
    }
    if token.len() < MIN_CLIENT_TOKEN_LEN {
        return Err(format!(
            "the token is shorter than {MIN_CLIENT_TOKEN_LEN} characters \
             (make one with `openssl rand -hex 32`)"
        ));
    }
    Ok(sha256(token.as_bytes()))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";

    fn hex(d: &[u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn names_tokens_and_hashes_in_one_file_old_lines_still_read() {
        let c = "cccccccccccccccccccccccc";
        let text = format!(
            "# people\nalice {A}\n{B}\n  bob.tools@home   sha256:{}\n",
            hex(&sha256(c.as_bytes())).to_uppercase()
        );
        let t = ClientTokens::parse(&text).unwrap();
        assert_eq!(t.len(), 3);
        let name = |tok: &str| t.name_at(t.find(tok.as_bytes()).unwrap().1).cloned();
        assert_eq!(name(A).as_deref(), Some("alice"));
        assert_eq!(name(B), None);
        assert_eq!(name(c).as_deref(), Some("bob.tools@home"));
        assert!(t.digest_of(b"dddddddddddddddddddddddd").is_none());
        assert_eq!(t.names(), ["alice", "bob.tools@home"]);
    }

    #[test]
    fn bad_lines_are_named_without_their_token() {
        for (text, says) in [
            (
                format!("alice {A} extra"),
                "line 1: give a token, or a name and a token",
            ),
            (format!("al/ice {A}"), "line 1: a client name may have"),
            ("alice tiny1".to_string(), "line 1: the token is shorter"),
            (
                "x sha256:abc".to_string(),
                "line 1: a hash is sha256: and 64 hex digits",
            ),
            (format!("x sha256:{}", "é".repeat(32)), "line 1: a hash is"),
            ("# none\n".to_string(), "contains no token"),
        ] {
            let e = ClientTokens::parse(&text).unwrap_err();
            assert!(e.starts_with(says), "{text:?}: {e}");
            assert!(!e.contains(A) && !e.contains("tiny1"), "{e}");
        }
    }
}
