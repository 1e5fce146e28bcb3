//! Token usage, found in a backend's answer as it streams to the client: nothing is held back,
//! no byte is changed, and only a bounded part is kept to look at.
//!
//! - A JSON answer (`application/json`: OpenAI's chat, completions, embeddings and Responses
//!   API, Anthropic's Messages, Ollama's native API without streaming): each piece is searched
//!   for a `"usage"` key (and Ollama's `"prompt_eval_count"`); from the last one on, at most
//!   [`TAIL`] bytes are read when the answer ends: the counts are `prompt_tokens`/
//!   `completion_tokens`, or `input_tokens`/`output_tokens`, else Ollama's
//!   `prompt_eval_count`/`eval_count`. A piece that holds its usage whole is read in place,
//!   copying nothing; only a usage split between pieces is kept.
//! - A stream of server-sent events (`text/event-stream`) is read event line by event line as
//!   it passes (a line longer than [`MAX_LINE`] is skipped): the `usage` of OpenAI's last chunk
//!   (when the client asked for it with `stream_options.include_usage`), of the Responses
//!   API's `response.completed`, of Anthropic's `message_start` and `message_delta`. Only a
//!   line that names `usage` is parsed. `data: [DONE]`, `response.completed` and
//!   `message_stop` (the `event:` line, or the data's leading `"type"`) end the stream.
//! - Ollama's streamed NDJSON (`application/x-ndjson`): the line with `"done":true` has the
//!   counts, and ends the stream.
//!
//! - llama.cpp's `timings` (sent after `usage`) give its own prompt and generation speeds.
//! - The answer's first bytes name the model that answered ([`model`]).
//!
//! Where a backend sends no usage, the counts are absent: nothing is guessed.

mod json;
mod model;

pub(crate) use model::IdTap;

use http::header::{self, HeaderMap};
use memchr::memmem;

use self::json::json_usage;
use self::model::AnswerModel;

/// How much of a JSON answer is read from its last `usage` key on.
pub(crate) const TAIL: usize = 4096;
/// Bytes of a piece's end kept to find a key split between two pieces.
const EDGE: usize = 24;

/// The longest event line read; a longer one (a huge chunk of text) is skipped.
pub(crate) const MAX_LINE: usize = 64 << 10;

/// The counts an answer carried.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    /// Tokens of the prompt (`prompt_tokens`, `input_tokens`, `prompt_eval_count`).
    pub prompt: Option<u64>,
    /// Tokens generated (`completion_tokens`, `output_tokens`, `eval_count`).
    pub completion: Option<u64>,
    /// The backend's own measure of its speeds (llama.cpp's `timings`), tokens per second.
    pub prompt_per_second: Option<f64>,
    pub generated_per_second: Option<f64>,
}

