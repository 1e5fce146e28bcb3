//! What a config names outside itself: key files, environment variables and systemd
//! credentials for a backend's key, the client tokens file, CA files. Messages name the file
//! or variable, never a key or a token.

use std::ops::Range;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::super::diagnostics::{cut, Issues};
use super::super::files::{self, MAX_SECRET_FILE};
use super::super::raw::RawBackend;
use super::super::{AuthPolicy, KeySource, Secret};
use super::{span, valid_name};
use crate::tokens::ClientTokens;

/// Reads `server.client_tokens_file`. Messages name the file and line, never a token.
pub(super) fn read_tokens(path: &Path) -> Result<ClientTokens, String> {
    const WHAT: &str = "client tokens file";
    let text = files::read_text(path, MAX_SECRET_FILE).map_err(|e| e.about(WHAT, path))?;
    let mut tokens = ClientTokens::parse(&text)
        .map_err(|e| format!("{WHAT} {}: {e}", cut(&path.to_string_lossy())))?;
    tokens.file = Some(path.to_path_buf());
    Ok(tokens)
}

pub(super) fn validate_auth(
    name: &str,
    raw: &RawBackend,
    issues: &mut Issues<'_>,
) -> Option<AuthPolicy> {
    let key = |k: &str| format!("backends.{}.{k}", cut(name));
    let given: Vec<(&str, Option<Range<usize>>)> = [
        ("api_key_env", span(&raw.api_key_env)),
        ("api_key_file", span(&raw.api_key_file)),
        ("api_key_credential", span(&raw.api_key_credential)),
    ]
    .into_iter()
    .filter(|(_, s)| s.is_some())
    .collect();
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
        issues.add(
            key(given[1].0),
            given[1].1.clone(),
            format!("set only one of {}", names.join(", ")),
        );
        return None;
    }
    let loaded = if let Some(var) = &raw.api_key_env {
        let var_name = var.get_ref();
        match std::env::var(var_name) {
            Ok(v) => Secret::from_key(&v)
                .map(|k| (k, KeySource::Env(var_name.clone())))
                .map_err(|e| format!("environment variable ${}: {e}", cut(var_name))),
            Err(_) => Err(format!(
                "environment variable ${} is not set",
                cut(var_name)
            )),
        }
        .map_err(|e| ("api_key_env", var.span(), e))
    } else if let Some(file) = &raw.api_key_file {
        read_key_file(file.get_ref())
            .map(|k| (k, KeySource::File(file.get_ref().clone())))
            .map_err(|e| ("api_key_file", file.span(), e))
    } else if let Some(cred) = &raw.api_key_credential {
        load_credential(cred.get_ref()).map_err(|e| ("api_key_credential", cred.span(), e))
    } else {
        return Some(if raw.forward_client_auth.unwrap_or(false) {
            AuthPolicy::Forward
        } else {
            AuthPolicy::Strip
        });
    };
    match loaded {
        Ok((key, source)) => Some(AuthPolicy::Inject { key, source }),
        Err((k, span, msg)) => {
            issues.add(key(k), Some(span), msg);
            None
        }
    }
}

/// A key from systemd's `LoadCredential=` (`$CREDENTIALS_DIRECTORY/NAME`).
fn load_credential(name: &str) -> Result<(Secret, KeySource), String> {
    if !valid_name(name) {
        return Err("credential names may use only letters, digits, '-' and '_'".into());
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or(
        "$CREDENTIALS_DIRECTORY is not set (systemd sets it when the unit has LoadCredential=)",
    )?;
    let file = PathBuf::from(dir).join(name);
    let key = read_key_file(&file)?;
    Ok((key, KeySource::Credential(name.to_string(), file)))
}

fn read_key_file(path: &Path) -> Result<Secret, String> {
    const WHAT: &str = "key file";
    let text = files::read_text(path, MAX_SECRET_FILE).map_err(|e| e.about(WHAT, path))?;
    Secret::from_key(&text).map_err(|e| format!("{WHAT} {}: {e}", cut(&path.to_string_lossy())))
}

pub(super) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = files::read_regular(path, MAX_SECRET_FILE).map_err(|e| e.about("CA file", path))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let shown = cut(&path.to_string_lossy()).into_owned();
    let certs = certs.map_err(|e| format!("CA file {shown} is not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {shown} contains no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}
