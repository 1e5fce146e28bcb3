//! Token usage, found in a backend's answer as it streams to the client: nothing is held back,
//! no byte is changed, and only a bounded part is kept to look at.
//!
//! - A JSON answer (`application/json`: OpenAI's chat, completions, embeddings and Responses
//!   API, Anthropic's Messages, Ollama's native API without streaming) keeps its last
//!   [`TAIL`] bytes; at its end, the last `"usage"` object there gives the counts
//!   (`prompt_tokens`/`completion_tokens`, or `input_tokens`/`output_tokens`), else Ollama's
//!   `prompt_eval_count`/`eval_count`.
//! - A stream of server-sent events (`text/event-stream`) is read event line by event line as
//!   it passes (a line longer than [`MAX_LINE`] is skipped): the `usage` of OpenAI's last chunk
//!   (when the client asked for it with `stream_options.include_usage`), of the Responses
//!   API's `response.completed`, of Anthropic's `message_start` and `message_delta`. Only a
//!   line that names `usage` is parsed. `data: [DONE]`, `response.completed` and
//!   `message_stop` end the stream.
//! - Ollama's streamed NDJSON (`application/x-ndjson`): the line with `"done":true` has the
//!   counts, and ends the stream.
//!
//! Where a backend sends no usage, the counts are absent: nothing is guessed.

use http::header::{self, HeaderMap};
use memchr::memmem;
use serde_json::Value;

/// How much of a JSON answer's end is kept to find its `usage`.
pub(crate) const TAIL: usize = 4096;
/// The longest event line read; a longer one (a huge chunk of text) is skipped.
pub(crate) const MAX_LINE: usize = 64 << 10;

/// The counts an answer carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Tokens of the prompt (`prompt_tokens`, `input_tokens`, `prompt_eval_count`).
    pub prompt: Option<u64>,
    /// Tokens generated (`completion_tokens`, `output_tokens`, `eval_count`).
    pub completion: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Events,
    NdJson,
}

/// Reads one answer's usage as its bytes pass.
#[derive(Debug)]
pub(crate) struct UsageScanner {
    kind: Kind,
    /// JSON: the answer's last bytes (up to twice [`TAIL`]); a stream: its current line so far.
    kept: Vec<u8>,
    /// The current line is too long: skipped up to its end.
    skipping: bool,
    usage: Usage,
    /// The stream's last event passed.
    ended: bool,
}

impl UsageScanner {
    /// A scanner for an answer with these headers, or `None` for one that carries no usage
    /// (audio, a model list as text, ...).
    pub(crate) fn for_response(headers: &HeaderMap) -> Option<UsageScanner> {
        let ct = headers.get(header::CONTENT_TYPE)?.as_bytes();
        let kind = if starts_with_ignore_case(ct, b"text/event-stream") {
            Kind::Events
        } else if starts_with_ignore_case(ct, b"application/x-ndjson") {
            Kind::NdJson
        } else if starts_with_ignore_case(ct, b"application/json") {
            Kind::Json
        } else {
            return None;
        };
        Some(UsageScanner {
            kind,
            kept: Vec::new(),
            skipping: false,
            usage: Usage::default(),
            ended: false,
        })
    }

