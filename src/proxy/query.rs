//! Key-bearing query parameters (Google's `key`, Azure's `api-key`): found as a lenient
//! server would read them, and removed for backends that must not get the client's key.

/// Key-like names, once normalized ([`is_key_param`]): Google's `key`, Azure's `api-key` and
/// every spelling of it.
const KEY_PARAMS: [&[u8]; 2] = [b"key", b"apikey"];

/// The bytes of a query parameter's name, percent-decoded once (a `%` not followed by two hex
/// digits stays as it is).
fn decoded(name: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *name.get(i)?;
        i += 1;
        if b != b'%' {
            return Some(b);
        }
        let hex = name.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(d) => {
                i += 2;
                Some(d)
            }
            None => Some(b'%'),
        }
    })
}

/// Whether one `name=value` pair of a query names a key parameter, as a lenient server might
/// read it: its name percent-decoded, without one trailing `[]` (PHP's and Rails' arrays),
/// without separators (`-`, `_`, `.`, `+` and space, NUL), in any case, is `key` or `apikey`.
/// So `key`, `KEY`, `api-key`, `api_key`, `apikey`, `Api.Key`, `api+key`, `+key`, `key[]`,
/// `key%00`, `%6bey` are key-like; `keys`, `monkey`, `api-keys`, `x-api-key` are not.
fn is_key_param(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(n, _)| n).as_bytes();
    let mut kept = [0u8; 6];
    let (mut len, mut bracket) = (0, 0);
    for b in decoded(name) {
        match (bracket, b) {
            // After `[]` only separators may follow.
            (2, b'-' | b'_' | b'.' | b'+' | b' ' | 0) => {}
            (2, _) => return false,
            (0, b'[') => bracket = 1,
            (1, b']') => bracket = 2,
            (1, _) => return false,
            (_, b'-' | b'_' | b'.' | b'+' | b' ' | 0) => {}
            (_, b) if len < kept.len() => {
                kept[len] = b.to_ascii_lowercase();
                len += 1;
            }
            _ => return false,
        }
    }
    bracket != 1 && KEY_PARAMS.contains(&&kept[..len])
}

/// The query without its key-bearing parameters (key-like names: [`is_key_param`]; pairs split at
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
            // Separators, arrays, NUL, other spellings.
            ("+key=s&api.key=t&key[]=u&key%00=v&a=1", Some("a=1")),
            (
                "apikey=s&API+Key=t&api%20key=u&Api-Key%5B%5D=v&k_e_y=w&a",
                Some("a"),
            ),
            ("x-api-key=1&api-key-id=2&key[0]=3&key[=4&k[]ey=5", None),
            (
                "keyword=1&apikeys=2&%6B%65%79%5b%5d=s",
                Some("keyword=1&apikeys=2"),
            ),
        ] {
            assert_eq!(without_key_params(query).as_deref(), stripped, "{query:?}");
        }
    }
}
