//! The machine's package state, for the tests that install the .deb for real
//! (`packaging.rs`, `release.rs`). They share one dpkg database and one /etc/openai-proxy, so
//! they take turns: [`PackageSlot`] holds a file lock (also against a test run from another
//! checkout on the same machine) and purges the package however the test ends.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};

/// Where the lock lives: outside any checkout, so every test run on the machine sees it.
const LOCK: &str = "/tmp/openai-proxy-tests-package.lock";

pub fn apt_get(args: &[&str]) -> Output {
    Command::new("apt-get")
        .args(["-y", "-q", "-o", "DPkg::Lock::Timeout=300"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap()
}

/// dpkg's word for the package ("installed", "config-files", ...; empty if never seen).
pub fn dpkg_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Status}", "openai-proxy"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A run killed while dpkg worked (a test stopped half-way through `apt-get install`, say) leaves
/// dpkg "interrupted": every later apt-get refuses until `dpkg --configure -a` has finished the
/// job. The package tests hold the machine's dpkg through the slot, so they finish it first.
fn finish_an_interrupted_dpkg() {
    let audit = Command::new("dpkg").arg("--audit").output().unwrap();
    if audit.stdout.is_empty() {
        return;
    }
    eprintln!(
        "dpkg was interrupted; finishing with dpkg --configure -a:\n{}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let out = Command::new("dpkg")
        .args(["--configure", "-a"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg --configure -a failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The right to install the package on this machine, while it is held. Taking it waits for
/// the other holders, removes a leftover of an interrupted run (the package is ours), and
/// checks that nothing else is in the way; dropping it purges the package.
pub struct PackageSlot {
    /// Held open: the `flock` lasts as long as the file, released after `drop` purged.
    _lock: File,
}

impl PackageSlot {
    pub fn take() -> PackageSlot {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .unwrap_or_else(|e| panic!("cannot open {LOCK}: {e}"));
        // SAFETY: flock(2) on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {LOCK}: {}", std::io::Error::last_os_error());
        let slot = PackageSlot { _lock: file };
        finish_an_interrupted_dpkg();
        if !matches!(dpkg_status().as_str(), "" | "not-installed") {
            slot.purge();
        }
        assert!(
            !Path::new("/etc/openai-proxy").exists(),
            "/etc/openai-proxy exists but openai-proxy is not installed: not touching it"
        );
        slot
    }

    /// `apt-get purge openai-proxy`, keeping the slot (to check what is left, say).
    pub fn purge(&self) {
        let out = apt_get(&["purge", "openai-proxy"]);
        if !out.status.success() {
            eprintln!(
                "apt-get purge openai-proxy failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for PackageSlot {
    fn drop(&mut self) {
        self.purge();
    }
}

/// Runs `bash SCRIPT` (from tests/scripts/) in a real `systemd --user`
/// (tests/tools/systemd-user-sandbox) that finds the installed package's user units in
/// /usr/lib/systemd/user, with `env`; fails the test with its output (and `DIR/upgrade.log`'s
/// if `DIR` is set and holds one) unless the script says "ALL OK".
pub async fn in_user_manager(script: &str, env: Vec<(&'static str, String)>) {
    super::tools::require_user_manager();
    let root = env!("CARGO_MANIFEST_DIR");
    let units = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(format!("{root}/tests/tools/systemd-user-sandbox"));
    cmd.arg(units.path())
        .arg("bash")
        .arg(format!("{root}/tests/scripts/{script}"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        // The user manager hands its environment to its services.
        .env_remove("OPENAI_PROXY_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    eprintln!("{log}");
    let upgrade_log = env
        .iter()
        .find(|(k, _)| *k == "DIR")
        .and_then(|(_, dir)| std::fs::read_to_string(Path::new(dir).join("upgrade.log")).ok())
        .unwrap_or_default();
    assert!(
        out.status.success() && log.contains("ALL OK"),
        "{script} in a systemd user manager:\n{log}\n{}\n{upgrade_log}",
        String::from_utf8_lossy(&out.stderr)
    );
}