    /// The next bytes of the answer.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        if self.kind == Kind::Json {
            self.keep_tail(data);
            return;
        }
        while let Some(nl) = memchr::memchr(b'\n', data) {
            let (line, rest) = (&data[..nl], &data[nl + 1..]);
            if self.kept.is_empty() && !self.skipping {
                self.line(line);
            } else if !self.skipping && self.kept.len() + line.len() <= MAX_LINE {
                let mut whole = std::mem::take(&mut self.kept);
                whole.extend_from_slice(line);
                self.line(&whole);
                whole.clear();
                self.kept = whole;
            }
            self.kept.clear();
            self.skipping = false;
            data = rest;
        }
        if self.skipping || self.kept.len() + data.len() > MAX_LINE {
            self.skipping = true;
            self.kept = Vec::new();
        } else {
            self.kept.extend_from_slice(data);
        }
    }

    /// Whether the stream's terminal event has passed (a client that goes away after it got
    /// the whole answer).
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// The counts found, once the answer is over (or was cut).
    pub(crate) fn finish(&mut self) -> Usage {
        match self.kind {
            Kind::Json => json_tail_usage(&self.kept),
            Kind::Events | Kind::NdJson => {
                // A last line without its newline.
                if !self.skipping && !self.kept.is_empty() {
                    let line = std::mem::take(&mut self.kept);
                    self.line(&line);
                }
                self.usage
            }
        }
    }

    fn keep_tail(&mut self, data: &[u8]) {
        if data.len() >= TAIL {
            self.kept.clear();
            self.kept.extend_from_slice(&data[data.len() - TAIL..]);
            return;
        }
        if self.kept.len() + data.len() > 2 * TAIL {
            let drop = self.kept.len() + data.len() - TAIL;
            self.kept.drain(..drop.min(self.kept.len()));
        }
        self.kept.extend_from_slice(data);
    }

    /// One complete line of a stream (without its newline).
    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.kind {
            Kind::Events => {
                let Some(data) = line.strip_prefix(b"data:") else {
                    return;
                };
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    self.ended = true;
                } else if memmem::find(data, b"\"usage\"").is_some()
                    || memmem::find(data, b"message_stop").is_some()
                {
                    self.event(data);
                }
            }
            Kind::NdJson => {
                if memmem::find(line, b"\"done\"").is_some() {
                    self.ollama_line(line);
                }
            }
            Kind::Json => {}
        }
    }

    /// An event that names `usage` (or Anthropic's last).
    fn event(&mut self, data: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match v["type"].as_str() {
            Some("response.completed") => {
                self.ended = true;
                self.merge(usage_object(&v["response"]["usage"]));
            }
            Some("message_stop") => self.ended = true,
            Some("message_start") => self.merge(usage_object(&v["message"]["usage"])),
            _ => self.merge(usage_object(&v["usage"])),
        }
    }

    fn ollama_line(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if v["done"] == Value::Bool(true) {
            self.ended = true;
            self.merge(ollama_counts(&v));
        }
    }

    /// Counts found later win; a part not found keeps what was found before (Anthropic
    /// sends the prompt's count first, the completion's at the end).
    fn merge(&mut self, found: Usage) {
        self.usage.prompt = found.prompt.or(self.usage.prompt);
        self.usage.completion = found.completion.or(self.usage.completion);
    }
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The counts of a `usage` object, in OpenAI's words or Anthropic's and the Responses API's.
fn usage_object(u: &Value) -> Usage {
    let count = |a: &str, b: &str| u[a].as_u64().or_else(|| u[b].as_u64());
    Usage {
        prompt: count("prompt_tokens", "input_tokens"),
        completion: count("completion_tokens", "output_tokens"),
    }
}

/// Ollama's native counts.
fn ollama_counts(v: &Value) -> Usage {
    Usage {
        prompt: v["prompt_eval_count"].as_u64(),
        completion: v["eval_count"].as_u64(),
    }
}

/// The usage at the end of a JSON answer: its last `"usage": {...}`, else Ollama's counts.
/// Read by finding the keys, not by parsing the JSON: this runs for every JSON answer.
fn json_tail_usage(tail: &[u8]) -> Usage {
    if let Some(at) = memmem::rfind(tail, b"\"usage\"") {
        let usage = &tail[at..];
        let found = Usage {
            prompt: number_after(usage, b"\"prompt_tokens\"")
                .or_else(|| number_after(usage, b"\"input_tokens\"")),
            completion: number_after(usage, b"\"completion_tokens\"")
                .or_else(|| number_after(usage, b"\"output_tokens\"")),
        };
        if found != Usage::default() {
            return found;
        }
    }
    let last = |key: &[u8]| number_after(&tail[memmem::rfind(tail, key)?..], key);
    Usage {
        prompt: last(b"\"prompt_eval_count\""),
        completion: last(b"\"eval_count\""),
    }
}