impl Usage {
    /// Prompt and completion tokens together (what a client's token limits count).
    pub(crate) fn tokens(&self) -> u64 {
        self.prompt
            .unwrap_or(0)
            .saturating_add(self.completion.unwrap_or(0))
    }
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
    /// JSON: the answer from its last counts key on, when that is split between pieces (up to
    /// [`TAIL`]); a stream: its current line so far.
    kept: Vec<u8>,
    /// JSON: the end of the last piece, for a key split between two pieces.
    edge: [u8; EDGE],
    edge_len: usize,
    /// The current line is too long: skipped up to its end.
    skipping: bool,
    usage: Usage,
    /// The stream's last event passed.
    ended: bool,
    /// The model the answer names.
    model: AnswerModel,
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
            edge: [0; EDGE],
            edge_len: 0,
            skipping: false,
            usage: Usage::default(),
            ended: false,
            model: AnswerModel::default(),
        })
    }

    /// The next bytes of the answer.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        self.model.feed(data);
        if self.kind == Kind::Json {
            self.json_piece(data);
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

    /// Whether the answer is a stream (events, or Ollama's lines).
    pub(crate) fn is_stream(&self) -> bool {
        self.kind != Kind::Json
    }

    /// The model the answer named, if it did (once).
    pub(crate) fn take_model(&mut self) -> Option<Box<str>> {
        self.model.take()
    }

    /// The counts found, once the answer is over (or was cut).
    pub(crate) fn finish(&mut self) -> Usage {
        match self.kind {
            Kind::Json => {
                if !self.kept.is_empty() {
                    self.usage = json_usage(&self.kept);
                }
                self.usage
            }
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

    /// One piece of a JSON answer: the counts after its last counts key, read in place when
    /// they end in it, else kept (with what follows, up to [`TAIL`]) for the pieces to come.
    fn json_piece(&mut self, data: &[u8]) {
        let keys = keys();
        // Forward searches (SIMD) for the last occurrence: faster than a reverse search.
        let found = (keys.usage_fwd.find_iter(data).last())
            .or_else(|| keys.ollama_fwd.find_iter(data).last());
        match found {
            Some(at) => {
                self.kept.clear();
                let from = &data[at..];
                // Both counts in this piece (the usual case): read in place, nothing copied.
                let found = json_usage(from);
                if found.prompt.is_some() && found.completion.is_some() {
                    self.usage = found;
                } else {
                    self.kept.extend_from_slice(&from[..from.len().min(TAIL)]);
                }
            }
            None if !self.kept.is_empty() => {
                let room = TAIL.saturating_sub(self.kept.len());
                self.kept.extend_from_slice(&data[..data.len().min(room)]);
            }
            None => {
                // A key split between the last piece and this one.
                let mut joined = [0u8; 2 * EDGE];
                let head = &data[..data.len().min(EDGE)];
                joined[..self.edge_len].copy_from_slice(&self.edge[..self.edge_len]);
                joined[self.edge_len..self.edge_len + head.len()].copy_from_slice(head);
                let joined = &joined[..self.edge_len + head.len()];
                let at = [keys.usage_fwd.find(joined), keys.ollama_fwd.find(joined)]
                    .into_iter()
                    .flatten()
                    .min();
                if let Some(at) = at.filter(|&at| at < self.edge_len) {
                    self.kept.extend_from_slice(&joined[at..self.edge_len]);
                    self.kept.extend_from_slice(&data[..data.len().min(TAIL)]);
                }
            }
        }
        // The stream's last EDGE bytes, across pieces however small.
        if data.len() >= EDGE {
            self.edge.copy_from_slice(&data[data.len() - EDGE..]);
            self.edge_len = EDGE;
        } else {
            let keep = self.edge_len.min(EDGE - data.len());
            self.edge
                .copy_within(self.edge_len - keep..self.edge_len, 0);
            self.edge[keep..keep + data.len()].copy_from_slice(data);
            self.edge_len = keep + data.len();
        }
    }

    /// One complete line of a stream (without its newline).
    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let keys = keys();
        match self.kind {
            Kind::Events => {
                let Some(data) = line.strip_prefix(b"data:") else {
                    // `event: response.completed`, `event: message_stop`.
                    if let Some(event) = line.strip_prefix(b"event:") {
                        self.ended |= is_terminal(event.trim_ascii());
                    }
                    return;
                };
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    self.ended = true;
                    return;
                }
                // OpenAI's chunks say `"usage":null` until the last: only an object is read.
                if let Some(at) = keys.usage_fwd.find_iter(data).last() {
                    let after = data[at + USAGE.len()..].trim_ascii_start();
                    let object = after.strip_prefix(b":").map(<[u8]>::trim_ascii_start);
                    if object.is_some_and(|o| o.starts_with(b"{")) {
                        self.merge(json_usage(&data[at..]));
                    }
                }
                // The event's type comes first in the Responses API's and Anthropic's events.
                if leading_type(data).is_some_and(is_terminal) {
                    self.ended = true;
                }
            }
            Kind::NdJson => {
                if keys.done.find(line).is_some() {
                    self.ended = true;
                    self.merge(json_usage(line));
                }
            }
            Kind::Json => {}
        }
    }

    /// Counts found later win; a part not found keeps what was found before (Anthropic
    /// sends the prompt's count first, the completion's at the end).
    fn merge(&mut self, found: Usage) {
        let u = &mut self.usage;
        u.prompt = found.prompt.or(u.prompt);
        u.completion = found.completion.or(u.completion);
        u.prompt_per_second = found.prompt_per_second.or(u.prompt_per_second);
        u.generated_per_second = found.generated_per_second.or(u.generated_per_second);
    }
}

