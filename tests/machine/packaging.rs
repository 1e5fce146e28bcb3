//! The packages, built the way a release builds them (`packaging/dist --no-image`): the .deb
//! (every file, conffile, md5sums, lintian, maintainer scripts, and a real install whose user
//! units run in a real `systemd --user` before `apt-get purge` leaves nothing behind), the .rpm
//! (every file, `%config(noreplace)`, scriptlets, rpmlint, an install into a scratch root), the
//! Homebrew formula, the source and binary tarballs, and the container files with the
//! podman and systemctl command lines of `openai-proxy container ...`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::support::activation::free_port;
use crate::support::bin;
use crate::support::machine::{apt_get, dpkg_status, in_user_manager, PackageSlot};
use crate::support::mock::Mock;
use crate::support::tools::{require, require_cargo_tool, require_root, require_run_systemd};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs `cmd`; fails the test with its output unless it exits 0.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// What `packaging/dist --no-image` built.
struct Dist {
    dir: PathBuf,
    deb: PathBuf,
    rpm: PathBuf,
}

/// Builds the packages once for all tests here (the release build takes minutes the first
/// time; `cargo xtask test` builds it before `cargo test`).
fn dist() -> &'static Dist {
    static DIST: OnceLock<Dist> = OnceLock::new();
    DIST.get_or_init(|| {
        require_cargo_tool("cargo-deb");
        require_cargo_tool("cargo-generate-rpm");
        require("dpkg-deb", "dpkg");
        require("git", "git");
        require("python3", "python3");
        let target = Path::new(bin::exe())
            .parent()
            .and_then(Path::parent)
            .expect("the binary lives in TARGET/debug/")
            .to_path_buf();
        let out = Command::new(format!("{ROOT}/packaging/dist"))
            .arg("--no-image")
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "packaging/dist --no-image failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = target.join("dist");
        let arch = std::env::consts::ARCH;
        let deb_arch = if arch == "x86_64" { "amd64" } else { arch };
        Dist {
            deb: dir.join(format!("openai-proxy_{VERSION}-1_{deb_arch}.deb")),
            rpm: dir.join(format!("openai-proxy-{VERSION}-1.{arch}.rpm")),
            dir,
        }
    })
}

/// Every file both packages install, with where its content comes from in the source tree
/// (`None`: built). The .rpm differs in the two paths [`rpm_path`] maps.
const FILES: &[(&str, Option<&str>)] = &[
    ("/usr/bin/openai-proxy", None),
    (
        "/etc/openai-proxy/config.toml",
        Some("config/openai-proxy.toml"),
    ),
    (
        "/usr/lib/systemd/system/openai-proxy.socket",
        Some("contrib/systemd/openai-proxy.socket"),
    ),
    (
        "/usr/lib/systemd/system/openai-proxy.service",
        Some("contrib/systemd/openai-proxy.service"),
    ),
    (
        "/usr/lib/systemd/user/openai-proxy.socket",
        Some("contrib/systemd/user/openai-proxy.socket"),
    ),
    (
        "/usr/lib/systemd/user/openai-proxy.service",
        Some("contrib/systemd/user/openai-proxy.service"),
    ),
    (
        "/usr/lib/systemd/system/openai-proxy-backend@.socket",
        Some("contrib/systemd/on-demand/openai-proxy-backend@.socket"),
    ),
    (
        "/usr/lib/systemd/system/openai-proxy-backend@.service",
        Some("contrib/systemd/on-demand/openai-proxy-backend@.service"),
    ),
    (
        "/usr/lib/systemd/system/openai-proxy-server@.service",
        Some("contrib/systemd/on-demand/openai-proxy-server@.service"),
    ),
    (
        "/usr/lib/systemd/user/openai-proxy-backend@.socket",
        Some("contrib/systemd/on-demand/user/openai-proxy-backend@.socket"),
    ),
    (
        "/usr/lib/systemd/user/openai-proxy-backend@.service",
        Some("contrib/systemd/on-demand/user/openai-proxy-backend@.service"),
    ),
    (
        "/usr/lib/systemd/user/openai-proxy-server@.service",
        Some("contrib/systemd/on-demand/user/openai-proxy-server@.service"),
    ),
    (
        "/usr/share/man/man1/openai-proxy.1.gz",
        Some("man/openai-proxy.1"),
    ),
    (
        "/usr/share/man/man5/openai-proxy.toml.5.gz",
        Some("man/openai-proxy.toml.5"),
    ),
    (
        "/usr/share/bash-completion/completions/openai-proxy",
        Some("contrib/completions/openai-proxy.bash"),
    ),
    (
        "/usr/share/zsh/vendor-completions/_openai-proxy",
        Some("contrib/completions/_openai-proxy"),
    ),
    (
        "/usr/share/fish/vendor_completions.d/openai-proxy.fish",
        Some("contrib/completions/openai-proxy.fish"),
    ),
    ("/usr/share/doc/openai-proxy/README.md", Some("README.md")),
    (
        "/usr/share/doc/openai-proxy/docs/routing-and-models.md",
        Some("docs/routing-and-models.md"),
    ),
    (
        "/usr/share/doc/openai-proxy/docs/on-demand.md",
        Some("docs/on-demand.md"),
    ),
    (
        "/usr/share/doc/openai-proxy/docs/service-and-containers.md",
        Some("docs/service-and-containers.md"),
    ),
    (
        "/usr/share/doc/openai-proxy/docs/checking.md",
        Some("docs/checking.md"),
    ),
    (
        "/usr/share/doc/openai-proxy/docs/security.md",
        Some("docs/security.md"),
    ),
    (
        "/usr/share/doc/openai-proxy/docs/observability.md",
        Some("docs/observability.md"),
    ),
    (
        "/usr/share/doc/openai-proxy/docs/troubleshooting.md",
        Some("docs/troubleshooting.md"),
    ),
    (
        "/usr/share/doc/openai-proxy/copyright",
        Some("packaging/copyright"),
    ),
];

