//! The client APIs the proxy serves behind one address, told apart by path: Ollama's native
//! API (`/api/...`), Anthropic's Messages API (`/v1/messages...`, or any request with an
//! `anthropic-version` header, as Anthropic's clients send on every call, `GET /v1/models`
//! included) and OpenAI's (everything else, the Responses API included). What the proxy
//! answers itself (its errors, the model lists) takes the shape of the request's API; a
//! backend says which APIs it speaks (`api`), which decides the lists it takes part in.

use std::fmt;

use super::routes::under;

/// One client API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    OpenAi,
    Ollama,
    Anthropic,
}

impl Api {
    /// Every API, in the order they are listed.
    pub const ALL: [Api; 3] = [Api::OpenAi, Api::Ollama, Api::Anthropic];

    /// Its name in the config (`api = [...]`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Ollama => "ollama",
            Api::Anthropic => "anthropic",
        }
    }

    /// The API named `name`.
    pub fn parse(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The API a (normalized) path belongs to.
    pub fn of_path(path: &str) -> Api {
        if under(path, "/api") {
            Api::Ollama
        } else if under(path, "/v1/messages") {
            Api::Anthropic
        } else {
            Api::OpenAi
        }
    }

    /// The API of a request: its path's, except that a request with an `anthropic-version`
    /// header outside `/api` is an Anthropic client's.
    pub fn of_request(path: &str, anthropic_version: bool) -> Api {
        match Api::of_path(path) {
            Api::OpenAi if anthropic_version => Api::Anthropic,
            api => api,
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of APIs: what a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Apis(u8);

impl Apis {
    fn bit(api: Api) -> u8 {
        1 << api as u8
    }

    pub fn insert(&mut self, api: Api) {
        self.0 |= Apis::bit(api);
    }

    pub fn contains(self, api: Api) -> bool {
        self.0 & Apis::bit(api) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Its APIs, in [`Api::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Api> {
        Api::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Api> for Apis {
    fn from_iter<I: IntoIterator<Item = Api>>(iter: I) -> Self {
        let mut set = Apis::default();
        for a in iter {
            set.insert(a);
        }
        set
    }
}

impl fmt::Display for Apis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Api::name).collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_headers() {
        assert_eq!(Api::of_path("/api/chat"), Api::Ollama);
        assert_eq!(Api::of_path("/api"), Api::Ollama);
        assert_eq!(Api::of_path("/apis/x"), Api::OpenAi);
        assert_eq!(Api::of_path("/v1/messages"), Api::Anthropic);
        assert_eq!(Api::of_path("/v1/messages/count_tokens"), Api::Anthropic);
        assert_eq!(Api::of_path("/v1/messagesx"), Api::OpenAi);
        assert_eq!(Api::of_path("/v1/responses"), Api::OpenAi);
        assert_eq!(Api::of_request("/v1/models", true), Api::Anthropic);
        assert_eq!(Api::of_request("/v1/models", false), Api::OpenAi);
        assert_eq!(Api::of_request("/api/tags", true), Api::Ollama);
    }

    #[test]
    fn sets() {
        let s: Apis = [Api::Anthropic, Api::OpenAi].into_iter().collect();
        assert!(s.contains(Api::OpenAi) && !s.contains(Api::Ollama));
        assert_eq!(s.to_string(), "openai, anthropic");
        assert!(Apis::default().is_empty());
        assert_eq!(Api::parse("ollama"), Some(Api::Ollama));
        assert_eq!(Api::parse("OpenAI"), None);
    }
}