/// The last event of a Responses API stream, or of Anthropic's.
fn is_terminal(event_type: &[u8]) -> bool {
    event_type == b"response.completed" || event_type == b"message_stop"
}

/// The value of a JSON object's first member when it is `"type": "..."`: read in place, with
/// no search (this runs for every event).
fn leading_type(json: &[u8]) -> Option<&[u8]> {
    let rest = json.strip_prefix(b"{")?.trim_ascii_start();
    let rest = rest.strip_prefix(b"\"type\"")?.trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    Some(&rest[..end])
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

const USAGE: &[u8] = b"\"usage\"";
const OLLAMA: &[u8] = b"\"prompt_eval_count\"";

/// The searchers, made once: making one costs more than a search of a small answer.
struct Keys {
    usage_fwd: memmem::Finder<'static>,
    ollama_fwd: memmem::Finder<'static>,
    done: memmem::Finder<'static>,
}

fn keys() -> &'static Keys {
    static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| Keys {
        usage_fwd: memmem::Finder::new(USAGE),
        ollama_fwd: memmem::Finder::new(OLLAMA),
        done: memmem::Finder::new(b"\"done\":true"),
    })
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
            ..Usage::default()
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
    fn json_usage_split_anywhere_between_pieces_is_found() {
        let body = r#"{"output":[{"text":"hi"}],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":0},"output_tokens":8}}"#;
        for cut in 1..body.len() {
            let (a, b) = body.as_bytes().split_at(cut);
            let mut s = scanner("application/json");
            s.feed(a);
            s.feed(b);
            assert_eq!(s.finish(), counts(5, 8), "cut at {cut}");
        }
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
    fn llama_cpp_answers_give_model_and_speeds() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"created\":1,\"id\":\"c\",\"model\":\"qwen2.5-0.5b\",\"object\":\"chat.completion.chunk\"}\n\n\
                      data: {\"choices\":[],\"usage\":{\"completion_tokens\":8,\"prompt_tokens\":5},\"timings\":{\"prompt_per_second\":400.0,\"predicted_per_second\":52.5}}\n\n\
                      data: [DONE]\n\n";
        for step in [3, 4096] {
            let mut s = scanner("text/event-stream");
            for piece in stream.as_bytes().chunks(step.max(100)) {
                s.feed(piece);
            }
            let u = s.finish();
            assert_eq!((u.prompt, u.completion), (Some(5), Some(8)));
            assert_eq!(
                (u.prompt_per_second, u.generated_per_second),
                (Some(400.0), Some(52.5))
            );
            assert_eq!(s.take_model().as_deref(), Some("qwen2.5-0.5b"));
        }
    }

    #[test]
    fn terminal_events_by_their_event_line_or_their_leading_type() {
        for stream in [
            "event: response.completed\ndata: {}\n\n",
            "data: {\"type\": \"response.completed\", \"response\": {}}\n\n",
            "data: { \"type\":\"message_stop\"}\n\n",
        ] {
            assert!(scan("text/event-stream", stream, 5).1, "{stream:?}");
        }
        for stream in [
            "event: response.output_text.delta\ndata: {\"delta\":\"message_stop\"}\n\n",
            "data: {\"type\":\"response.completed.not\"}\n\n",
            "data: {\"x\":1,\"type\":\"message_stop\"}\n\n",
        ] {
            assert!(!scan("text/event-stream", stream, 5).1, "{stream:?}");
        }
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
