//! The launchd plists in contrib/launchd are what the `launchd` crate's model generates for
//! our job (a LaunchAgent and a LaunchDaemon with a `Sockets` entry named `http`), so they stay
//! valid. `OPENAI_PROXY_BLESS=1 cargo test launchd` rewrites them after a deliberate change.

use std::collections::HashMap;

use launchd::sockets::{SocketFamily, SocketOptions, SocketType, Sockets};
use launchd::Launchd;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/launchd");

fn job(daemon: bool) -> Launchd {
    let socket = SocketOptions::new()
        .with_type(SocketType::Stream)
        .with_family(SocketFamily::IPv4)
        .with_node_name("127.0.0.1")
        .with_service_name("2020");
    let mut job = Launchd::new("org.openai-proxy", "/usr/local/bin/openai-proxy")
        .unwrap()
        .with_program_arguments(vec!["/usr/local/bin/openai-proxy".into(), "serve".into()])
        .with_socket(Sockets::Dictionary(HashMap::from([(
            "http".to_string(),
            socket,
        )])))
        .with_standard_error_path(if daemon {
            "/Library/Logs/openai-proxy.log"
        } else {
            "/usr/local/var/log/openai-proxy.log"
        })
        .unwrap();
    if daemon {
        job = job.with_user_name("nobody").with_group_name("nobody");
    }
    job
}

fn check(file: &str, daemon: bool) {
    let path = format!("{DIR}/{file}");
    let mut expected = Vec::new();
    job(daemon).to_writer_xml(&mut expected).unwrap();
    if std::env::var_os("OPENAI_PROXY_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{path} differs from the launchd model; run OPENAI_PROXY_BLESS=1 cargo test launchd"
    );
    let parsed = Launchd::from_file(&path).expect("a valid launchd plist");
    assert_eq!(parsed, job(daemon));
}

#[test]
fn launch_agent_plist_is_valid_and_current() {
    check("org.openai-proxy.plist", false);
}

#[test]
fn launch_daemon_plist_is_valid_and_current() {
    check("org.openai-proxy.daemon.plist", true);
}
