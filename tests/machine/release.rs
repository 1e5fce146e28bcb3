//! The release channels, made by `packaging/release` with a throwaway signing key: the package
//! changelogs generated from CHANGELOG.md; the signed RPM repository (`rpm -K`,
//! `repomd.xml.asc`); the Homebrew tap; and the signed APT repository, served on 127.0.0.1 and
//! used for real: the README's commands install the package, the next version (built from a
//! copy of the tree with the version bumped) upgrades it under a running socket-activated
//! service while an edited config stays, and a tampered `Release` is refused.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use crate::packaging::{run, stdout};
use crate::support::activation::free_port;
use crate::support::bin;
use crate::support::machine::{dpkg_status, in_user_manager, PackageSlot};
use crate::support::mock::Mock;
use crate::support::tools::{python, require, require_root};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Where README.md says the repositories are published (packaging/release's default).
const BASE_URL: &str = "https://openai-proxy.github.io/packages";

/// TARGET, where the binary under test was built (TARGET/debug/openai-proxy).
fn target_dir() -> PathBuf {
    Path::new(bin::exe())
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in TARGET/debug/")
        .to_path_buf()
}

/// This file's own corner of the target directory.
fn work_dir() -> PathBuf {
    target_dir().join("release-tests")
}

/// A fresh directory at `path` (mode 0755: apt's unprivileged `_apt` user reads below it).
fn fresh_dir(path: &Path) -> PathBuf {
    if path.exists() {
        std::fs::remove_dir_all(path).unwrap();
    }
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sha256(path: &Path) -> String {
    stdout(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The throwaway signing key: a keyring of its own, the secret key exported to a file (as a
/// release machine would get it), and the public key as apt's keyring.
struct Key {
    home: PathBuf,
    fingerprint: String,
    secret_file: PathBuf,
}

impl Key {
    fn generate(home: &Path) -> Key {
        let home = fresh_dir(home);
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let gpg = |args: &[&str]| {
            Command::new("gpg")
                .env("GNUPGHOME", &home)
                .args(args)
                .output()
        };
        let out = gpg(&[
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "openai-proxy release test <release-test@openai-proxy.invalid>",
            "rsa3072",
            "sign",
            "never",
        ])
        .unwrap();
        assert!(out.status.success(), "gpg --quick-gen-key: {}", text(&out));
        let list = gpg(&["--batch", "--with-colons", "--list-secret-keys"]).unwrap();
        let fingerprint = String::from_utf8_lossy(&list.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .expect("the new key's fingerprint")
            .to_string();
        let secret_file = home.join("secret-key.asc");
        let out = gpg(&[
            "--batch",
            "--armor",
            "--output",
            secret_file.to_str().unwrap(),
            "--export-secret-keys",
            &fingerprint,
        ])
        .unwrap();
        assert!(
            out.status.success(),
            "gpg --export-secret-keys: {}",
            text(&out)
        );
        Key {
            home,
            fingerprint,
            secret_file,
        }
    }

    /// Ends the gpg-agent that gpg started for this keyring.
    fn stop_agent(&self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.home)
            .output();
    }
}

/// What `packaging/release` laid out.
struct Published {
    out: PathBuf,
    version: String,
}

impl Published {
    fn site(&self) -> PathBuf {
        self.out.join("site")
    }

    fn dist(&self) -> PathBuf {
        self.out.join("dist")
    }

    fn deb_name(&self) -> String {
        format!("openai-proxy_{}-1_{}.deb", self.version, deb_arch())
    }

    fn rpm_name(&self) -> String {
        format!(
            "openai-proxy-{}-1.{}.rpm",
            self.version,
            std::env::consts::ARCH
        )
    }

    fn keyring(&self) -> PathBuf {
        self.site().join("openai-proxy-archive-keyring.gpg")
    }
}

fn deb_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// Fails the test unless what `packaging/release` runs is installed.
fn require_release_tools() {
    for (tool, package) in [
        ("gpg", "gnupg"),
        ("reprepro", "reprepro"),
        ("createrepo_c", "createrepo-c"),
        ("rpmsign", "rpm"),
        ("dpkg-deb", "dpkg"),
        ("git", "git"),
        ("python3", "python3"),
    ] {
        require(tool, package);
    }
}

/// Runs `TREE/packaging/release --no-image --out OUT` with `env`; fails the test unless it
/// succeeds.
fn release(tree: &Path, out: &Path, env: &[(&str, &Path)], extra: &[&str]) -> Output {
    require_release_tools();
    let mut cmd = Command::new(tree.join("packaging/release"));
    cmd.arg("--no-image")
        .arg("--out")
        .arg(out)
        .args(extra)
        .env_remove("OPENAI_PROXY_SIGNING_KEY")
        .env_remove("OPENAI_PROXY_SIGNING_KEY_FILE")
        .env_remove("OPENAI_PROXY_SIGNING_PASSPHRASE_FILE")
        .env_remove("GNUPGHOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        tree.join("packaging/release").display(),
        text(&out)
    );
    out
}

/// The key, and this version released with it (built once for all tests here). The release
/// runs on this tree with the key named by fingerprint in its keyring.
fn published() -> &'static (Key, Published) {
    static PUBLISHED: OnceLock<(Key, Published)> = OnceLock::new();
    PUBLISHED.get_or_init(|| {
        require_release_tools();
        let key = Key::generate(&work_dir().join("gnupg"));
        let out = work_dir().join(format!("publish-{VERSION}"));
        let target = target_dir();
        let fingerprint = PathBuf::from(&key.fingerprint);
        release(
            Path::new(ROOT),
            &out,
            &[
                ("CARGO_TARGET_DIR", &target),
                ("GNUPGHOME", &key.home),
                ("OPENAI_PROXY_SIGNING_KEY", &fingerprint),
            ],
            // The tree under test may have uncommitted changes (CI's never has).
            &["--allow-dirty"],
        );
        key.stop_agent();
        (
            key,
            Published {
                out,
                version: VERSION.into(),
            },
        )
    })
}

/// The version after this one (patch + 1).
fn next_version() -> String {
    let mut parts: Vec<u64> = VERSION
        .split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap())
        .collect();
    parts[2] += 1;
    format!("{}.{}.{}", parts[0], parts[1], parts[2])
}

/// A copy of this tree (the files git knows of, as they are now) at `dest`, a git repository
/// of one commit, with `edit` applied first.
fn copy_tree(dest: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let tree = fresh_dir(dest);
    let files = run(Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(ROOT))
    .stdout;
    for rel in files.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rel = std::str::from_utf8(rel).unwrap();
        let from = Path::new(ROOT).join(rel);
        if from.is_file() {
            let to = tree.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
    edit(&tree);
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args([
                "-c",
                "user.name=release test",
                "-c",
                "user.email=release-test@openai-proxy.invalid",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(&tree))
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "release test"]);
    tree
}

/// Edits `file` under `tree`: `from` (which must be there) becomes `to`, once.
fn patch(tree: &Path, file: &str, from: &str, to: &str) {
    let path = tree.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} lacks {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// Sets the version to `next` the way a release does (Cargo.toml, Cargo.lock, a CHANGELOG.md
/// section), and changes the packaged example config.
fn bump(tree: &Path, next: &str) {
    patch(
        tree,
        "Cargo.toml",
        &format!("\nversion = \"{VERSION}\"\n"),
        &format!("\nversion = \"{next}\"\n"),
    );
    patch(
        tree,
        "Cargo.lock",
        &format!("name = \"openai-proxy\"\nversion = \"{VERSION}\"\n"),
        &format!("name = \"openai-proxy\"\nversion = \"{next}\"\n"),
    );
    let changelog = std::fs::read_to_string(tree.join("CHANGELOG.md")).unwrap();
    let heading = format!("## [{VERSION}] - ");
    let at = changelog
        .find(&heading)
        .expect("CHANGELOG.md has this version")
        + heading.len();
    let date = &changelog[at..at + 10];
    patch(
        tree,
        "CHANGELOG.md",
        &heading,
        &format!("## [{next}] - {date}\n\n### Fixed\n- The release test's upgrade.\n\n{heading}"),
    );
    let config = tree.join("config/openai-proxy.toml");
    let mut example = std::fs::read_to_string(&config).unwrap();
    example.push_str("\n# (a line the next version adds to the example config)\n");
    std::fs::write(config, example).unwrap();
}

/// The next version, released from a bumped copy of this tree with the same key, given as a
/// key file. The copy's own target directory gets the binary; the compiled dependencies are
/// this tree's (cargo's build-dir), so only the crate itself is compiled again.
fn publish_next(key: &Key) -> Published {
    let next = next_version();
    let tree = copy_tree(&work_dir().join("next-tree"), |tree| {
        bump(tree, &next);
        run(&mut Command::new(tree.join("packaging/changelog")));
    });
    let out = work_dir().join(format!("publish-{next}"));
    let target = target_dir();
    release(
        &tree,
        &out,
        &[
            ("CARGO_TARGET_DIR", &work_dir().join("next-target")),
            ("CARGO_BUILD_BUILD_DIR", &target),
            ("OPENAI_PROXY_SIGNING_KEY_FILE", &key.secret_file),
        ],
        &[],
    );
    Published { out, version: next }
}

// ---------------------------------------------------------------------------------------------
// Changelogs

#[test]
fn package_changelogs_are_generated_from_changelog_md() {
    require("python3", "python3");
    require("git", "git");
    // The committed ones are current ...
    let out = Command::new(format!("{ROOT}/packaging/changelog"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let deb = std::fs::read_to_string(format!("{ROOT}/packaging/deb/changelog")).unwrap();
    assert!(deb.starts_with(&format!(
        "openai-proxy ({VERSION}-1) unstable; urgency=medium\n"
    )));
    let rpm = std::fs::read_to_string(format!("{ROOT}/packaging/rpm/changelog")).unwrap();
    assert!(
        rpm.starts_with("* ")
            && rpm
                .lines()
                .next()
                .unwrap()
                .ends_with(&format!(" - {VERSION}-1")),
        "{rpm}"
    );
    // ... and every entry of CHANGELOG.md's version section is in both.
    let changelog = std::fs::read_to_string(format!("{ROOT}/CHANGELOG.md")).unwrap();
    let section = changelog
        .split(&format!("## [{VERSION}]"))
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let flat = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for entry in section.split("\n- ").skip(1) {
        let words = flat(&entry.split("\n\n").next().unwrap().replace('`', ""));
        assert!(
            flat(&deb).contains(&words),
            "the Debian changelog lacks {words:?}"
        );
        assert!(
            flat(&rpm).contains(&words),
            "the RPM changelog lacks {words:?}"
        );
    }

    // A version in Cargo.toml without its section is an error that says what to add; with
    // the section, the generator writes both files, with the new version on top.
    let next = next_version();
    let tree = copy_tree(&work_dir().join("changelog-tree"), |tree| {
        patch(
            tree,
            "Cargo.toml",
            &format!("\nversion = \"{VERSION}\"\n"),
            &format!("\nversion = \"{next}\"\n"),
        );
    });
    let generator = tree.join("packaging/changelog");
    let out = Command::new(&generator).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("add '## [{next}] - YYYY-MM-DD'")),
        "{}",
        text(&out)
    );
    patch(
        &tree,
        "CHANGELOG.md",
        &format!("## [{VERSION}] - "),
        &format!("## [{next}] - 2099-01-01\n\n### Fixed\n- A `fix`.\n\n## [{VERSION}] - "),
    );
    let out = Command::new(&generator).arg("--check").output().unwrap();
    assert!(!out.status.success(), "--check passed stale changelogs");
    run(&mut Command::new(&generator));
    let deb = std::fs::read_to_string(tree.join("packaging/deb/changelog")).unwrap();
    assert!(
        deb.starts_with(&format!(
            "openai-proxy ({next}-1) unstable; urgency=medium\n\n  * Fixed: A fix.\n\n \
             -- The openai-proxy developers <maintainers@openai-proxy.invalid>  \
             Thu, 01 Jan 2099 00:00:00 +0000\n\nopenai-proxy ({VERSION}-1) "
        )),
        "{deb}"
    );
    let rpm = std::fs::read_to_string(tree.join("packaging/rpm/changelog")).unwrap();
    assert!(
        rpm.starts_with(&format!(
            "* Thu Jan 01 2099 The openai-proxy developers <maintainers@openai-proxy.invalid> \
             - {next}-1\n- Fixed: A fix.\n\n* "
        )),
        "{rpm}"
    );
    run(Command::new(&generator).arg("--check"));
}

#[test]
fn release_needs_a_signing_key() {
    require_release_tools();
    let out = Command::new(format!("{ROOT}/packaging/release"))
        .args(["--no-image", "--out"])
        .arg(work_dir().join("no-key"))
        .env_remove("OPENAI_PROXY_SIGNING_KEY")
        .env_remove("OPENAI_PROXY_SIGNING_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no signing key"), "{}", text(&out));
    assert!(!work_dir().join("no-key").exists());
}

// ---------------------------------------------------------------------------------------------
// RPM repository, Homebrew tap

#[test]
fn rpm_repository_and_packages_are_signed_with_the_release_key() {
    let (key, published) = published();
    let site = published.site();
    let rpm = site.join("rpm").join(published.rpm_name());
    // The repository's package is the release's, whose checksum SHA256SUMS has, signed.
    assert_eq!(
        std::fs::read(&rpm).unwrap(),
        std::fs::read(published.dist().join(published.rpm_name())).unwrap()
    );
    run(Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(published.dist()));
    require("gpgv", "gpgv");
    let gpgv = |sig: &Path, data: &Path| {
        Command::new("gpgv")
            .arg("--keyring")
            .arg(published.keyring())
            .arg(sig)
            .arg(data)
            .output()
            .unwrap()
    };
    let out = gpgv(
        &published.dist().join("SHA256SUMS.asc"),
        &published.dist().join("SHA256SUMS"),
    );
    assert!(out.status.success(), "SHA256SUMS.asc: {}", text(&out));

    // rpm -K: the signature checks with the key imported into a scratch rpm database, and not
    // without it.
    require("rpm", "rpm");
    let db = tempfile::tempdir().unwrap();
    let rpmdb = |args: &[&str]| {
        Command::new("rpm")
            .arg("--dbpath")
            .arg(db.path())
            .args(args)
            .output()
            .unwrap()
    };
    let unknown = rpmdb(&["-K", rpm.to_str().unwrap()]);
    assert!(
        !unknown.status.success() && text(&unknown).contains("SIGNATURES NOT OK"),
        "rpm -K without the key: {}",
        text(&unknown)
    );
    let armored = site.join("openai-proxy.asc");
    let out = rpmdb(&["--import", armored.to_str().unwrap()]);
    assert!(out.status.success(), "rpm --import: {}", text(&out));
    let out = rpmdb(&["-K", rpm.to_str().unwrap()]);
    assert!(
        out.status.success() && text(&out).contains("digests signatures OK"),
        "rpm -K: {}",
        text(&out)
    );
    // The package carries the changelog generated from CHANGELOG.md.
    let listed = stdout(Command::new("rpm").arg("-qlp").arg(&rpm));
    assert!(listed
        .lines()
        .any(|l| l == "/usr/share/doc/openai-proxy/changelog"));

    // createrepo_c's metadata lists the package by its checksum; repomd.xml is signed.
    let repodata = site.join("rpm/repodata");
    let repomd = std::fs::read_to_string(repodata.join("repomd.xml")).unwrap();
    let primary = repomd
        .split("<location href=\"")
        .filter_map(|l| l.split('"').next())
        .find(|l| l.ends_with("-primary.xml.gz"))
        .expect("repomd.xml names primary.xml.gz");
    let primary = String::from_utf8(
        run(Command::new("gzip")
            .arg("-dc")
            .arg(site.join("rpm").join(primary)))
        .stdout,
    )
    .unwrap();
    assert!(primary.contains(" packages=\"1\""), "{primary}");
    assert!(primary.contains(&format!("<location href=\"{}\"/>", published.rpm_name())));
    assert!(primary.contains(&format!(
        "<checksum type=\"sha256\" pkgid=\"YES\">{}</checksum>",
        sha256(&rpm)
    )));
    let asc = repodata.join("repomd.xml.asc");
    let out = gpgv(&asc, &repodata.join("repomd.xml"));
    assert!(out.status.success(), "repomd.xml.asc: {}", text(&out));
    let out = Command::new("gpg")
        .args(["--batch", "--no-autostart", "--verify"])
        .arg(&asc)
        .arg(repodata.join("repomd.xml"))
        .env("GNUPGHOME", &key.home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpg --verify repomd.xml.asc: {}",
        text(&out)
    );
    // ... and a changed repomd.xml does not check.
    let forged = tempfile::tempdir().unwrap();
    let copy = forged.path().join("repomd.xml");
    std::fs::write(&copy, repomd.replacen("<revision>", "<revision>1", 1)).unwrap();
    assert!(!gpgv(&asc, &copy).status.success());

    // The .repo file README.md tells dnf to fetch.
    assert_eq!(
        std::fs::read_to_string(site.join("openai-proxy.repo")).unwrap(),
        format!(
            "[openai-proxy]\nname=openai-proxy\nbaseurl={BASE_URL}/rpm\nenabled=1\ngpgcheck=1\n\
             repo_gpgcheck=1\ngpgkey={BASE_URL}/openai-proxy.asc\n"
        )
    );
    let fedora = readme_block("### Fedora, RHEL, openSUSE");
    assert!(
        fedora.starts_with(&format!(
            "sudo curl -fsSLo /etc/yum.repos.d/openai-proxy.repo {BASE_URL}/openai-proxy.repo\n\
             sudo dnf install openai-proxy\n"
        )),
        "{fedora}"
    );
}

#[test]
fn homebrew_tap_formula_points_at_the_released_source_tarball() {
    let (_key, published) = published();
    let formula =
        std::fs::read_to_string(published.out.join("homebrew-tap/Formula/openai-proxy.rb"))
            .unwrap();
    let field = |name: &str| -> String {
        formula
            .lines()
            .find_map(|l| l.strip_prefix(&format!("  {name} \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("the formula has no {name}"))
            .to_string()
    };
    let tarball = format!("openai-proxy-{VERSION}.tar.gz");
    assert_eq!(
        field("url"),
        format!(
            "https://github.com/openai-proxy/openai-proxy/releases/download/v{VERSION}/{tarball}"
        )
    );
    assert_eq!(field("sha256"), sha256(&published.dist().join(&tarball)));
    // Otherwise it is packaging/homebrew/openai-proxy.rb, `service do` block and all.
    let template =
        std::fs::read_to_string(format!("{ROOT}/packaging/homebrew/openai-proxy.rb")).unwrap();
    let without = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("  url ") && !l.starts_with("  sha256 "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(without(&formula), without(&template));
    assert!(formula.contains("  service do\n"));
    // README's macOS commands use this tap.
    assert_eq!(
        readme_block("### macOS (Homebrew)"),
        "brew tap openai-proxy/tap\nbrew install openai-proxy/tap/openai-proxy\n\
         brew services start openai-proxy\n"
    );
}

// ---------------------------------------------------------------------------------------------
// APT repository

/// The first `sh` code block after `heading` in README.md.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let after = readme
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has no {heading}"));
    let block = after.split("```sh\n").nth(1).expect("a ```sh block");
    format!("{}\n", block.split("\n```").next().unwrap())
}

/// A static file server (`python -m http.server`, with the tests' Python) for `dir` on
/// 127.0.0.1. Killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let python = python();
        require(&python.display().to_string(), "python3");
        let mut child = Command::new(python)
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split("port ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse().ok());
        let mut server = Server { child, port: 0 };
        server.port = port.unwrap_or_else(|| panic!("http.server said {line:?}"));
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch apt configuration: its own keyrings, sources, lists and cache, bind-mounted over
/// /etc/apt/keyrings, /etc/apt/sources.list.d, /var/lib/apt/lists and /var/cache/apt in a
/// private mount namespace, so that the README's commands run as they are written and
/// nothing of apt's on the machine changes. Only dpkg's database is the machine's.
struct Apt {
    dir: tempfile::TempDir,
}

impl Apt {
    fn new() -> Apt {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["keyrings", "sources.list.d", "lists", "cache"] {
            fresh_dir(&dir.path().join(sub));
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("sources.list"), "").unwrap();
        // No prompts (a terminal's "Do you want to continue?" has no one to answer it here),
        // wait for another dpkg, and no proxy between apt and 127.0.0.1.
        std::fs::write(
            dir.path().join("apt.conf"),
            "APT::Get::Assume-Yes \"true\";\nDPkg::Lock::Timeout \"300\";\n\
             Acquire::http::Proxy::127.0.0.1 \"DIRECT\";\n",
        )
        .unwrap();
        assert!(
            Path::new("/etc/apt/keyrings").is_dir(),
            "no /etc/apt/keyrings (apt 2.4 or later has it)"
        );
        Apt { dir }
    }

    /// A script that runs `commands` (sh -eux) with this configuration.
    fn script(&self, name: &str, commands: &str) -> PathBuf {
        let d = self.dir.path().display();
        std::fs::write(self.dir.path().join(format!("{name}.commands")), commands).unwrap();
        let path = self.dir.path().join(format!("{name}.sh"));
        std::fs::write(
            &path,
            format!(
                r#"#!/bin/bash
set -euo pipefail
export APT_CONFIG={d}/apt.conf DEBIAN_FRONTEND=noninteractive
exec unshare -m --propagation private bash -euc '
mount --bind "$1/keyrings" /etc/apt/keyrings
mount --bind "$1/sources.list.d" /etc/apt/sources.list.d
if [ -e /etc/apt/sources.list ]; then mount --bind "$1/sources.list" /etc/apt/sources.list; fi
mount --bind "$1/lists" /var/lib/apt/lists
mount --bind "$1/cache" /var/cache/apt
exec sh -eux "$2"' _ {d} {d}/{name}.commands
"#
            ),
        )
        .unwrap();
        path
    }

    fn run(&self, name: &str, commands: &str) -> Output {
        Command::new("bash")
            .arg(self.script(name, commands))
            .output()
            .unwrap()
    }
}

/// The README's Debian/Ubuntu commands, for the repository at `base` (run as root: no sudo).
fn readme_debian(base: &str) -> Vec<String> {
    let block = readme_block("### Debian, Ubuntu");
    let keyring = "/etc/apt/keyrings/openai-proxy-archive-keyring.gpg";
    assert_eq!(
        block,
        format!(
            "sudo curl -fsSLo {keyring} {BASE_URL}/openai-proxy-archive-keyring.gpg\n\
             echo \"deb [signed-by={keyring}] {BASE_URL}/apt stable main\" | \
             sudo tee /etc/apt/sources.list.d/openai-proxy.list\n\
             sudo apt update && sudo apt install openai-proxy\n"
        ),
        "README.md's Debian commands changed: this test runs them"
    );
    block
        .replace(BASE_URL, base)
        .replace("sudo ", "")
        .lines()
        .map(str::to_string)
        .collect()
}

fn installed_version() -> String {
    stdout(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "openai-proxy"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apt_repository_installs_upgrades_keeping_the_config_and_refuses_a_tampered_release() {
    require_root("installs the package from a local APT repository and runs systemd --user");
    for (tool, package) in [
        ("apt-get", "apt"),
        ("curl", "curl"),
        ("unshare", "util-linux"),
        ("gpgv", "gpgv"),
        ("systemctl", "systemd"),
    ] {
        require(tool, package);
    }
    let (key, old) = published();
    // The next version takes minutes to build: before taking the machine's package slot.
    let new = publish_next(key);

    // The repository is served from web/root, a link to the release being published.
    let web = tempfile::tempdir().unwrap();
    let root = web.path().join("root");
    std::os::unix::fs::symlink(old.site(), &root).unwrap();
    let server = Server::start(&root);
    let base = format!("http://127.0.0.1:{}", server.port);

    // Both signatures of the Release file check with the exported key.
    let dists = |p: &Published| p.site().join("apt/dists/stable");
    let out = Command::new("gpgv")
        .arg("--keyring")
        .arg(old.keyring())
        .arg(dists(old).join("InRelease"))
        .output()
        .unwrap();
    assert!(out.status.success(), "InRelease: {}", text(&out));
    let out = Command::new("gpgv")
        .arg("--keyring")
        .arg(old.keyring())
        .arg(dists(old).join("Release.gpg"))
        .arg(dists(old).join("Release"))
        .output()
        .unwrap();
    assert!(out.status.success(), "Release.gpg: {}", text(&out));
    assert!(old
        .site()
        .join("apt/pool/main/o/openai-proxy")
        .join(old.deb_name())
        .is_file());

    let slot = PackageSlot::take();

    // 1. The README's three lines: keyring, source, apt install.
    let apt = Apt::new();
    let commands = readme_debian(&base);
    let out = apt.run("install", &(commands.join("\n") + "\n"));
    assert!(
        out.status.success(),
        "the README's commands:\n{}",
        text(&out)
    );
    assert_eq!(dpkg_status(), "installed");
    assert_eq!(installed_version(), format!("{VERSION}-1"));
    assert_eq!(
        stdout(Command::new("/usr/bin/openai-proxy").arg("--version")).trim(),
        format!("openai-proxy {VERSION}")
    );
    assert_eq!(
        std::fs::read_to_string("/etc/openai-proxy/config.toml").unwrap(),
        std::fs::read_to_string(format!("{ROOT}/config/openai-proxy.toml")).unwrap()
    );
    // Nothing of apt's own configuration changed: the key and the source went to the scratch
    // directories.
    assert!(apt
        .dir
        .path()
        .join("keyrings/openai-proxy-archive-keyring.gpg")
        .is_file());
    assert!(!Path::new("/etc/apt/keyrings/openai-proxy-archive-keyring.gpg").exists());
    assert!(!Path::new("/etc/apt/sources.list.d/openai-proxy.list").exists());

    // 2. The administrator disables the system socket and edits the config.
    let wants = Path::new("/etc/systemd/system/sockets.target.wants/openai-proxy.socket");
    assert!(
        wants.symlink_metadata().is_ok(),
        "postinst enables the socket"
    );
    run(Command::new("systemctl").args(["disable", "openai-proxy.socket"]));
    assert!(wants.symlink_metadata().is_err());
    let mock = Mock::echo("edited").await;
    let edited = format!(
        "# edited by the administrator\n[backends.edited]\nurl = \"{}\"\n\n\
         [[route]]\npath = \"/v1\"\nbackend = \"edited\"\n",
        mock.url()
    );
    std::fs::write("/etc/openai-proxy/config.toml", &edited).unwrap();

    // 3. The next release is published; the package is upgraded under the installed user
    // units (a real systemd --user) while /health is asked all the time.
    std::fs::remove_file(&root).unwrap();
    std::os::unix::fs::symlink(new.site(), &root).unwrap();
    let upgrade = apt.script(
        "upgrade",
        "apt-get update\n\
         apt-get install --only-upgrade -o Dpkg::Options::=--force-confdef \
         -o Dpkg::Options::=--force-confold openai-proxy\n",
    );
    let outputs = tempfile::tempdir().unwrap();
    in_user_manager(
        "upgrade-user.sh",
        vec![
            ("PORT", free_port().to_string()),
            ("DIR", outputs.path().display().to_string()),
            ("UPGRADE", upgrade.display().to_string()),
            ("OLD", VERSION.into()),
            ("NEW", new.version.clone()),
            ("BACKEND", "edited".into()),
        ],
    )
    .await;

    // The upgrade kept the edited config (the new example is beside it) and the disabled
    // socket disabled.
    assert_eq!(installed_version(), format!("{}-1", new.version));
    assert_eq!(
        std::fs::read_to_string("/etc/openai-proxy/config.toml").unwrap(),
        edited
    );
    assert!(
        std::fs::read_to_string("/etc/openai-proxy/config.toml.dpkg-dist")
            .unwrap()
            .contains("# (a line the next version adds to the example config)")
    );
    assert!(
        wants.symlink_metadata().is_err(),
        "the upgrade enabled the socket the administrator disabled"
    );
    assert!(mock
        .requests()
        .iter()
        .any(|r| r.uri.path() == "/v1/chat/completions"));

    // 4. A Release file changed after signing: apt refuses the repository.
    for file in ["InRelease", "Release"] {
        patch(
            &dists(&new),
            file,
            "Label: openai-proxy\n",
            "Label: openai-proxy (changed)\n",
        );
    }
    let fresh = Apt::new();
    let out = fresh.run(
        "tampered",
        &format!("{}\n{}\napt-get update\n", commands[0], commands[1]),
    );
    // apt's verifier names the bad signature: gpgv's BADSIG (Debian 12), sqv's "Message has
    // been manipulated" (Debian 13).
    assert!(
        !out.status.success()
            && (text(&out).contains("BADSIG")
                || text(&out).contains("Message has been manipulated")),
        "apt-get update accepted a tampered Release:\n{}",
        text(&out)
    );

    // 5. Purge: the package and its config are gone.
    slot.purge();
    assert!(matches!(dpkg_status().as_str(), "" | "not-installed"));
    assert!(!Path::new("/etc/openai-proxy").exists());
    assert!(wants.symlink_metadata().is_err());
    drop(server);
}