const DEB_ONLY: &[&str] = &[
    "/usr/share/doc/openai-proxy/changelog.Debian.gz",
    "/usr/share/lintian/overrides/openai-proxy",
];

const RPM_ONLY: &[&str] = &["/usr/share/licenses/openai-proxy/LICENSE"];

/// Where the .rpm puts a file of [`FILES`]: Fedora's zsh directory, licenses directory.
fn rpm_path(path: &str) -> String {
    match path {
        "/usr/share/zsh/vendor-completions/_openai-proxy" => {
            "/usr/share/zsh/site-functions/_openai-proxy".into()
        }
        "/usr/share/doc/openai-proxy/copyright" => {
            "/usr/share/licenses/openai-proxy/copyright".into()
        }
        p => p.into(),
    }
}

fn gunzip(path: &Path) -> Vec<u8> {
    run(Command::new("gzip").arg("-dc").arg(path)).stdout
}

/// The files under `root` (a package's extracted contents) match their sources.
fn check_contents(root: &Path, map: impl Fn(&str) -> String) {
    for (dest, source) in FILES {
        let file = root.join(map(dest).trim_start_matches('/'));
        assert!(file.is_file(), "{} is missing", file.display());
        let Some(source) = source else { continue };
        let got = if dest.ends_with(".gz") {
            gunzip(&file)
        } else {
            std::fs::read(&file).unwrap()
        };
        assert!(
            got == std::fs::read(format!("{ROOT}/{source}")).unwrap(),
            "{dest} differs from {source}"
        );
    }
    let binary = root.join("usr/bin/openai-proxy");
    let version = stdout(Command::new(&binary).arg("--version"));
    assert_eq!(version.trim(), format!("openai-proxy {VERSION}"));
}

#[test]
fn deb_has_every_file_a_conffile_md5sums_and_passes_lintian() {
    let dist = dist();
    let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&dist.deb));
    let listed: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .collect();
    for path in FILES
        .iter()
        .map(|(p, _)| *p)
        .chain(DEB_ONLY.iter().copied())
    {
        assert!(
            listed.contains(path),
            "dpkg-deb -c lacks {path}:\n{listing}"
        );
    }
    for line in listing.lines() {
        let owner = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            owner == "0/0" || owner == "root/root",
            "not owned by root: {line}"
        );
    }

    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(&dist.deb)
        .arg(x.path()));
    check_contents(x.path(), |p| p.to_string());
    let control = x.path().join("DEBIAN");
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/openai-proxy/config.toml\n"
    );
    run(Command::new("md5sum")
        .args(["--check", "--quiet", "DEBIAN/md5sums"])
        .current_dir(x.path()));
    for script in ["postinst", "prerm", "postrm"] {
        assert_eq!(
            std::fs::read(control.join(script)).unwrap(),
            std::fs::read(format!("{ROOT}/packaging/deb/{script}")).unwrap(),
            "{script} is not packaging/deb/{script}"
        );
    }
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    for field in [
        "Package: openai-proxy\n",
        &format!("Version: {VERSION}-1\n"),
        "Section: net\n",
        "Depends: libc6",
    ] {
        assert!(fields.contains(field), "control lacks {field:?}:\n{fields}");
    }
    let changelog = gunzip(
        &x.path()
            .join("usr/share/doc/openai-proxy/changelog.Debian.gz"),
    );
    assert!(
        String::from_utf8_lossy(&changelog).starts_with(&format!("openai-proxy ({VERSION}-1) ")),
        "packaging/deb/changelog does not start with version {VERSION}-1"
    );

    require("lintian", "lintian");
    let out = Command::new("lintian")
        .args(["--info", "--fail-on", "error,warning"])
        .arg(&dist.deb)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{report}");
    assert!(
        out.status.success()
            && !report
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian found errors or warnings:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fake programs, first on PATH, that append their name and arguments to a log (and run an
/// extra shell snippet each, to answer like the real one).
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new(programs: &[(&str, &str)]) -> Fakes {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "").unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for (name, extra) in programs {
            let path = dir.path().join("bin").join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{extra}\nexit 0\n",
                    log.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Fakes { dir }
    }

    /// $PATH with the fakes first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The calls so far, one line each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Runs a maintainer script with the systemd helpers faked, as if systemd were running
/// (a private mount namespace with a `/run/systemd/system` of its own); the calls it made.
fn maintainer_script(script: &str, args: &[&str]) -> Vec<String> {
    maintainer_script_with(
        script,
        args,
        &[
            ("deb-systemd-helper", ""),
            ("deb-systemd-invoke", ""),
            ("systemctl", ""),
        ],
    )
}

/// [`maintainer_script`] with the given fakes (a helper not faked is the real one). The
/// container's /usr/sbin/policy-rc.d (exit 101: start nothing) is out of the real
/// deb-systemd-invoke's way: it looks for it under $DPKG_ROOT, an empty directory here.
fn maintainer_script_with(script: &str, args: &[&str], fakes: &[(&str, &str)]) -> Vec<String> {
    let fakes = Fakes::new(fakes);
    let runsd = tempfile::tempdir().unwrap();
    std::fs::create_dir(runsd.path().join("system")).unwrap();
    let dpkg_root = tempfile::tempdir().unwrap();
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /run/systemd && shift && exec sh \"$@\"")
        .arg("sh")
        .arg(runsd.path())
        .arg(format!("{ROOT}/packaging/deb/{script}"))
        .args(args)
        .env("PATH", fakes.path())
        .env("DPKG_ROOT", dpkg_root.path()));
    fakes.calls()
}

