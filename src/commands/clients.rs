//! `client add|list|remove`: named client tokens, made and revoked the way htpasswd makes a
//! web server's users. `add` makes a random token, prints it once and stores only its hash
//! (`NAME sha256:HEX` in `server.client_tokens_file`, else `token_hash` in a `[clients.NAME]`
//! table), with the client's scope and limits in its `[clients.NAME]` table; `remove` takes
//! both away again; `list` shows them ([`list`]). The files are edited as text ([`edit`]) and
//! replaced whole ([`write`]);
//! the result is validated as `serve` would read it before anything is written, so a change
//! that would break the config is refused and leaves every file as it was.

mod edit;
mod list;
mod write;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::Deserialize;
use toml::Spanned;

pub(crate) use self::list::scope_and_limits;
use self::write::{read_if_any, real_path, restore, Staged};
use crate::config::tokens::{client_name_rule, valid_client_name, ClientTokens};
use crate::config::{self, Config, Origin, Source};

/// The line before the loader's messages when the config does not load as it is.
const DOES_NOT_LOAD: &str =
    "openai-proxy: the config does not load; fix it first (nothing was changed):";

/// What a new token starts with, so that it is recognized for what it is.
const TOKEN_PREFIX: &str = "op-";

/// A new client: its name, scope and limits (the command line, as plain values).
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    /// Its name (letters, digits, `-`, `_`, `.`, `@`).
    pub name: String,
    /// Model globs it may ask for; empty: every model.
    pub models: Vec<String>,
    /// Path prefixes it may use; empty: every path.
    pub routes: Vec<String>,
    /// Backends whose server-side key it may use; `None`: all, `Some([])`: none.
    pub server_key_for: Option<Vec<String>>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// Requests a minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens a minute.
    pub tokens_per_minute: Option<u64>,
    /// Tokens a day (UTC).
    pub tokens_per_day: Option<u64>,
}

/// What `client` does.
#[derive(Debug, Clone)]
pub enum Request {
    /// Make a client's token and store its hash.
    Add(NewClient),
    /// List the clients.
    List,
    /// Remove the client of this name.
    Remove(String),
}

/// Whether `name` can name a client: letters, digits, `-`, `_`, `.` and `@`, at most 64 (the
/// tokens file's and `[clients.NAME]`'s rule). For the command line.
pub fn parse_name(name: &str) -> Result<String, String> {
    if valid_client_name(name) {
        Ok(name.to_string())
    } else {
        Err(client_name_rule())
    }
}

/// Runs `client ...` with the config `config_flag` (`--config`) or the lookup order finds: the
/// token (of `add`) goes to `out`, what was done to `err`. A [`config::ConfigError`] comes back
/// inside the error, for exit status 78.
pub fn run(
    config_flag: Option<&Path>,
    request: &Request,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    match request {
        Request::List => list::list(config_flag, out),
        Request::Add(c) => add(&Current::read(config_flag, true, err)?, c, out, err),
        Request::Remove(name) => remove(&Current::read(config_flag, false, err)?, name, err),
    }
}

/// The little of the config these commands read from its text: where the tokens file is named
/// and which clients have tables (and what is in them).
#[derive(Debug, Default, Deserialize)]
struct Outline {
    #[serde(default)]
    server: OutlineServer,
    #[serde(default)]
    clients: BTreeMap<Spanned<String>, toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
struct OutlineServer {
    client_tokens_file: Option<Spanned<String>>,
}

impl Outline {
    /// The table of client `name`, and where its name is in the text.
    fn table(&self, name: &str) -> Option<(Range<usize>, &toml::Table)> {
        self.clients
            .iter()
            .find(|(k, _)| k.get_ref() == name)
            .map(|(k, t)| (k.span(), t))
    }
}

/// The tokens file the config names.
struct TokensFile {
    /// Where it really is (a link followed).
    path: PathBuf,
    /// What it holds now; `None`: it does not exist yet.
    old: Option<Vec<u8>>,
}

/// The config as it is before the change.
struct Current {
    source: Source,
    /// The config file (a link followed).
    path: PathBuf,
    text: String,
    outline: Outline,
    /// `None` only for `add` when the tokens file does not exist yet (it then makes it).
    config: Option<Config>,
    tokens: Option<TokensFile>,
}

impl Current {
    /// Reads the config file, which must exist and load (for `add`, but for a tokens file that
    /// is not there yet when `missing_tokens_file_ok`).
    fn read(
        flag: Option<&Path>,
        missing_tokens_file_ok: bool,
        err: &mut dyn std::io::Write,
    ) -> anyhow::Result<Current> {
        let source = config::locate(flag);
        let Some(named) = source.path.clone() else {
            bail!(
                "there is no config file (the built-in default is in use): write one with \
                 `openai-proxy init` first, or name one with --config PATH"
            );
        };
        let Ok(bytes) = config::read_small_file(&named) else {
            // The loader says why, as it says it for `serve`.
            return Err(load_error(flag, err));
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Err(load_error(flag, err));
        };
        let Ok(outline) = toml::from_str::<Outline>(&text) else {
            return Err(load_error(flag, err));
        };
        let tokens = match &outline.server.client_tokens_file {
            None => None,
            Some(f) => {
                let path = real_path(Path::new(f.get_ref()))?;
                Some(TokensFile {
                    old: read_if_any(&path)?,
                    path,
                })
            }
        };
        let config = match Config::parse(&text, source.clone()) {
            Ok(c) => Some(c),
            Err(_)
                if missing_tokens_file_ok && tokens.as_ref().is_some_and(|t| t.old.is_none()) =>
            {
                None
            }
            Err(e) => {
                let _ = writeln!(err, "{DOES_NOT_LOAD}");
                return Err(e.into());
            }
        };
        Ok(Current {
            path: real_path(&named)?,
            source,
            text,
            outline,
            config,
            tokens,
        })
    }

