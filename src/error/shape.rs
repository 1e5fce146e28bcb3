//! The JSON of an error in each client API's shape: OpenAI's
//! `{"error":{"message","type","code","param"}}`, Anthropic's
//! `{"type":"error","error":{"type","message"}}` (its `type` from the status, as Anthropic's
//! own errors: `not_found_error`, `rate_limit_error`, `overloaded_error`...) and Ollama's
//! `{"error":"message"}`.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// `{"error":{"message":...,"type":...,"code":...}}`
pub(crate) fn json_error(message: &str, kind: &str, code: &str) -> Bytes {
    json_body(message, kind, code, None)
}

/// `{"error":{"message":...,"type":...,"code":...}}`, and `"param"` when there is one.
pub(super) fn json_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Bytes {
    #[derive(serde::Serialize)]
    struct Inner<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        param: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Outer<'a> {
        error: Inner<'a>,
    }
    let body = Outer {
        error: Inner {
            message,
            kind,
            code,
            param,
        },
    };
    // Serializing three strings cannot fail; fall back to a fixed body all the same.
    serde_json::to_vec(&body).map_or_else(
        |_| {
            Bytes::from_static(
                b"{\"error\":{\"message\":\"error\",\"type\":\"proxy_error\",\"code\":null}}",
            )
        },
        Bytes::from,
    )
}

/// Anthropic's error type for a status.
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type":...,"message":...}}`
pub(super) fn anthropic(message: &str, status: StatusCode) -> Bytes {
    let v = json!({
        "type": "error",
        "error": { "type": anthropic_type(status), "message": message },
    });
    Bytes::from(v.to_string())
}

/// `{"error":"message"}`
pub(super) fn ollama(message: &str) -> Bytes {
    Bytes::from(json!({ "error": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_has_its_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&anthropic("no", StatusCode::TOO_MANY_REQUESTS)).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "no"}})
        );
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
        ] {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(anthropic_type(s), kind, "{status}");
        }
        let v: serde_json::Value = serde_json::from_slice(&ollama("gone")).unwrap();
        assert_eq!(v, json!({"error": "gone"}));
    }
}