#[test]
fn deb_maintainer_scripts_enable_and_start_only_the_socket() {
    require_root("mounts over /run/systemd in a private namespace");
    require_run_systemd();
    require("deb-systemd-invoke", "init-system-helpers");
    assert_eq!(
        maintainer_script("postinst", &["configure", ""]),
        [
            "deb-systemd-helper unmask openai-proxy.socket",
            "deb-systemd-helper --quiet was-enabled openai-proxy.socket",
            "deb-systemd-helper enable openai-proxy.socket",
            "systemctl --system daemon-reload",
            "deb-systemd-invoke start openai-proxy.socket",
        ]
    );
    // An upgrade also restarts a running service with the new binary, in the system manager
    // and in the users' managers; the socket is started (if enabled), never restarted.
    assert_eq!(
        maintainer_script("postinst", &["configure", "0.0.9-1"]),
        [
            "deb-systemd-helper unmask openai-proxy.socket",
            "deb-systemd-helper --quiet was-enabled openai-proxy.socket",
            "deb-systemd-helper enable openai-proxy.socket",
            "systemctl --system daemon-reload",
            "deb-systemd-invoke start openai-proxy.socket",
            "deb-systemd-invoke try-restart openai-proxy.service",
            "deb-systemd-invoke --user restart openai-proxy.service",
        ]
    );
    // An administrator disabled the socket: the upgrade does not enable it again, and the real
    // deb-systemd-invoke does not start it; the service restarts where it runs (here: in the
    // manager of user 1000), through systemctl's try-restart in the system manager.
    let systemctl = r#"case "$*" in
        "--version --quiet") echo "systemd 252 (252.38-1~deb12u1)" ;;
        "--system is-enabled -- openai-proxy.socket") echo disabled ;;
        "--system --quiet is-active -- openai-proxy.socket") exit 3 ;;
        "--no-legend --quiet list-units user@*") echo "user@1000.service loaded active running User Manager for UID 1000" ;;
        "--user --machine 1000@ is-enabled -- openai-proxy.service") echo indirect ;;
        esac"#;
    let calls = maintainer_script_with(
        "postinst",
        &["configure", "0.0.9-1"],
        &[
            ("deb-systemd-helper", r#"[ "$2" = was-enabled ] && exit 1"#),
            ("systemctl", systemctl),
        ],
    );
    assert_eq!(
        calls,
        [
            "deb-systemd-helper unmask openai-proxy.socket",
            "deb-systemd-helper --quiet was-enabled openai-proxy.socket",
            "deb-systemd-helper update-state openai-proxy.socket",
            "systemctl --system daemon-reload",
            "systemctl --system is-enabled -- openai-proxy.socket",
            "systemctl --system --quiet is-active -- openai-proxy.socket",
            "systemctl try-restart openai-proxy.service",
            "systemctl --version --quiet",
            "systemctl --no-legend --quiet list-units user@*",
            "systemctl --user --machine 1000@ is-enabled -- openai-proxy.service",
            "systemctl --user --machine 1000@ --quiet is-active -- openai-proxy.service",
            "systemctl --quiet --user --machine 1000@ restart openai-proxy.service",
        ]
    );
    assert_eq!(
        maintainer_script("prerm", &["remove"]),
        ["deb-systemd-invoke stop openai-proxy.socket openai-proxy.service"]
    );
    assert!(maintainer_script("prerm", &["upgrade", "0.2.0-1"]).is_empty());
    assert_eq!(
        maintainer_script("postrm", &["remove"]),
        [
            "systemctl --system daemon-reload",
            "deb-systemd-helper mask openai-proxy.socket"
        ]
    );
    assert_eq!(
        maintainer_script("postrm", &["purge"]),
        [
            "systemctl --system daemon-reload",
            "deb-systemd-helper purge openai-proxy.socket",
            "deb-systemd-helper unmask openai-proxy.socket"
        ]
    );
}