/// The whole number after the first `key` in `hay`: `"key": 123`.
fn number_after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = memmem::find(hay, key)?;
    let rest = hay[at + key.len()..]
        .trim_ascii_start()
        .strip_prefix(b":")?;
    let rest = rest.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn scanner(content_type: &'static str) -> UsageScanner {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        UsageScanner::for_response(&h).unwrap()
    }

    /// Feeds `body` in pieces of `step` bytes.
    fn scan(content_type: &'static str, body: &str, step: usize) -> (Usage, bool) {
        let mut s = scanner(content_type);
        for piece in body.as_bytes().chunks(step) {
            s.feed(piece);
        }
        let u = s.finish();
        (u, s.ended())
    }

    fn counts(prompt: u64, completion: u64) -> Usage {
        Usage {
            prompt: Some(prompt),
            completion: Some(completion),
        }
    }

    #[test]
    fn json_answers() {
        let chat = r#"{"id":"c","choices":[{"message":{"content":"hi \"usage\": 9"}}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        for step in [1, 7, 4096] {
            assert_eq!(scan("application/json", chat, step).0, counts(12, 3));
        }
        let responses = r#"{"object":"response","usage":{"input_tokens":5,"output_tokens":8}}"#;
        assert_eq!(
            scan("application/json; charset=utf-8", responses, 3).0,
            counts(5, 8)
        );
        let embeddings = r#"{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let e = scan("application/json", embeddings, 5).0;
        assert_eq!((e.prompt, e.completion), (Some(4), None));
        let ollama = r#"{"model":"m","done":true,"prompt_eval_count":26,"eval_count":290}"#;
        assert_eq!(scan("application/json", ollama, 2).0, counts(26, 290));
        assert_eq!(
            scan("application/json", r#"{"a":1}"#, 1).0,
            Usage::default()
        );
    }

    #[test]
    fn a_long_json_answer_keeps_only_its_end() {
        let body = format!(
            r#"{{"choices":[{{"text":"{}"}}],"usage":{{"prompt_tokens":1,"completion_tokens":2}}}}"#,
            "x".repeat(1 << 20)
        );
        let mut s = scanner("application/json");
        for piece in body.as_bytes().chunks(1000) {
            s.feed(piece);
            assert!(s.kept.len() <= 2 * TAIL);
        }
        assert_eq!(s.finish(), counts(1, 2));
    }

    #[test]
    fn openai_streams() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n\
                      data: [DONE]\n\n";
        for step in [1, 5, 1000] {
            assert_eq!(
                scan("text/event-stream", stream, step),
                (counts(7, 2), true)
            );
        }
        // Without include_usage: no counts; cut before [DONE]: not ended.
        let plain = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        assert_eq!(
            scan("text/event-stream", plain, 3),
            (Usage::default(), false)
        );
    }

    #[test]
    fn responses_and_anthropic_streams() {
        let responses = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\n\
                         event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":4}}}\n\n";
        assert_eq!(
            scan("text/event-stream", responses, 11),
            (counts(9, 4), true)
        );
        let anthropic = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
                         event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\r\n\r\n\
                         event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";
        assert_eq!(
            scan("text/event-stream", anthropic, 4),
            (counts(25, 15), true)
        );
    }

    #[test]
    fn ollama_ndjson_streams() {
        let stream = "{\"message\":{\"content\":\"a\"},\"done\":false}\n\
                      {\"done\":true,\"prompt_eval_count\":10,\"eval_count\":20}";
        assert_eq!(
            scan("application/x-ndjson", stream, 6),
            (counts(10, 20), true)
        );
    }

    #[test]
    fn a_line_longer_than_the_limit_is_skipped_not_kept() {
        let mut s = scanner("text/event-stream");
        s.feed(b"data: ");
        for _ in 0..100 {
            s.feed(&[b'x'; 1024]);
        }
        assert!(s.kept.is_empty() && s.skipping);
        s.feed(
            b"\ndata: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\ndata: [DONE]\n",
        );
        assert_eq!(s.finish(), counts(1, 1));
        assert!(s.ended());
    }

    #[test]
    fn other_answers_have_no_scanner() {
        let mut h = HeaderMap::new();
        assert!(UsageScanner::for_response(&h).is_none());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
        assert!(UsageScanner::for_response(&h).is_none());
    }
}
