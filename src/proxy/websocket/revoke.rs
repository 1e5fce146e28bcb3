//! WebSocket sessions by the client token that opened them: a reload that no longer accepts a
//! token ends the sessions opened with it. A session remembers its token's SHA-256 digest
//! (never the token); the register outlives reloads (each new configuration takes over the
//! old one's, [`Sessions::take_over`]), and holds the tokens now accepted, so a session joined
//! just after a reload, by a request admitted just before it, is checked against the new
//! tokens too.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::tokens::ClientTokens;

/// The open sessions that were opened with a client token.
pub(crate) struct Sessions {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The tokens the configuration in force accepts.
    tokens: ClientTokens,
    /// Each open session: its id, its token's digest, and how it is told to end.
    open: Vec<(u64, [u8; 32], watch::Sender<bool>)>,
    next: u64,
}

impl Sessions {
    /// The register of a configuration accepting `tokens`.
    pub(crate) fn new(tokens: ClientTokens) -> Arc<Sessions> {
        Arc::new(Sessions {
            inner: Mutex::new(Inner {
                tokens,
                open: Vec::new(),
                next: 0,
            }),
        })
    }

    /// Makes `old`, the register of the configuration being replaced, this configuration's
    /// (`self` is then dropped): the tokens now accepted are `self`'s, and every session whose
    /// token is not among them is told to end.
    pub(crate) fn take_over(self: &Arc<Self>, old: &Arc<Sessions>) -> Arc<Sessions> {
        let tokens = crate::sync::lock(&self.inner).tokens.clone();
        let mut inner = crate::sync::lock(&old.inner);
        inner.open.retain(|(_, digest, end)| {
            let kept = tokens.allows_digest(digest);
            if !kept {
                let _ = end.send(true);
            }
            kept
        });
        inner.tokens = tokens;
        old.clone()
    }

    /// Registers a session opened with the token of `digest`; its [`Revocation`] says when a
    /// reload no longer accepts that token (at once, when it already does not).
    pub(crate) fn register(self: &Arc<Self>, digest: [u8; 32]) -> Revocation {
        let (tx, rx) = watch::channel(false);
        let mut inner = crate::sync::lock(&self.inner);
        let id = inner.next;
        inner.next += 1;
        if inner.tokens.allows_digest(&digest) {
            inner.open.push((id, digest, tx));
        } else {
            let _ = tx.send(true);
        }
        Revocation {
            sessions: self.clone(),
            id,
            ended: rx,
        }
    }
}

/// A session's place in the register: removed when the session ends (dropped).
pub(crate) struct Revocation {
    sessions: Arc<Sessions>,
    id: u64,
    ended: watch::Receiver<bool>,
}

impl Revocation {
    /// Resolves when the session's token is no longer accepted.
    pub(crate) async fn revoked(&mut self) {
        if self.ended.wait_for(|r| *r).await.is_err() {
            // Out of the register without a word: never.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Revocation {
    fn drop(&mut self) {
        crate::sync::lock(&self.sessions.inner)
            .open
            .retain(|(id, _, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: &str = "token-a-0123456789abcdef";
    const B: &str = "token-b-0123456789abcdef";

    fn digest(tokens: &ClientTokens, t: &str) -> [u8; 32] {
        tokens.digest_of(t.as_bytes()).unwrap()
    }

    async fn is_revoked(r: &mut Revocation) -> bool {
        tokio::time::timeout(Duration::from_millis(50), r.revoked())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_reload_ends_the_sessions_of_the_tokens_it_drops() {
        let both = ClientTokens::parse(&format!("{A}\n{B}\n")).unwrap();
        let old = Sessions::new(both.clone());
        let (mut a, mut b) = (
            old.register(digest(&both, A)),
            old.register(digest(&both, B)),
        );
        assert!(!is_revoked(&mut a).await && !is_revoked(&mut b).await);
        let new = Sessions::new(ClientTokens::parse(B).unwrap()).take_over(&old);
        assert!(is_revoked(&mut a).await);
        assert!(!is_revoked(&mut b).await);
        // Joined after the reload by a request the old configuration admitted.
        let mut late = old.register(digest(&both, A));
        assert!(is_revoked(&mut late).await);
        drop((a, b, late));
        assert!(crate::sync::lock(&new.inner).open.is_empty());
    }
}