/// Paths with "openai-proxy" in them where a package could leave something.
fn traces() -> BTreeSet<String> {
    let out = Command::new("find")
        .args([
            "/etc",
            "/usr",
            "/var/lib",
            "/opt",
            "-xdev",
            "-path",
            "*openai-proxy*",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("/usr/local/cargo") && !l.contains("/target/"))
        .map(str::to_string)
        .collect()
}

/// The config the test puts in /etc: one route to the mock backend `backend`.
fn system_config(backend: &str, url: &str) -> String {
    format!(
        "# openai-proxy package test\n[backends.{backend}]\nurl = \"{url}\"\n\n\
         [[route]]\npath = \"/v1\"\nbackend = \"{backend}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deb_installs_serves_through_the_installed_user_units_and_purges_cleanly() {
    require_root("installs the .deb with apt-get and runs systemd --user");
    let dist = dist();
    require("apt-get", "apt");
    require("curl", "curl");
    require("man", "man-db");
    require("systemd-analyze", "systemd");
    // Our turn with the machine's dpkg database (release.rs installs too); purged when dropped,
    // so the machine is left as it was however the test ends.
    let slot = PackageSlot::take();
    let before = traces();

    let out = apt_get(&["install", &dist.deb.display().to_string()]);
    assert!(
        out.status.success(),
        "apt-get install failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dpkg_status(), "installed");
    for (path, _) in FILES {
        assert!(Path::new(path).is_file(), "{path} was not installed");
    }
    assert_eq!(
        std::fs::read_to_string("/etc/openai-proxy/config.toml").unwrap(),
        std::fs::read_to_string(format!("{ROOT}/config/openai-proxy.toml")).unwrap()
    );
    // postinst enabled the system socket (systemd is not PID 1 here, so it was not started).
    let wants = Path::new("/etc/systemd/system/sockets.target.wants/openai-proxy.socket");
    assert_eq!(
        std::fs::canonicalize(wants).expect("postinst enables openai-proxy.socket"),
        std::fs::canonicalize("/usr/lib/systemd/system/openai-proxy.socket").unwrap()
    );

    // The installed system units verify, with their man: documentation links resolved.
    let out = Command::new("systemd-analyze")
        .args([
            "verify",
            "/usr/lib/systemd/system/openai-proxy.socket",
            "/usr/lib/systemd/system/openai-proxy.service",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify (installed units):\n{stderr}"
    );

    // The man pages resolve by name and render cleanly.
    for (page, file) in [
        ("openai-proxy", "/usr/share/man/man1/openai-proxy.1.gz"),
        (
            "openai-proxy.toml",
            "/usr/share/man/man5/openai-proxy.toml.5.gz",
        ),
    ] {
        assert_eq!(stdout(Command::new("man").args(["-w", page])).trim(), file);
        let out = Command::new("man")
            .args(["--warnings", page])
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "man {page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // /etc/openai-proxy/config.toml is the config the service uses: it routes /v1 to a mock
    // backend named "pkgtest" (the built-in default has no such backend).
    let mock = Mock::echo("pkgtest").await;
    std::fs::write(
        "/etc/openai-proxy/config.toml",
        system_config("pkgtest", &mock.url()),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    in_user_manager(
        "package-user.sh",
        vec![
            ("PORT", free_port().to_string()),
            ("BACKEND", "pkgtest".into()),
            ("DIR", work.path().display().to_string()),
        ],
    )
    .await;
    let seen = mock.requests();
    assert!(
        seen.iter().any(|r| r.uri.path() == "/v1/chat/completions"),
        "the mock backend saw no request: {seen:?}"
    );

    // Purge: nothing of the package is left, not even the edited config.
    slot.purge();
    assert!(
        matches!(dpkg_status().as_str(), "" | "not-installed"),
        "still known to dpkg after purge: {}",
        dpkg_status()
    );
    let after = traces();
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "apt-get purge left these behind"
    );
    assert!(!Path::new("/etc/openai-proxy").exists());
}

#[test]
fn rpm_has_every_file_config_noreplace_and_passes_rpmlint() {
    let dist = dist();
    require("rpm", "rpm");
    let rpm = |args: &[&str]| stdout(Command::new("rpm").args(args).arg(&dist.rpm));
    let listed: BTreeSet<String> = rpm(&["-qlp"]).lines().map(str::to_string).collect();
    for path in FILES
        .iter()
        .map(|(p, _)| rpm_path(p))
        .chain(RPM_ONLY.iter().map(|p| p.to_string()))
    {
        assert!(listed.contains(&path), "rpm -qlp lacks {path}: {listed:?}");
    }
    assert_eq!(rpm(&["-qcp"]), "/etc/openai-proxy/config.toml\n");
    let flags = rpm(&["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\\n]"]);
    assert!(
        flags
            .lines()
            .any(|l| l == "cn /etc/openai-proxy/config.toml"),
        "the config is not %config(noreplace):\n{flags}"
    );
    let info = rpm(&["-qp", "--qf", "%{NAME} %{VERSION} %{RELEASE} %{LICENSE}"]);
    assert!(
        info.starts_with(&format!("openai-proxy {VERSION} 1 MIT AND "))
            && info.contains("CDLA-Permissive-2.0"),
        "{info}"
    );

    // Installed into a scratch root: the files match their sources, and removing the package
    // keeps an edited config as .rpmsave.
    let root = tempfile::tempdir().unwrap();
    let r = root.path().display().to_string();
    let rpm_root = |args: &[&str]| {
        run(Command::new("rpm")
            .args(["--root", &r, "--dbpath", "/var/lib/rpm"])
            .args(args))
    };
    rpm_root(&["--initdb"]);
    rpm_root(&[
        "-i",
        "--nodeps",
        "--noscripts",
        &dist.rpm.display().to_string(),
    ]);
    check_contents(root.path(), rpm_path);
    let config = root.path().join("etc/openai-proxy/config.toml");
    std::fs::write(&config, "# edited\n").unwrap();
    rpm_root(&["-e", "--nodeps", "--noscripts", "openai-proxy"]);
    assert!(!config.exists());
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/openai-proxy/config.toml.rpmsave")).unwrap(),
        "# edited\n"
    );

    require("rpmlint", "rpmlint");
    let out = Command::new("rpmlint")
        .arg("-c")
        .arg(format!("{ROOT}/packaging/rpm/rpmlint.toml"))
        .arg(&dist.rpm)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("rpmlint:\n{report}");
    assert!(
        out.status.success() && report.contains(" 0 errors, 0 warnings"),
        "rpmlint:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the .rpm's scriptlet `tag` (POSTIN, PREUN, POSTUN) with `arg` as rpm would, with a
/// fake systemctl (which knows one user manager, user 1000's); the calls it made.
fn scriptlet(rpm: &Path, tag: &str, arg: &str) -> Vec<String> {
    let text = stdout(
        Command::new("rpm")
            .args(["-qp", "--qf", &format!("%{{{tag}}}")])
            .arg(rpm),
    );
    let fakes = Fakes::new(&[(
        "systemctl",
        r#"[ "$2" = list-units ] && echo "user@1000.service loaded active running User Manager for UID 1000""#,
    )]);
    run(Command::new("sh")
        .arg("-c")
        .arg(&text)
        .arg(tag)
        .arg(arg)
        .env("PATH", fakes.path()));
    fakes.calls()
}

#[test]
fn rpm_scriptlets_do_what_the_systemd_macros_do() {
    let dist = dist();
    require("rpm", "rpm");
    // %systemd_post / %systemd_user_post: presets on the first install only.
    assert_eq!(
        scriptlet(&dist.rpm, "POSTIN", "1"),
        [
            "systemctl --no-reload preset openai-proxy.socket",
            "systemctl --no-reload preset --global openai-proxy.socket"
        ]
    );
    assert!(scriptlet(&dist.rpm, "POSTIN", "2").is_empty());
    // %systemd_preun / %systemd_user_preun: disable and stop on removal only.
    assert_eq!(
        scriptlet(&dist.rpm, "PREUN", "0"),
        [
            "systemctl --no-reload disable --now openai-proxy.socket openai-proxy.service",
            "systemctl --global disable openai-proxy.socket openai-proxy.service"
        ]
    );
    assert!(scriptlet(&dist.rpm, "PREUN", "1").is_empty());
    // %systemd_postun_with_restart and %systemd_user_postun_with_restart: reload; restart the
    // service on upgrades where it runs, in the system manager and each user's.
    assert_eq!(
        scriptlet(&dist.rpm, "POSTUN", "1"),
        [
            "systemctl daemon-reload",
            "systemctl try-restart openai-proxy.service",
            "systemctl --no-legend list-units user@*.service",
            "systemctl --user --machine 1000@ try-restart openai-proxy.service",
        ]
    );
    assert_eq!(
        scriptlet(&dist.rpm, "POSTUN", "0"),
        ["systemctl daemon-reload"]
    );
}

#[test]
fn dist_builds_the_tarballs_the_formula_and_checksums() {
    let dist = dist();
    run(Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(&dist.dir));
    let sums = std::fs::read_to_string(dist.dir.join("SHA256SUMS")).unwrap();
    let arch = std::env::consts::ARCH;
    let source = format!("openai-proxy-{VERSION}.tar.gz");
    let binary = format!("openai-proxy-{VERSION}-{arch}-linux.tar.gz");
    for file in [
        dist.deb.file_name().unwrap().to_string_lossy().into_owned(),
        dist.rpm.file_name().unwrap().to_string_lossy().into_owned(),
        source.clone(),
        binary.clone(),
        "openai-proxy.rb".to_string(),
    ] {
        assert!(
            sums.lines().any(|l| l.ends_with(&format!("  {file}"))),
            "SHA256SUMS lacks {file}:\n{sums}"
        );
    }
    // The formula points at the source tarball, by its checksum.
    let formula = std::fs::read_to_string(dist.dir.join("openai-proxy.rb")).unwrap();
    let source_sum = sums
        .lines()
        .find(|l| l.ends_with(&format!("  {source}")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert!(formula.contains(&format!("  sha256 \"{source_sum}\"\n")));
    assert!(formula.contains(&format!("/v{VERSION}/{source}\"\n")));
    let source_list = stdout(Command::new("tar").arg("-tzf").arg(dist.dir.join(&source)));
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "man/openai-proxy.1",
    ] {
        assert!(
            source_list
                .lines()
                .any(|l| l == format!("openai-proxy-{VERSION}/{f}")),
            "the source tarball lacks {f}"
        );
    }
    let binary_list = stdout(Command::new("tar").arg("-tzf").arg(dist.dir.join(&binary)));
    for f in [
        "bin/openai-proxy",
        "share/man/man1/openai-proxy.1",
        "share/man/man5/openai-proxy.toml.5",
        "share/bash-completion/completions/openai-proxy",
        "lib/systemd/system/openai-proxy.socket",
        "lib/systemd/user/openai-proxy.service",
        "lib/systemd/system/openai-proxy-server@.service",
        "lib/systemd/user/openai-proxy-backend@.socket",
        "etc/openai-proxy/config.toml",
        "share/doc/openai-proxy/copyright",
    ] {
        assert!(
            binary_list
                .lines()
                .any(|l| l == format!("openai-proxy-{VERSION}-{arch}-linux/{f}")),
            "the binary tarball lacks {f}:\n{binary_list}"
        );
    }
}

#[test]
fn homebrew_formula_is_valid_ruby_installs_everything_and_its_test_passes() {
    require("ruby", "ruby");
    let formula = format!("{ROOT}/packaging/homebrew/openai-proxy.rb");
    let out = run(Command::new("ruby").arg("-c").arg(&formula));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Syntax OK");
    let prefix = tempfile::tempdir().unwrap();
    let out = run(Command::new("ruby")
        .arg(format!("{ROOT}/tests/scripts/homebrew_formula.rb"))
        .arg(&formula)
        .arg(ROOT)
        .arg(prefix.path())
        .arg(bin::exe()));
    let facts = String::from_utf8_lossy(&out.stdout);
    let p = prefix.path().display();
    for fact in [
        "depends_on [{\"rust\"=>:build}]".to_string(),
        format!("system cargo install --locked --root {p} --path ."),
        "installed share/man/man1/openai-proxy.1".into(),
        "installed share/man/man5/openai-proxy.toml.5".into(),
        "installed etc/bash_completion.d/openai-proxy".into(),
        "installed share/zsh/site-functions/_openai-proxy".into(),
        "installed share/fish/vendor_completions.d/openai-proxy.fish".into(),
        "post_install wrote etc/openai-proxy/config.toml".into(),
        "post_install kept the edited config".into(),
        format!(
            "service run [\"[#<Pathname:{p}/opt/bin/openai-proxy>, \\\"serve\\\", \\\"--config\\\", \
             #<Pathname:{p}/etc/openai-proxy/config.toml>]\"]"
        ),
        "service sockets [\"{:http=>\\\"tcp://127.0.0.1:2020\\\"}\"]".into(),
        format!("service log_path [\"{p}/var/log/openai-proxy.log\"]"),
        format!("service error_log_path [\"{p}/var/log/openai-proxy.log\"]"),
        "test block passed".into(),
    ] {
        assert!(
            facts.lines().any(|l| l == fact),
            "the formula run lacks `{fact}`:\n{facts}"
        );
    }
    // post_install wrote the commented example config.
    // (It was then edited by the harness, so compare the packaged copy.)
    assert_eq!(
        std::fs::read(prefix.path().join("share/openai-proxy/openai-proxy.toml")).unwrap(),
        std::fs::read(format!("{ROOT}/config/openai-proxy.toml")).unwrap()
    );
    // The version in the formula's URL is the crate's.
    let text = std::fs::read_to_string(&formula).unwrap();
    assert!(text.contains(&format!("/v{VERSION}/openai-proxy-{VERSION}.tar.gz\"")));
}

// ---------------------------------------------------------------------------------------------
// Container

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{rel}")).unwrap()
}

#[test]
fn containerfile_builds_in_two_stages_and_runs_unprivileged_with_a_health_check() {
    let text = read("contrib/container/Containerfile");
    // Instructions, with continuation lines joined.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].ends_with(" AS build"));
    let runtime: Vec<&str> = instructions
        .iter()
        .skip_while(|l| **l != *froms[1])
        .copied()
        .collect();
    let has = |prefix: &str| runtime.iter().find(|l| l.starts_with(prefix)).copied();
    assert_eq!(
        has("COPY --from=build"),
        Some("COPY --from=build /out/openai-proxy /usr/local/bin/openai-proxy")
    );
    let user = has("USER ").expect("the runtime stage sets USER");
    assert!(
        !user.contains("root") && !user.starts_with("USER 0"),
        "runs as root: {user}"
    );
    let health = has("HEALTHCHECK ").expect("a HEALTHCHECK");
    assert!(
        health.contains("\"check-endpoints\", \"--only\", \"health\""),
        "{health}"
    );
    assert_eq!(
        has("ENTRYPOINT "),
        Some("ENTRYPOINT [\"/usr/local/bin/openai-proxy\"]")
    );
    assert_eq!(has("CMD "), Some("CMD [\"serve\"]"));
    // The build stage builds what the runtime stage copies.
    assert!(joined.contains("cargo build --release --locked"));
    assert!(joined.contains("/out/openai-proxy"));
    // The health check command is one the binary accepts.
    let out = bin::run(&[
        "check-endpoints",
        "--only",
        "health",
        "--timeout",
        "5s",
        "--help",
    ]);
    assert!(out.status.success());
    // The build context leaves out build output.
    assert!(read(".containerignore").lines().any(|l| l == "target/"));
}

#[test]
fn compose_file_runs_the_image_on_the_host_network_with_a_health_check() {
    require("ruby", "ruby");
    let out = run(Command::new("ruby")
        .args([
            "-ryaml",
            "-rjson",
            "-e",
            "puts JSON.generate(YAML.safe_load(File.read(ARGV[0])))",
        ])
        .arg(format!("{ROOT}/contrib/container/compose.yaml")));
    let compose: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let service = &compose["services"]["openai-proxy"];
    assert_eq!(
        service["image"],
        openai_proxy::commands::container::DEFAULT_IMAGE
    );
    assert_eq!(service["network_mode"], "host");
    assert_eq!(service["read_only"], true);
    assert_eq!(
        service["build"]["dockerfile"],
        "contrib/container/Containerfile"
    );
    let context = Path::new(ROOT)
        .join("contrib/container")
        .join(service["build"]["context"].as_str().unwrap());
    assert!(context.join("contrib/container/Containerfile").is_file());
    let test: Vec<&str> = service["healthcheck"]["test"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        test,
        [
            "CMD",
            "/usr/local/bin/openai-proxy",
            "check-endpoints",
            "--only",
            "health",
            "--timeout",
            "5s"
        ]
    );
    assert_eq!(
        service["environment"]["OPENAI_PROXY_CONFIG"],
        "/etc/openai-proxy/config.toml"
    );
    assert_eq!(service["stop_grace_period"], "40s");
}

#[test]
fn quadlet_is_what_container_enable_installs() {
    let text = read("contrib/container/openai-proxy.container");
    assert_eq!(text, openai_proxy::commands::container::QUADLET_TEMPLATE);
    let section = |name: &str| -> Vec<String> {
        text.split(&format!("[{name}]\n"))
            .nth(1)
            .unwrap_or_default()
            .split("\n[")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let container = section("Container");
    for line in [
        "ContainerName=openai-proxy",
        &format!("Image={}", openai_proxy::commands::container::DEFAULT_IMAGE),
        "Network=host",
        "HealthCmd=/usr/local/bin/openai-proxy check-endpoints --only health --timeout 5s",
        "ReadOnly=true",
        "NoNewPrivileges=true",
    ] {
        assert!(
            container.iter().any(|l| l == line),
            "[Container] lacks {line}"
        );
    }
    assert!(section("Install")
        .iter()
        .any(|l| l == "WantedBy=default.target"));
    assert!(section("Service").iter().any(|l| l == "TimeoutStopSec=40"));
}

/// Runs `openai-proxy ARGS` with fake podman and systemctl first on PATH; the exit status,
/// stdout, stderr, and the commands they were given.
fn with_fakes(
    args: &[&str],
    podman_version: &str,
    env: &[(&str, &Path)],
) -> (Option<i32>, String, String, Vec<String>) {
    let inspect = "if [ \"$1 $2\" = \"container inspect\" ]; then \
                   echo 'openai-proxy: running since 2026-11-28, image localhost/openai-proxy:latest'; fi";
    let version =
        format!("if [ \"$1\" = --version ]; then echo 'podman version {podman_version}'; fi");
    let fakes = Fakes::new(&[
        ("podman", &format!("{inspect}\n{version}")),
        ("systemctl", ""),
    ]);
    let mut cmd = bin::command();
    cmd.args(args).env("PATH", fakes.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let calls = fakes
        .calls()
        .into_iter()
        .filter(|l| l != "podman --version")
        .collect();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        calls,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_commands_run_podman_and_systemctl_as_documented() {
    let work = tempfile::tempdir().unwrap();
    let cfg_dir = work.path().join("my config");
    std::fs::create_dir(&cfg_dir).unwrap();
    let cfg = cfg_dir.join("proxy.toml");
    let health = Mock::echo("health").await;
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"{}\"]\n{}",
            health.addr,
            system_config("a", "http://127.0.0.1:9")
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let d = cfg_dir.display().to_string();
    // Runs a command that must succeed with Podman 4.9; the commands it ran.
    let ok = |args: &[&str], env: &[(&str, &Path)]| -> Vec<String> {
        let (code, out, err, calls) = with_fakes(args, "4.9.3", env);
        assert_eq!(code, Some(0), "openai-proxy {args:?}: {out}{err}");
        calls
    };

    // start: podman run on the host network, the config's directory mounted, the file named.
    let (code, _, err, calls) = with_fakes(
        &[
            "--config",
            &c,
            "container",
            "start",
            "-v",
            "--image",
            "localhost/x:1",
        ],
        "4.9.3",
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let run_line = format!(
        "podman run --detach --rm --replace --name openai-proxy --network host \
         --volume {d}:{d}:ro,z --env OPENAI_PROXY_CONFIG={c} localhost/x:1"
    );
    assert_eq!(calls, std::slice::from_ref(&run_line));
    assert!(
        err.contains(&format!("+ {run_line}")),
        "-v prints it: {err}"
    );
    assert_eq!(
        ok(&["container", "stop"], &[]),
        ["podman stop --ignore --time 40 openai-proxy"]
    );
    assert_eq!(
        ok(&["container", "logs", "-f"], &[]),
        ["podman logs --follow openai-proxy"]
    );

    // status: podman's view, then /health at the config's address (the mock answers 200).
    let (code, out, err, calls) =
        with_fakes(&["--config", &c, "container", "status"], "4.9.3", &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(calls[0].starts_with("podman container inspect --format "));
    assert!(out.contains("openai-proxy: running since"), "{out}");
    assert!(
        out.contains(&format!("health: {} /health → 200 OK", health.addr)),
        "{out}"
    );
    // ... and 3 when nothing answers.
    let dead = work.path().join("dead.toml");
    std::fs::write(
        &dead,
        format!(
            "[server]\nlisten = [\"{}\"]\n{}",
            crate::support::dead_addr(),
            system_config("a", "http://127.0.0.1:9")
        ),
    )
    .unwrap();
    let (code, out, _, _) = with_fakes(
        &[
            "--config",
            &dead.display().to_string(),
            "container",
            "status",
        ],
        "4.9.3",
        &[],
    );
    assert_eq!(code, Some(3), "{out}");

    // enable --user: the quadlet in $XDG_CONFIG_HOME/containers/systemd, then systemctl --user.
    let xdg = work.path().join("xdg");
    let env: &[(&str, &Path)] = &[("XDG_CONFIG_HOME", &xdg)];
    assert_eq!(
        ok(&["--config", &c, "container", "enable", "--user"], env),
        [
            "systemctl --user daemon-reload",
            "systemctl --user start openai-proxy.service"
        ]
    );
    let quadlet_path = xdg.join("containers/systemd/openai-proxy.container");
    let quadlet = std::fs::read_to_string(&quadlet_path).unwrap();
    for line in [
        format!("Volume={d}:{d}:ro,z"),
        format!("Environment=OPENAI_PROXY_CONFIG={c}"),
        "Image=localhost/openai-proxy:latest".to_string(),
    ] {
        assert!(quadlet.lines().any(|l| l == line), "no {line}:\n{quadlet}");
    }
    // disable --user: stop, remove the quadlet, reload.
    assert_eq!(
        ok(&["container", "disable", "--user"], env),
        [
            "systemctl --user stop openai-proxy.service",
            "systemctl --user daemon-reload"
        ]
    );
    assert!(!quadlet_path.exists());

    // Podman older than 4.5 has no quadlet health checks: a clear error, nothing written.
    let (code, _, err, calls) = with_fakes(&["container", "enable", "--user"], "4.3.1", env);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("needs Podman 4.5 or later; this is Podman 4.3"),
        "{err}"
    );
    assert!(calls.is_empty() && !quadlet_path.exists());

    // A named config that does not exist is an error before podman runs.
    let (code, _, err, calls) = with_fakes(
        &["--config", "/nonexistent/p.toml", "container", "start"],
        "4.9.3",
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/p.toml"), "{err}");
    assert!(calls.is_empty());
}
