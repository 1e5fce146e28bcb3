//! Reading counts out of JSON text without parsing it: its strings are walked once and the
//! number after each wanted name is read in place. This runs for every answer that carries a
//! usage, so it copies nothing and allocates nothing.

use super::Usage;

/// The slot of each name read (llama.cpp's `timings` last).
fn slot(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"prompt_tokens" => 0,
        b"input_tokens" => 1,
        b"completion_tokens" => 2,
        b"output_tokens" => 3,
        b"prompt_eval_count" => 4,
        b"eval_count" => 5,
        b"prompt_per_second" => 6,
        b"predicted_per_second" => 7,
        _ => return None,
    })
}

/// The counts in JSON text from a counts key on (a `usage` object, or Ollama's fields): the
/// first of each count's names. OpenAI's names, else Anthropic's and the Responses API's,
/// else Ollama's; and llama.cpp's speeds (`timings`, which it sends after `usage`).
pub(super) fn json_usage(text: &[u8]) -> Usage {
    let mut found: [Option<&[u8]>; 8] = [None; 8];
    // One pass over the bytes, string by string (the text is short: a usage object and what
    // follows it); a string followed by `:` is a name.
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        i += 1;
        if b != b'"' {
            continue;
        }
        let start = i;
        while let Some(&c) = text.get(i) {
            match c {
                b'"' => break,
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
        let Some(string) = text.get(start..i) else {
            break;
        };
        i += 1;
        let Some(slot) = slot(string) else {
            continue;
        };
        let after = text.get(i..).unwrap_or_default().trim_ascii_start();
        if let (None, Some(value)) = (found[slot], after.strip_prefix(b":")) {
            found[slot] = Some(value.trim_ascii_start());
        }
    }
    let count = |slot: usize| found[slot].and_then(leading_number);
    let speed = |slot: usize| found[slot].and_then(leading_decimal);
    let (prompt, completion) = match (count(0).or(count(1)), count(2).or(count(3))) {
        (None, None) => (count(4), count(5)),
        openai => openai,
    };
    Usage {
        prompt,
        completion,
        prompt_per_second: speed(6),
        generated_per_second: speed(7),
    }
}

/// The whole number `text` starts with (none when it overflows).
fn leading_number(text: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    let mut digits = 0;
    for &b in text.iter().take_while(|b| b.is_ascii_digit()) {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(n)
}

/// The non-negative decimal number `text` starts with (`12.5`, `3e2`), finite.
fn leading_decimal(text: &[u8]) -> Option<f64> {
    let len = text
        .iter()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        .count();
    let n: f64 = std::str::from_utf8(&text[..len.min(32)])
        .ok()?
        .parse()
        .ok()?;
    (n.is_finite() && n >= 0.0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_once_and_in_order_of_preference() {
        let u = json_usage(
            br#""usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_eval_count":9}"#,
        );
        assert_eq!((u.prompt, u.completion), (Some(3), Some(4)));
        let u = json_usage(br#""prompt_eval_count": 26, "eval_count" :290"#);
        assert_eq!((u.prompt, u.completion), (Some(26), Some(290)));
        // A name inside a string value is not a name.
        let u = json_usage(br#""usage":{"note":"\"prompt_tokens\":5","prompt_tokens":6}"#);
        assert_eq!(u.prompt, Some(6));
    }

    #[test]
    fn numbers_are_whole_and_fit() {
        assert_eq!(leading_number(b"0,"), Some(0));
        assert_eq!(leading_number(b"18446744073709551615}"), Some(u64::MAX));
        assert_eq!(leading_number(b"18446744073709551616"), None);
        assert_eq!(leading_number(b"-1"), None);
        assert_eq!(leading_number(b""), None);
    }

    #[test]
    fn llama_cpp_timings_give_the_speeds() {
        let u = json_usage(
            br#""usage":{"completion_tokens":41,"prompt_tokens":12},"timings":{"prompt_n":12,"prompt_per_second":612.5,"predicted_n":41,"predicted_per_second":38.25}"#,
        );
        assert_eq!(u.prompt_per_second, Some(612.5));
        assert_eq!(u.generated_per_second, Some(38.25));
        let u = json_usage(br#""predicted_per_second":-1,"prompt_per_second":"x""#);
        assert_eq!((u.prompt_per_second, u.generated_per_second), (None, None));
    }
}
