//! The Debian packages the tests need beyond the Rust toolchain: which are missing, and their
//! installation with apt-get, as root or through `sudo -n`. Without either, the task stops
//! and names the packages and the command that installs them.

use std::process::Command;

use crate::project::Project;
use crate::step::{self, succeeds};
use crate::{Error, Result};

/// A package the tests need, and how to see that it is there.
struct Need {
    package: &'static str,
    /// A program it brings: found on PATH (or in an sbin directory) means there, whichever
    /// package brought it (nginx-light brings nginx too). `None`: ask dpkg.
    program: Option<&'static str>,
}

const fn program(package: &'static str, program: &'static str) -> Need {
    Need {
        package,
        program: Some(program),
    }
}

const fn package(package: &'static str) -> Need {
    Need {
        package,
        program: None,
    }
}

/// The packages, by what needs them. The names are Debian 12's and 13's (and Ubuntu's).
const NEEDS: &[Need] = &[
    // The service tests: systemd-analyze, systemd-socket-activate, a real `systemd --user`
    // (tests/tools/systemd-user-sandbox; systemctl reaches it without a session bus, so
    // dbus-user-session is not needed), and curl in their scripts.
    program("systemd", "systemd-analyze"),
    program("curl", "curl"),
    // The packaging tests: the .deb, the .rpm, the Homebrew formula and the compose file
    // (ruby), the completions, the man pages; git archive for the source tarball.
    program("lintian", "lintian"),
    program("rpm", "rpm"),
    program("rpmlint", "rpmlint"),
    program("ruby", "ruby"),
    program("zsh", "zsh"),
    program("fish", "fish"),
    program("man-db", "man"),
    program("git", "git"),
    // The release tests: signing, checking signatures (Debian 13's apt no longer brings gpgv),
    // the APT and RPM repositories.
    program("gnupg", "gpg"),
    program("gpgv", "gpgv"),
    program("reprepro", "reprepro"),
    program("createrepo-c", "createrepo_c"),
    // The load test (wrk) and the benchmark harness's smoke test (wrk, haproxy, nginx).
    program("wrk", "wrk"),
    program("haproxy", "haproxy"),
    program("nginx", "nginx"),
    // The page's tests in a real browser (tests/machine/page.rs): headless Chromium.
    program("chromium", "chromium"),
    // The OpenAI Python SDK's virtual environment (python3 -m venv, with pip), and the
    // downloads from crates.io and PyPI.
    package("python3-venv"),
    package("ca-certificates"),
    // Node.js and npm: Claude Code and Codex CLI, installed from npm (npm.rs); Codex starts
    // through node.
    program("nodejs", "node"),
    program("npm", "npm"),
];

/// The needed packages that are not there, in [`NEEDS`]' order.
fn missing(project: &Project) -> Vec<&'static str> {
    let by_dpkg: Vec<&str> = NEEDS
        .iter()
        .filter(|n| n.program.is_none())
        .map(|n| n.package)
        .collect();
    let installed = dpkg_installed(project, &by_dpkg);
    NEEDS
        .iter()
        .filter(|n| match n.program {
            Some(p) => !project.has_program(p),
            None => !installed.contains(&n.package),
        })
        .map(|n| n.package)
        .collect()
}

/// Which of `packages` dpkg knows as installed (none, where there is no dpkg).
fn dpkg_installed<'a>(project: &Project, packages: &[&'a str]) -> Vec<&'a str> {
    let out = project
        .command("dpkg-query")
        .args([
            "--show",
            "--showformat",
            "${Package} ${db:Status-Abbrev}\\n",
        ])
        .args(packages)
        .stderr(std::process::Stdio::null())
        .output();
    // dpkg-query exits 1 when one of them is unknown, and still lists the others.
    let Ok(out) = out else { return Vec::new() };
    let text = String::from_utf8_lossy(&out.stdout);
    packages
        .iter()
        .copied()
        .filter(|p| {
            text.lines()
                .any(|l| l.split_once(' ') == Some((p, "ii ")) || l == format!("{p} ii"))
        })
        .collect()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0"),
    }
}

/// Installs the missing packages; an error that names them when it cannot.
pub fn install(project: &Project) -> Result {
    let missing = missing(project);
    if missing.is_empty() {
        say!("all {} packages the tests need are there", NEEDS.len());
        return Ok(());
    }
    say!("missing: {}", missing.join(" "));
    if !project.has_program("apt-get") || !project.has_program("dpkg-query") {
        return Err(cannot_install(
            &missing,
            "this is not a Debian or Ubuntu system (no apt-get): install the equivalents of \
             these packages with the system's package manager, then run `cargo xtask test \
             --no-setup`",
        ));
    }
    // As root, apt-get itself; otherwise through sudo, if it needs no password.
    let via_sudo = if is_root() {
        false
    } else if succeeds(project.command("sudo").args(["-n", "true"])) {
        say!("not root: installing through sudo");
        true
    } else {
        return Err(cannot_install(
            &missing,
            "installing them needs root, and `sudo -n` cannot run commands here (no sudo, or \
             it asks for a password)",
        ));
    };
    let apt_get = |args: &[&str]| -> Command {
        let mut cmd = if via_sudo {
            let mut sudo = project.command("sudo");
            sudo.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
            sudo
        } else {
            project.command("apt-get")
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args);
        cmd
    };
    step::run(&mut apt_get(&["update", "-q"]))?;
    step::run(apt_get(&["install", "-y", "-q", "--no-install-recommends"]).args(&missing))?;
    let still = self::missing(project);
    if still.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "apt-get installed the packages, but these are still not there: {}",
            still.join(" ")
        )))
    }
}

/// The message for packages the task cannot install: which, why, and the command.
fn cannot_install(missing: &[&str], why: &str) -> Error {
    Error::new(format!(
        "the tests need these Debian packages, which are not installed:\n    {}\n\
         {why}.\nInstall them as root:\n    sudo apt-get install --no-install-recommends {}\n\
         then run `cargo xtask test` again.",
        missing.join(" "),
        missing.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_package_is_named_once() {
        let mut names: Vec<&str> = NEEDS.iter().map(|n| n.package).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    #[test]
    fn the_message_names_the_packages_and_the_command() {
        let e = cannot_install(&["wrk", "rpm"], "no root").to_string();
        assert!(e.contains("\n    wrk rpm\nno root.\n"), "{e}");
        assert!(
            e.contains("sudo apt-get install --no-install-recommends wrk rpm"),
            "{e}"
        );
        assert!(e.contains("cargo xtask test"), "{e}");
    }
}
