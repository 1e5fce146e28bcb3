//! One reading of `model`: a body the proxy and a backend's parser could read as naming
//! different models (two `model` keys or fields, a fake multipart delimiter) is refused with
//! `ambiguous_model` before any backend sees it; quoted `Content-Disposition` parameters and
//! delimiters are read as RFC 2046 and RFC 7578 say, as Python's `email` package reads them.

use std::io::Write;
use std::process::{Command, Stdio};

use http::StatusCode;

use super::{example, post};
use crate::support::client::{body_bytes, json};

const FORM: &str = "multipart/form-data; boundary=b";

/// A multipart field named by `name` as written (quoted or not).
fn field(name: &str, value: &str) -> String {
    format!("--b\r\nContent-Disposition: form-data; name={name}\r\n\r\n{value}\r\n")
}

/// Posts `body` and checks that it is refused as ambiguous, naming `param: "model"`.
async fn refused(proxy: &crate::support::TestProxy, path: &str, ct: &str, body: String) {
    let res = post(proxy, path, ct, body.clone().into_bytes()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body:?}");
    let v = json(res).await;
    assert_eq!(v["error"]["code"], "ambiguous_model", "{body:?}: {v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "model");
    assert!(
        v["error"]["message"].as_str().unwrap().contains(path),
        "{v}"
    );
}

/// The fields of a multipart body as Python's `email` package reads them: (name, value).
fn python_fields(ct: &str, body: &[u8]) -> Vec<(String, String)> {
    let script = "import sys, json, email\n\
        data = sys.stdin.buffer.read()\n\
        msg = email.message_from_bytes(b'Content-Type: ' + sys.argv[1].encode() + b'\\r\\n\\r\\n' + data)\n\
        print(json.dumps([[p.get_param('name', header='content-disposition'), \
        p.get_payload(decode=True).decode()] for p in msg.get_payload()]))\n";
    let mut child = Command::new(crate::support::tools::python())
        .args(["-c", script, ct])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn a_json_body_naming_model_twice_reaches_no_backend() {
    let (ollama, whisper, openai, proxy) = example().await;
    let chat = "/v1/chat/completions";
    let json_ct = "application/json";
    for body in [
        r#"{"model":"llama3.2","model":"o1-pro"}"#.to_string(),
        format!(
            r#"{{"model":"llama3.2","messages":[{{"role":"user","content":"{}"}}],"model":"o1-pro"}}"#,
            "x".repeat(100_000)
        ),
        r#"{"model":"llama3.2","Model":"o1-pro"}"#.to_string(),
    ] {
        refused(&proxy, chat, json_ct, body).await;
    }
    assert!(ollama.requests().is_empty() && openai.requests().is_empty());
    assert!(whisper.requests().is_empty());
    // One model, nested ones aside, is routed as before.
    let body = br#"{"model":"llama3.2","tools":[{"model":"o1-pro"}]}"#.to_vec();
    let res = post(&proxy, chat, json_ct, body).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-backend"], "ollama");
    body_bytes(res).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_multipart_body_with_two_model_fields_or_a_fake_delimiter_reaches_no_backend() {
    let (ollama, whisper, openai, proxy) = example().await;
    let path = "/v1/audio/transcriptions";
    let two = field("\"model\"", "whisper-1") + &field("model", "o1-pro") + "--b--\r\n";
    refused(&proxy, path, FORM, two).await;
    // `--b` at a line start followed by something else: no delimiter (RFC 2046), and not
    // data either for every parser.
    let fake = field(
        "\"prompt\"",
        "hi\r\n--bx\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\no1-pro",
    ) + &field("\"model\"", "whisper-1")
        + "--b--\r\n";
    refused(&proxy, path, FORM, fake).await;
    // The boundary after a bare LF.
    let bare = field(
        "\"prompt\"",
        "hi\n--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\no1-pro",
    ) + &field("\"model\"", "whisper-1")
        + "--b--\r\n";
    refused(&proxy, path, FORM, bare).await;
    assert!(ollama.requests().is_empty() && openai.requests().is_empty());
    assert!(whisper.requests().is_empty());
    proxy.stop().await;
}

/// Sends `body` to the whisper route and returns what the backend received.
async fn transcribed(ct: &str, body: String) -> Vec<u8> {
    let (_ollama, whisper, openai, proxy) = example().await;
    let res = post(&proxy, "/v1/audio/transcriptions", ct, body.into_bytes()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-backend"], "whisper");
    body_bytes(res).await;
    assert!(openai.requests().is_empty());
    let seen = whisper.requests();
    proxy.stop().await;
    assert_eq!(seen.len(), 1);
    seen[0].body.to_vec()
}

#[tokio::test]
async fn a_quoted_semicolon_does_not_name_a_field_model() {
    // The field is named `x;name=model;`: the quotes hold the `;`. The only `model` field is
    // whisper-1, which the alias rewrites to base.en in place; Python reads the same.
    let body =
        field("\"x;name=model;\"", "o1-pro") + &field("\"model\"", "whisper-1") + "--b--\r\n";
    let got = transcribed(FORM, body).await;
    assert_eq!(
        python_fields(FORM, &got),
        [
            ("x;name=model;".to_string(), "o1-pro".to_string()),
            ("model".to_string(), "base.en".to_string())
        ]
    );
}

#[tokio::test]
async fn the_boundary_inside_a_line_is_data_and_a_quoted_boundary_may_hold_a_semicolon() {
    // `--b;1` not at a line start, even with what looks like a part after it, is the prompt's.
    let ct = "multipart/form-data; boundary=\"b;1\"";
    let prompt =
        "a--b;1\r\nx--b;1--\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\no1-pro";
    let body = [field("\"prompt\"", prompt), field("\"model\"", "whisper-1")]
        .concat()
        .replace("--b\r\n", "--b;1\r\n")
        + "--b;1--\r\n";
    let got = transcribed(ct, body).await;
    assert_eq!(
        python_fields(ct, &got),
        [
            ("prompt".to_string(), prompt.to_string()),
            ("model".to_string(), "base.en".to_string())
        ]
    );
}
