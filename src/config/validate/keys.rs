//! What a config names outside itself: key files, environment variables and systemd
//! credentials for a backend's key (and the header it goes in), the client tokens file, CA
//! files, the HTTPS listener's certificate and key. Messages name the file
//! or variable, never a key or a token.

use std::ops::Range;
use std::path::{Path, PathBuf};

use http::HeaderName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::super::diagnostics::{cut, quote, Issues};
use super::super::files::{self, MAX_SECRET_FILE};
use super::super::raw::{RawBackend, RawServer};
use super::super::{AuthPolicy, KeySource, Secret, TlsFiles};
use super::{span, valid_name, NOT_SECRETS};
use crate::config::tokens::ClientTokens;

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
    let header = api_key_header(&key, raw, given.is_empty(), issues)?;
    let loaded = if let Some(var) = &raw.api_key_env {
        let var_name = var.get_ref();
        match std::env::var(var_name) {
            Ok(v) => Secret::from_key(&v, &header)
                .map(|k| (k, KeySource::Env(var_name.clone())))
                .map_err(|e| format!("environment variable ${}: {e}", cut(var_name))),
            Err(_) => Err(format!(
                "environment variable ${} is not set",
                cut(var_name)
            )),
        }
        .map_err(|e| ("api_key_env", var.span(), e))
    } else if let Some(file) = &raw.api_key_file {
        read_key_file(file.get_ref(), &header)
            .map(|k| (k, KeySource::File(file.get_ref().clone())))
            .map_err(|e| ("api_key_file", file.span(), e))
    } else if let Some(cred) = &raw.api_key_credential {
        load_credential(cred.get_ref(), &header).map_err(|e| ("api_key_credential", cred.span(), e))
    } else {
        return Some(if raw.forward_client_auth.unwrap_or(false) {
            AuthPolicy::Forward
        } else {
            AuthPolicy::Strip
        });
    };
    match loaded {
        Ok((key, source)) => Some(AuthPolicy::Inject {
            key,
            header,
            source,
        }),
        Err((k, span, msg)) => {
            issues.add(key(k), Some(span), msg);
            None
        }
    }
}

/// `api_key_header`: the header the injected key goes in (`Authorization`, as `Bearer KEY`,
/// unless set; any other header gets the bare key). Only with a key source; not a header the
/// proxy needs or removes as hop-by-hop.
fn api_key_header(
    key: &impl Fn(&str) -> String,
    raw: &RawBackend,
    no_key: bool,
    issues: &mut Issues<'_>,
) -> Option<HeaderName> {
    let Some(h) = &raw.api_key_header else {
        return Some(http::header::AUTHORIZATION);
    };
    let problem = match HeaderName::from_bytes(h.get_ref().trim().as_bytes()) {
        Err(_) => format!("{} is not a valid header name", quote(h.get_ref())),
        Ok(_) if no_key => "only applies with a key to inject (api_key_file, api_key_env or \
                            api_key_credential)"
            .to_string(),
        Ok(name) if NOT_SECRETS.contains(&name.as_str()) || HOP_BY_HOP.contains(&name.as_str()) => {
            format!(
                "{} cannot carry the key: the proxy sets or removes that header itself",
                quote(h.get_ref())
            )
        }
        Ok(name) => return Some(name),
    };
    issues.add(key("api_key_header"), Some(h.span()), problem);
    None
}

/// Headers that describe a connection, not a request: the proxy removes them.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// A key from systemd's `LoadCredential=` (`$CREDENTIALS_DIRECTORY/NAME`).
fn load_credential(name: &str, header: &HeaderName) -> Result<(Secret, KeySource), String> {
    if !valid_name(name) {
        return Err("credential names may use only letters, digits, '-' and '_'".into());
    }
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or(
        "$CREDENTIALS_DIRECTORY is not set (systemd sets it when the unit has LoadCredential=)",
    )?;
    let file = PathBuf::from(dir).join(name);
    let key = read_key_file(&file, header)?;
    Ok((key, KeySource::Credential(name.to_string(), file)))
}

fn read_key_file(path: &Path, header: &HeaderName) -> Result<Secret, String> {
    const WHAT: &str = "key file";
    let text = files::read_text(path, MAX_SECRET_FILE).map_err(|e| e.about(WHAT, path))?;
    Secret::from_key(&text, header)
        .map_err(|e| format!("{WHAT} {}: {e}", cut(&path.to_string_lossy())))
}

/// `server.tls_cert` and `server.tls_key`: both or neither; PEM files, read without blocking,
/// whose key matches the certificate.
pub(super) fn tls_files(raw: &RawServer, issues: &mut Issues<'_>) -> Option<TlsFiles> {
    let (cert, key) = match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            issues.add(
                "server.tls_cert",
                Some(c.span()),
                "needs server.tls_key too (the certificate's private key, PEM)",
            );
            return None;
        }
        (None, Some(k)) => {
            issues.add(
                "server.tls_key",
                Some(k.span()),
                "needs server.tls_cert too (the certificate chain, PEM)",
            );
            return None;
        }
    };
    let cert_pem = files::read_regular(cert.get_ref(), MAX_SECRET_FILE)
        .map_err(|e| {
            issues.add(
                "server.tls_cert",
                Some(cert.span()),
                e.about("certificate file", cert.get_ref()),
            )
        })
        .ok();
    let key_pem = files::read_regular(key.get_ref(), MAX_SECRET_FILE)
        .map_err(|e| {
            issues.add(
                "server.tls_key",
                Some(key.span()),
                e.about("key file", key.get_ref()),
            )
        })
        .ok();
    let (cert_pem, key_pem) = (cert_pem?, key_pem?);
    match crate::config::tls::server_config(&cert_pem, &key_pem) {
        Ok(server) => Some(TlsFiles {
            cert_file: cert.get_ref().clone(),
            key_file: key.get_ref().clone(),
            server: std::sync::Arc::new(server),
        }),
        Err(crate::config::tls::PemProblem::Cert(e)) => {
            let shown = cut(&cert.get_ref().to_string_lossy()).into_owned();
            issues.add(
                "server.tls_cert",
                Some(cert.span()),
                format!("{shown}: {e}"),
            );
            None
        }
        Err(crate::config::tls::PemProblem::Key(e)) => {
            let shown = cut(&key.get_ref().to_string_lossy()).into_owned();
            issues.add("server.tls_key", Some(key.span()), format!("{shown}: {e}"));
            None
        }
        Err(crate::config::tls::PemProblem::Pair(e)) => {
            issues.add(
                "server.tls_key",
                Some(key.span()),
                format!(
                    "the key in {} does not go with the certificate in {}: {e}",
                    cut(&key.get_ref().to_string_lossy()),
                    cut(&cert.get_ref().to_string_lossy())
                ),
            );
            None
        }
    }
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
