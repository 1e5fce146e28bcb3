//! Key-bearing query parameters (Google's `key`, Azure's `api-key`): found as a lenient
//! server would read them, and removed for backends that must not get the client's key.

/// Query parameters that carry an API key in some APIs (Google's `key`, Azure's `api-key`).
const KEY_PARAMS: [&[u8]; 3] = [b"key", b"api-key", b"api_key"];

/// Whether one `name=value` pair of a query names a key parameter: its name percent-decoded,
/// in any case, as a lenient server would read it.
fn is_key_param(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(n, _)| n).as_bytes();
    let mut decoded = [0u8; 7];
    let (mut len, mut i) = (0, 0);
    while i < name.len() {
        let b = match (name[i], name.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        i += 2;
                        b
                    }
                    None => b'%',
                }
            }
            (b, _) => b,
        };
        i += 1;
        if len == decoded.len() {
            return false;
        }
        decoded[len] = b;
        len += 1;
    }
    KEY_PARAMS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(&decoded[..len]))
}

/// The query without its key-bearing parameters (`key`, `api-key`, `api_key`; pairs split at
/// `&` or `;`, as some servers do), or `None` when it has none, the usual case, which copies
/// nothing. The other pairs and their separators stay as they were; the result may be empty.
pub fn without_key_params(query: &str) -> Option<String> {
    if !query.split(['&', ';']).any(is_key_param) {
        return None;
    }
    let mut out = String::with_capacity(query.len());
    let (mut rest, mut sep, mut wrote) = (query, None, false);
    loop {
        let (pair, next) = match rest.find(['&', ';']) {
            Some(i) => (&rest[..i], Some((&rest[i..=i], &rest[i + 1..]))),
            None => (rest, None),
        };
        if !is_key_param(pair) {
            if let (true, Some(sep)) = (wrote, sep) {
                out.push_str(sep);
            }
            out.push_str(pair);
            wrote = true;
        }
        match next {
            Some((s, r)) => (sep, rest) = (Some(s), r),
            None => return Some(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_query_parameters() {
        for (query, stripped) in [
            ("stream=true", None),
            ("keys=1&monkey=2&api-keys=3", None),
            ("key=s", Some("")),
            ("a=1&key=s&b=2", Some("a=1&b=2")),
            ("KEY=s&Api-Key=t&api_key=u&API%5Fkey=v&%6bey=w&a", Some("a")),
            ("a=1;key=s;b=2", Some("a=1;b=2")),
            ("key=s&a=1;b=2", Some("a=1;b=2")),
            ("a=1&key", Some("a=1")),
            ("%zz=1&key=%", Some("%zz=1")),
        ] {
            assert_eq!(without_key_params(query).as_deref(), stripped, "{query:?}");
        }
    }
}
