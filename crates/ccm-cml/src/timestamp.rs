//! Lenient CML timestamps.
//!
//! CML sends `date-time` values in several shapes (CML_API.md §0): RFC 3339 with an offset
//! (`2021-02-28T07:33:47+00:00`), with `Z` (`…32.810Z`, `…32Z`), and naive ones without any
//! zone (`…32.810`, `…32`), which are UTC. [`parse`] accepts all of them (and a space instead
//! of the `T`); the serde helpers turn an unparseable value into `None` instead of failing the
//! whole document, because one odd timestamp must not hide a 3,000-event telemetry log.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer};

/// Naive layouts tried after RFC 3339, most common first. `%.f` also matches no fraction.
const NAIVE_FORMATS: [&str; 2] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"];

/// Parses a CML timestamp in any of the shapes CML sends; naive values are UTC.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.with_timezone(&Utc));
    }
    // Offsets without a colon (`+0000`) and a space separator.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(text, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    NAIVE_FORMATS
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok())
        .map(|naive| naive.and_utc())
}

/// Serde helper for an optional timestamp: `null`, a missing field, a non-string or an
/// unparseable string all become `None`. Use with `#[serde(default, deserialize_with = ...)]`.
pub(crate) fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let value = Option::<TextOrOther>::deserialize(d)?;
    Ok(match value {
        Some(TextOrOther::Text(s)) => parse(&s),
        Some(TextOrOther::Other(_)) | None => None,
    })
}

/// A JSON value that is read as text when it is a string, and skipped otherwise.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrOther {
    Text(String),
    Other(serde::de::IgnoredAny),
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn every_shape_cml_sends_should_parse_to_the_same_utc_instant() {
        let millis = Utc
            .with_ymd_and_hms(2025, 11, 19, 10, 25, 32)
            .single()
            .map(|t| t + chrono::Duration::milliseconds(810));
        let whole = Utc.with_ymd_and_hms(2025, 11, 19, 10, 25, 32).single();
        for (text, want) in [
            ("2025-11-19T10:25:32.810Z", millis),
            ("2025-11-19T10:25:32.810", millis),
            ("2025-11-19T10:25:32.810000", millis),
            ("2025-11-19T10:25:32Z", whole),
            ("2025-11-19T10:25:32", whole),
            ("2025-11-19T10:25:32+00:00", whole),
            ("2025-11-19T12:25:32+02:00", whole),
            ("2025-11-19T10:25:32+0000", whole),
            ("2025-11-19 10:25:32", whole),
            (" 2025-11-19T10:25:32Z ", whole),
        ] {
            assert_eq!(parse(text), want, "{text}");
        }
    }

    #[test]
    fn garbage_should_not_parse() {
        for text in [
            "",
            "yesterday",
            "2025-13-01T00:00:00",
            "2025-11-19",
            "12:00:00",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }
}
