//! The model an answer says it came from: the first `"model":"NAME"` in its first bytes
//! (OpenAI's answers and chunks, the Responses API's `response.created`, Anthropic's
//! `message_start` and Ollama's answers all name it near their start). What the backend ran
//! after an alias, or the model of a route that does not read the request's model.
//!
//! The same search finds a Responses API answer's id, its first `"id"` ([`IdTap`]): the
//! response object's own, first in a JSON answer and in the `response.created` event.

use memchr::memmem;

/// How far into an answer the model is looked for.
pub(crate) const MODEL_WITHIN: usize = 2048;

/// The longest model name kept; a longer one is not taken.
const MAX_NAME: usize = 200;

/// Looks for the model in an answer's first [`MODEL_WITHIN`] bytes, piece by piece. A key cut
/// between two pieces is not found (the pieces of an answer's start are seldom that small).
#[derive(Debug, Default)]
pub(crate) struct AnswerModel {
    seen: usize,
    name: Option<Box<str>>,
    /// Looks for `"id"` instead of `"model"`.
    id: bool,
}

impl AnswerModel {
    /// The next piece of the answer.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.name.is_some() || self.seen >= MODEL_WITHIN {
            return;
        }
        let window = &data[..data.len().min(MODEL_WITHIN - self.seen)];
        self.seen += window.len();
        let (finder, key) = if self.id {
            (finder(&ID_FINDER, ID), ID)
        } else {
            (finder(&MODEL_FINDER, KEY), KEY)
        };
        for at in finder.find_iter(window) {
            if let Some(name) = value_at(&data[at + key.len()..]) {
                self.name = Some(name.into());
                return;
            }
        }
    }

    /// The model, once found.
    pub(crate) fn take(&mut self) -> Option<Box<str>> {
        self.name.take()
    }
}

const KEY: &[u8] = b"\"model\"";
const ID: &[u8] = b"\"id\"";

type Finder = std::sync::OnceLock<memmem::Finder<'static>>;
static MODEL_FINDER: Finder = Finder::new();
static ID_FINDER: Finder = Finder::new();

fn finder(cell: &'static Finder, key: &'static [u8]) -> &'static memmem::Finder<'static> {
    cell.get_or_init(|| memmem::Finder::new(key))
}

/// What is done with an answer's id.
pub(crate) type Then = Box<dyn FnOnce(&str) + Send + Sync>;

/// Finds a Responses API answer's id as the answer passes, and hands it on once.
pub(crate) struct IdTap {
    find: AnswerModel,
    then: Option<Then>,
}

impl IdTap {
    /// Calls `then` with the answer's id as soon as it has passed.
    pub(crate) fn new(then: Then) -> IdTap {
        IdTap {
            find: AnswerModel {
                id: true,
                ..AnswerModel::default()
            },
            then: Some(then),
        }
    }

    /// The next piece of the answer.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.then.is_none() {
            return;
        }
        self.find.feed(data);
        if let Some(id) = self.find.take() {
            if let Some(then) = self.then.take() {
                then(&id);
            }
        }
    }
}

/// The string value after a key (`: "NAME"`), when it is a plain one: no escapes, no control
/// characters, valid UTF-8, not empty, at most [`MAX_NAME`] bytes.
fn value_at(after_key: &[u8]) -> Option<&str> {
    let rest = after_key.trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', &rest[..rest.len().min(MAX_NAME + 1)])?;
    let name = &rest[..end];
    if rest[end] != b'"' || name.is_empty() || name.iter().any(|b| b.is_ascii_control()) {
        return None;
    }
    std::str::from_utf8(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(pieces: &[&str]) -> Option<String> {
        let mut m = AnswerModel::default();
        for p in pieces {
            m.feed(p.as_bytes());
        }
        m.take().map(String::from)
    }

    #[test]
    fn the_first_plain_model_value_near_the_start() {
        assert_eq!(
            found(&[r#"{"id":"x","object":"chat.completion","model" : "llama3:8b","#]),
            Some("llama3:8b".into())
        );
        assert_eq!(
            found(&["data: {\"id\":1,", "\"model\":\"qwen\"}\n\n"]),
            Some("qwen".into())
        );
        // A "model" object (not a string) is passed over for the next one.
        assert_eq!(
            found(&[r#"{"model":{"a":1},"x":{"model":"m2"}}"#]),
            Some("m2".into())
        );
    }

    #[test]
    fn a_responses_answer_id() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let to = seen.clone();
        let mut tap = IdTap::new(Box::new(move |id| to.lock().unwrap().push(id.to_string())));
        tap.feed(b"event: response.created\ndata: {\"type\":\"response.created\",");
        tap.feed(b"\"response\":{\"id\": \"resp_1\",\"model\":\"m\"}}\n\n");
        tap.feed(b"data: {\"id\":\"resp_2\"}\n\n");
        assert_eq!(*seen.lock().unwrap(), ["resp_1"]);
    }

    #[test]
    fn odd_or_late_values_are_not_taken() {
        assert_eq!(found(&[r#"{"model":"a\"b"}"#]), None);
        assert_eq!(found(&[r#"{"model":""}"#]), None);
        assert_eq!(
            found(&[&format!(r#"{{"model":"{}"}}"#, "m".repeat(201))]),
            None
        );
        let late = format!(r#"{{"text":"{}","model":"m"}}"#, "x".repeat(MODEL_WITHIN));
        assert_eq!(found(&[&late]), None);
        assert_eq!(found(&[&"x".repeat(MODEL_WITHIN), r#""model":"m""#]), None);
    }
}