    /// Whether a client of this name exists: a tokens-file line or a table. (Without a
    /// config, for `add`, the tokens file does not exist: only tables can name one.)
    fn has(&self, name: &str) -> bool {
        self.outline.table(name).is_some()
            || self
                .config
                .as_ref()
                .is_some_and(|c| c.clients.iter().any(|k| &*k.name == name))
    }

    /// Validates the config text `new` as it would be read with the tokens file `staged` in
    /// place (`None`: the tokens file unchanged). Says on `err` why not, and that nothing was
    /// changed.
    fn check(
        &self,
        new: &str,
        staged: Option<&Staged>,
        err: &mut dyn std::io::Write,
    ) -> anyhow::Result<Config> {
        // Where the tokens file is named in the new text (a table cut out before it moves it).
        let span = toml::from_str::<Outline>(new)
            .ok()
            .and_then(|o| o.server.client_tokens_file)
            .map(|f| f.span());
        let text = match (staged, span) {
            (Some(s), Some(span)) => edit::redirect(new, span, s.path())?,
            _ => new.to_string(),
        };
        Config::parse(&text, self.source.clone()).map_err(|e| {
            let _ = writeln!(
                err,
                "openai-proxy: with this change the config would not be valid; nothing was \
                 changed:"
            );
            e.into()
        })
    }

    /// Replaces the config file's text with `new`.
    fn write_config(&self, new: &str) -> anyhow::Result<()> {
        Staged::new(
            &self.path,
            Some(self.text.as_bytes().to_vec()),
            new.as_bytes(),
        )?
        .commit()
    }

    /// What to run for the proxy to read the change.
    fn reload_hint(&self) -> &'static str {
        match self.source.origin {
            Origin::User => {
                "Reload the proxy to apply: openai-proxy reload --user \
                 (systemctl --user reload openai-proxy)"
            }
            _ => "Reload the proxy to apply: openai-proxy reload (systemctl reload openai-proxy)",
        }
    }
}

/// The loader's own error for the config (exit 78), after a line saying nothing changed.
fn load_error(flag: Option<&Path>, err: &mut dyn std::io::Write) -> anyhow::Error {
    let _ = writeln!(err, "{DOES_NOT_LOAD}");
    match config::load(flag) {
        Err(e) => e.into(),
        Ok(_) => anyhow!("the config changed while it was read: run the command again"),
    }
}

/// Bytes as lowercase hex digits.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A new random token (`op-` and 64 hex digits) and its hash (`sha256:HEX`).
fn new_token() -> anyhow::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow!("no random numbers from the system"))?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let hash = format!("sha256:{}", hex(digest.as_ref()));
    Ok((token, hash))
}

