//! The set-up: everything the tests need beyond the Rust toolchain, installed where it is
//! missing and left alone where it is there. Debian packages (packages.rs), rustfmt and
//! clippy, the package builders, the Python virtual environment the tests use, and the npm
//! clients they run (npm.rs).

use std::fs;
use std::path::Path;

use crate::project::Project;
use crate::step::{self, succeeds, Steps};
use crate::{npm, packages};
use crate::{Error, Result};

/// The package builders the packaging tests run (`packaging/dist`), at the versions CI uses.
const CARGO_TOOLS: &[(&str, &str)] = &[("cargo-deb", "3.8.0"), ("cargo-generate-rpm", "0.21.1")];

/// The Python packages of the virtual environment (the OpenAI and Anthropic SDKs, for
/// tests/it/proxy/sdk.rs and anthropic_clients.rs).
const REQUIREMENTS: &str = "tests/requirements.txt";

pub fn run(project: &Project, steps: &mut Steps) -> Result {
    steps.run("Debian packages the tests need", || {
        packages::install(project)
    })?;
    steps.run("rustfmt and clippy", || rust_components(project))?;
    steps.run("cargo-deb and cargo-generate-rpm", || cargo_tools(project))?;
    let title = format!(
        "Python virtual environment {} with {REQUIREMENTS}",
        shorter(&project.venv(), &project.root)
    );
    steps.run(&title, || python_venv(project))?;
    let title = format!(
        "Claude Code and Codex CLI in {}",
        shorter(&npm::dir(project), &project.root)
    );
    steps.run(&title, || npm::install(project))?;
    Ok(())
}

/// `path` relative to `base` where it is below it.
fn shorter(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn rust_components(project: &Project) -> Result {
    let missing: Vec<&str> = [("rustfmt", "fmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(_, sub)| !succeeds(&mut project.cargo(&[sub, "--version"])))
        .map(|(component, _)| component)
        .collect();
    if missing.is_empty() {
        say!("cargo fmt and cargo clippy are there");
        return Ok(());
    }
    if !project.has_program("rustup") {
        return Err(Error::new(format!(
            "the toolchain lacks {}, and there is no rustup to add them: install them with \
             the toolchain",
            missing.join(" and ")
        )));
    }
    step::run(
        project
            .command("rustup")
            .args(["component", "add"])
            .args(&missing),
    )
}

fn cargo_tools(project: &Project) -> Result {
    for (tool, version) in CARGO_TOOLS {
        if project.has_program(tool) {
            say!("{tool} is there");
            continue;
        }
        say!("{tool} is missing: compiling it (a few minutes)");
        step::run(&mut project.cargo(&["install", "--locked", &format!("{tool}@{version}")]))?;
        if !project.has_program(tool) {
            return Err(Error::new(format!(
                "cargo install {tool} succeeded, but {tool} is not on PATH or in cargo's bin \
                 directory"
            )));
        }
    }
    Ok(())
}

/// TARGET/venv, made with the system's `python3 -m venv`, with the packages of
/// tests/requirements.txt. A copy of that file in the venv says what was installed; the
/// venv is made again when it no longer runs (say, after an upgrade of Python).
fn python_venv(project: &Project) -> Result {
    let venv = project.venv();
    let python = venv.join("bin").join("python3");
    let requirements = project.root.join(REQUIREMENTS);
    let stamp = venv.join("installed-requirements.txt");
    let wanted = fs::read_to_string(&requirements)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", requirements.display())))?;

    let pip_works = || succeeds(project.command(&python).args(["-m", "pip", "--version"]));
    if pip_works() {
        if fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
            say!("{} has {REQUIREMENTS} installed", venv.display());
            return Ok(());
        }
    } else {
        if venv.exists() {
            say!("{} does not run: making it again", venv.display());
            fs::remove_dir_all(&venv)
                .map_err(|e| Error::new(format!("cannot remove {}: {e}", venv.display())))?;
        }
        if !project.has_program("python3") {
            return Err(Error::new(
                "python3 is not installed (Debian: apt-get install python3-venv)",
            ));
        }
        step::run(project.command("python3").args(["-m", "venv"]).arg(&venv)).map_err(|e| {
            Error::new(format!(
                "{e}\n(On Debian and Ubuntu `python3 -m venv` needs the python3-venv package.)"
            ))
        })?;
        if !pip_works() {
            return Err(Error::new(format!(
                "{} has no pip (Debian: apt-get install python3-venv)",
                venv.display()
            )));
        }
    }
    step::run(
        project
            .command(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .arg("-r")
            .arg(&requirements),
    )?;
    step::run(project.command(&python).args([
        "-c",
        r#"import anthropic, openai; print("openai", openai.__version__, "anthropic", anthropic.__version__)"#,
    ]))?;
    fs::write(&stamp, wanted)
        .map_err(|e| Error::new(format!("cannot write {}: {e}", stamp.display())))
}
