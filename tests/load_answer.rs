//! A 1 GiB answer through the proxy: unchanged, in flat memory, its usage found.

use std::sync::{Arc, Mutex};

use http::Request;

use crate::support::activation::config_file;
use crate::support::bin::Proc;
use crate::support::client::{full, send};
use crate::support::mock::Mock;
use crate::{heavy, one_backend, vm_rss_kib};

/// A 1 GiB JSON answer (with `"usage"` every MiB, as a long answer quoting it would have, and
/// its real usage at the end) passes byte for byte (SHA-256 compared), the proxy's memory stays
/// flat while it streams (the usage scan keeps a bounded tail), and the real counts are logged.
#[test]
fn a_gibibyte_answer_passes_unchanged_with_flat_memory_and_its_usage_found() {
    heavy(a_gibibyte_answer_run());
}

async fn a_gibibyte_answer_run() {
    const MIB: usize = 1 << 20;
    const PIECES: usize = 1024;
    const END: &[u8] = br#""usage":{"prompt_tokens":11,"completion_tokens":22}}"#;
    let sent_hash: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let keep = sent_hash.clone();
    let m = Mock::start(crate::support::mock::handler(move |_req| {
        let keep = keep.clone();
        async move {
            let mut piece = vec![b'x'; MIB];
            piece[..10].copy_from_slice(b"{\"text\":\"a");
            let quoted = br#"\"usage\":{\"prompt_tokens\":9"#;
            piece[MIB / 2..MIB / 2 + quoted.len()].copy_from_slice(quoted);
            let first = bytes::Bytes::from(piece.clone());
            piece[..10].copy_from_slice(b"xxxxxxxxxx");
            let middle = bytes::Bytes::from(piece);
            let len = (PIECES * MIB + 2 + END.len()) as u64;
            let (tx, body) = crate::support::mock::sized_channel_body(len);
            tokio::spawn(async move {
                let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
                for i in 0..PIECES {
                    let p = if i == 0 {
                        first.clone()
                    } else {
                        middle.clone()
                    };
                    hash.update(&p);
                    if tx.send(Ok(p)).await.is_err() {
                        return;
                    }
                }
                let mut end = b"\",".to_vec();
                end.extend_from_slice(END);
                hash.update(&end);
                let _ = tx.send(Ok(bytes::Bytes::from(end))).await;
                *keep.lock().unwrap() = Some(hash.finish().as_ref().to_vec());
            });
            http::Response::builder()
                .header("content-type", "application/json")
                .body(body)
                .unwrap()
        }
    }))
    .await;
    let (_dir, cfg) = config_file(&one_backend(&m.url(), "[log]\naccess_log = true"));
    let proc = Proc::start(&cfg, &[]);
    let pid = proc.pid();
    let req = Request::post(format!("http://{}/v1/chat/completions", proc.addr))
        .header("x-request-id", "huge")
        .header("content-type", "application/json")
        .body(full("{}"))
        .unwrap();
    let res = send(req).await;
    assert_eq!(res.status(), 200);
    let before = vm_rss_kib(pid);
    let mut body = res.into_body();
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut got, mut peak) = (0usize, before);
    let mut next_look = 0;
    use http_body_util::BodyExt as _;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            hash.update(&data);
            got += data.len();
        }
        if got >= next_look {
            peak = peak.max(vm_rss_kib(pid));
            next_look = got + 16 * MIB;
        }
    }
    assert_eq!(got, PIECES * MIB + 2 + END.len());
    let sent = sent_hash
        .lock()
        .unwrap()
        .clone()
        .expect("the backend sent it all");
    assert_eq!(hash.finish().as_ref(), &sent[..], "the bytes differ");
    // Flat: what hyper and the pools hold in flight, not the answer (1 GiB).
    assert!(
        peak < before + 32 * 1024,
        "RSS grew from {before} KiB to {peak} KiB while 1 GiB passed"
    );
    let log = proc.stop().await;
    let line = log
        .lines()
        .find(|l| l.contains("request_id=\"huge\""))
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    assert!(
        line.contains(" prompt_tokens=11 completion_tokens=22 "),
        "{line}"
    );
}