/// `client add`.
fn add(
    cur: &Current,
    c: &NewClient,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let name = parse_name(&c.name).map_err(|e| anyhow!("{}: {e}", c.name))?;
    if cur.has(&name) {
        bail!(
            "a client named {name} exists already: pick another name, or remove it first \
             (openai-proxy client remove {name})"
        );
    }
    let (token, hash) = new_token()?;
    let in_table = cur.tokens.is_none().then_some(hash.as_str());
    let entries = edit::entries(c, in_table);
    let new_text = if entries.is_empty() {
        cur.text.clone()
    } else {
        let added = edit::append(&cur.text, &edit::table(&name, &entries));
        let entry: toml::Table = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        if !edit::changes_only(&cur.text, &added, &name, Some(entry)) {
            bail!(
                "cannot add a [clients.{name}] table at the end of {} (the clients are \
                 written there in another way): add it by hand",
                cur.path.display()
            );
        }
        added
    };
    let staged = match &cur.tokens {
        Some(t) => {
            let old = t.old.as_deref().unwrap_or_default();
            let new = edit::append_line(old, &format!("{name} {hash}"));
            Some(Staged::new(&t.path, t.old.clone(), &new)?)
        }
        None => None,
    };
    let new = cur.check(&new_text, staged.as_ref(), err)?;
    if !new.clients.iter().any(|k| *k.name == *name) {
        bail!("the new client does not show in the config; nothing was changed");
    }
    // The tokens file first: the config as it is then is valid too (a client without limits,
    // whose token nobody has yet).
    let wrote_tokens = staged.is_some();
    if let Some(s) = staged {
        s.commit()?;
    }
    let undo_tokens = || match &cur.tokens {
        Some(t) if wrote_tokens => restore(&t.path, t.old.as_deref()),
        _ => Ok(()),
    };
    if new_text != cur.text {
        if let Err(e) = cur.write_config(&new_text) {
            undo_tokens()?;
            return Err(e);
        }
    }
    if let Err(e) = out
        .write_all(format!("{token}\n").as_bytes())
        .and_then(|()| out.flush())
    {
        // Nobody saw the token: the client goes again (not an I/O error of its own, so that
        // a closed stdout does not pass for success).
        if new_text != cur.text {
            restore(&cur.path, Some(cur.text.as_bytes()))?;
        }
        undo_tokens()?;
        bail!("could not print the token ({e}); the client was not added");
    }
    let mut note = match &cur.tokens {
        Some(t) => format!(
            "Added client {name}: the hash of its token is in {}{}",
            t.path.display(),
            if t.old.is_none() {
                " (a new file, mode 0600)"
            } else {
                ""
            }
        ),
        None => format!(
            "Added client {name}: the hash of its token is in {}",
            cur.path.display()
        ),
    };
    if cur.tokens.is_some() && new_text != cur.text {
        let _ = write!(note, ", its scope and limits in {}", cur.path.display());
    }
    let _ = writeln!(
        err,
        "{note}.\nThe token is shown only this once (on stdout). {}.",
        cur.reload_hint()
    );
    Ok(())
}

/// `client remove`.
fn remove(cur: &Current, name: &str, err: &mut dyn std::io::Write) -> anyhow::Result<()> {
    if !cur.has(name) {
        bail!("there is no client named {name} (`openai-proxy client list` shows them)");
    }
    let mut said = Vec::new();
    let new_text = match cur.outline.table(name) {
        Some((at, _)) => {
            let cut = edit::remove_table(&cur.text, at.start)
                .ok()
                .filter(|t| edit::changes_only(&cur.text, t, name, None))
                .ok_or_else(|| {
                    anyhow!(
                        "cannot find where client {name}'s table ends in {} (it is not written \
                         as a [clients.{name}] table of its own): remove it by hand",
                        cur.path.display()
                    )
                })?;
            said.push(format!(
                "its [clients.{name}] table from {}",
                cur.path.display()
            ));
            cut
        }
        None => cur.text.clone(),
    };
    let mut staged = None;
    if let Some(t) = &cur.tokens {
        let old = std::str::from_utf8(t.old.as_deref().unwrap_or_default())
            .with_context(|| format!("{} is not UTF-8 text", t.path.display()))?;
        let (kept, n) = edit::remove_lines(old, name);
        if n > 0 {
            if ClientTokens::parse(&kept).is_err() {
                bail!(
                    "{name} has the only token of {}, which must hold one: add another client \
                     first (or take client_tokens_file out of the config by hand, which lets \
                     every request in)",
                    t.path.display()
                );
            }
            said.push(format!("{n} line(s) from {}", t.path.display()));
            staged = Some(Staged::new(&t.path, t.old.clone(), kept.as_bytes())?);
        }
    }
    let new = cur.check(&new_text, staged.as_ref(), err)?;
    let before = cur
        .config
        .as_ref()
        .map(|c| c.server.client_tokens.enabled());
    if before == Some(true) && !new.server.client_tokens.enabled() {
        bail!(
            "{name} has the last client token: without it the proxy would let every request \
             in; add another client first"
        );
    }
    if new.clients.iter().any(|k| &*k.name == name) {
        bail!("client {name} would still be there; nothing was changed: remove it by hand");
    }
    // The config first: the config as it is then is valid too (the client without limits,
    // until its token goes a moment later).
    if new_text != cur.text {
        cur.write_config(&new_text)?;
    }
    if let Some(s) = staged {
        if let Err(e) = s.commit() {
            restore(&cur.path, Some(cur.text.as_bytes()))?;
            return Err(e);
        }
    }
    let _ = writeln!(
        err,
        "Removed client {name}: {}.\n{}.",
        said.join(", "),
        cur.reload_hint()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("op-") && a.len() == 67, "{a}");
        let t = ClientTokens::parse(&format!("x {ha}")).unwrap();
        assert!(t.allows_token(a.as_bytes()) && !t.allows_token(b.as_bytes()));
        assert_eq!(ha, ha.to_lowercase());
        assert!(parse_name("bob.x@home").is_ok());
        assert!(parse_name("bob x").is_err() && parse_name("").is_err());
        assert!(parse_name(&"a".repeat(65)).is_err());
    }
}
