//! Durations and byte sizes as the config writes them: `"10s"`, `"5m"`, `"1h 30m"`, `"250ms"`
//! (parsed by `humantime`) and `"100MiB"`, `"1GiB"`, `"10MB"` or a plain number of bytes
//! (parsed by `bytesize`). Messages use the config's own words, whatever the crate says.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::diagnostics::quote;

/// A duration written as a string (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dur(pub Duration);

/// A byte size: a number of bytes, or a string with a unit (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Size(pub u64);

/// Longer durations are refused: nobody means them, and deadlines far out overflow clocks.
const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

const DURATION_UNITS: &str = "units: ms, s, m, h, d";

/// Parses the duration syntax of `Dur` ("10s", "5m", "1h30m").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write e.g. \"10s\", \"5m\" or \"250ms\"".into());
    }
    let d = humantime::parse_duration(t).map_err(|e| match e {
        E::UnknownUnit { unit, value, .. } if unit.is_empty() => format!(
            "invalid duration {}: missing unit; write e.g. \"{value}s\" ({DURATION_UNITS})",
            quote(s)
        ),
        E::UnknownUnit { unit, .. } => format!(
            "invalid duration {}: unknown unit {} ({DURATION_UNITS})",
            quote(s),
            quote(&unit)
        ),
        E::NumberOverflow => format!("invalid duration {}: number too large", quote(s)),
        _ => format!(
            "invalid duration {}: expected a number followed by a unit ({DURATION_UNITS})",
            quote(s)
        ),
    })?;
    if d > MAX_DURATION {
        return Err(format!("duration {} is too long (at most 365d)", quote(s)));
    }
    Ok(d)
}

/// Formats a duration the way the config writes it (`"10s"`, `"5m"`, `"1h 30m"`).
pub(crate) fn format_duration(d: Duration) -> String {
    // Whole milliseconds: the config's finest unit.
    let ms = Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    humantime::format_duration(ms).to_string()
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\", \"5m\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "a duration needs a unit and quotes: write \"{v}s\" ({DURATION_UNITS})"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the size syntax of `Size` ("100MiB", "64KiB").
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "invalid size {}: expected a number and a unit such as \"100MiB\" or \"1GiB\"",
            quote(s)
        ));
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| {
            format!(
                "invalid size {}: expected a number and a unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)",
                quote(s)
            )
        })
}

/// Formats a size exactly, the way the config writes it (`"1GiB"`, `"100MiB"`, `"1500B"`), so
/// that what `check-config -v` prints can be pasted back. (`bytesize`'s display rounds.)
pub(crate) fn format_size(n: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= m && n % m == 0 {
            return format!("{}{unit}", n / m);
        }
    }
    format!("{n}B")
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"100MiB\" or \"1GiB\", or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("250ms", 250),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("1m30s", 90_000),
            ("1h 30m", 5_400_000),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        assert!(parse_duration("10x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
        assert!(parse_duration("30").unwrap_err().contains("\"30s\""));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("400d").unwrap_err().contains("too long"));
        for d in [0, 250, 10_000, 300_000, 5_400_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert!(parse_size("lots").unwrap_err().contains("invalid size"));
        assert!(parse_size("10 parsecs")
            .unwrap_err()
            .contains("invalid size"));
        for n in [1500, 1 << 10, 64 << 10, 1 << 30] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
        assert_eq!(format_size(1 << 30), "1GiB");
    }
}
