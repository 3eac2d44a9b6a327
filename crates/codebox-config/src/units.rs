//! Human units in config values: durations such as `30s`, `15m`, `24h`, `500ms`
//! and byte sizes such as `1MiB`, `256KiB`, `1048576`. Written by hand because the
//! grammar is tiny and every accepted spelling must be documented.

use std::time::Duration;

/// Why a duration or size string was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {expected}")]
pub struct UnitParseError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

const DURATION_EXPECTED: &str =
    "expected a whole number followed by ms, s, m, h or d (e.g. 30s, 15m, 24h); a bare number is seconds";
const SIZE_EXPECTED: &str =
    "expected a whole number of bytes, optionally followed by B, KiB, MiB, GiB (or K, M, G, KB, MB, GB, all powers of 1024)";

fn split_number(value: &str) -> Option<(u64, &str)> {
    let trimmed = value.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return None;
    }
    let number = trimmed[..digits_end].parse().ok()?;
    Some((number, trimmed[digits_end..].trim()))
}

/// Parses `500ms`, `30s`, `15m`, `24h`, `7d`; a bare number is seconds.
pub fn parse_duration(value: &str) -> Result<Duration, UnitParseError> {
    let error = || UnitParseError {
        kind: "duration",
        value: value.to_owned(),
        expected: DURATION_EXPECTED,
    };
    let (number, unit) = split_number(value).ok_or_else(error)?;
    let seconds_per_unit: u64 = match unit {
        "ms" => return Ok(Duration::from_millis(number)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(error()),
    };
    number
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(error)
}

/// The shortest exact spelling of a duration in the grammar above.
pub fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 || duration.as_secs() == 0 && duration.as_millis() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    let seconds = duration.as_secs();
    for (unit, size) in [("h", 3600), ("m", 60)] {
        if seconds != 0 && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Parses `1048576`, `1MiB`, `256KiB`, `1G`; every multiple is a power of 1024.
pub fn parse_size(value: &str) -> Result<u64, UnitParseError> {
    let error = || UnitParseError {
        kind: "size",
        value: value.to_owned(),
        expected: SIZE_EXPECTED,
    };
    let (number, unit) = split_number(value).ok_or_else(error)?;
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return Err(error()),
    };
    number.checked_mul(multiplier).ok_or_else(error)
}

/// The shortest exact spelling of a size.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A string or a bare integer, as YAML and environment values arrive.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    Number(u64),
    String(String),
}

/// `#[serde(with = "codebox_config::units::duration")]`.
pub mod duration {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        match StringOrNumber::deserialize(deserializer)? {
            StringOrNumber::Number(seconds) => Ok(Duration::from_secs(seconds)),
            StringOrNumber::String(text) => parse_duration(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// `#[serde(with = "codebox_config::units::size")]`.
pub mod size {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_size(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        match StringOrNumber::deserialize(deserializer)? {
            StringOrNumber::Number(bytes) => Ok(bytes),
            StringOrNumber::String(text) => parse_size(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for bad in [
            "",
            "s",
            "-1s",
            "1.5s",
            "10 years",
            "10x",
            "99999999999999999999s",
            "999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_round_trip_through_format() {
        for text in ["30s", "15m", "24h", "48h", "500ms", "90s", "0s"] {
            let parsed = parse_duration(text).expect("parses");
            assert_eq!(format_duration(parsed), text);
        }
    }

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("1TiB").is_err());
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(format_size(0), "0");
    }
}
