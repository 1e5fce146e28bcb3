//! The fuzz targets' properties (`fuzz/src/lib.rs`), checked on the seed inputs and on every
//! input a fuzzer run once found (`fuzz/regressions/TARGET/`), so each fix stays fixed without
//! a fuzzer in CI.

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no inputs for {target}");
    out
}

fn check(target: &str, f: fn(&[u8])) {
    for (name, data) in inputs(target) {
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            panic!("{target}: {name} fails");
        }
    }
}

#[test]
fn config_inputs() {
    check("config", checks::config);
}

#[test]
fn route_inputs() {
    check("route", checks::route);
}

#[test]
fn header_inputs() {
    check("headers", checks::headers);
}

#[test]
fn model_inputs() {
    check("model", checks::model);
}
