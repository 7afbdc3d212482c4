//! Identifiers and small validated value types.
//!
//! Every constructor that takes outside input validates it and returns [`InvalidValue`]; the
//! inner strings are only reachable read-only, so a held value is always well-formed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// A value from outside that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {expected}")]
pub struct InvalidValue {
    /// What was being parsed ("instance id", "region", …).
    pub kind: &'static str,
    /// The offending input, shortened to at most 64 characters.
    pub value: String,
    /// What a valid value looks like.
    pub expected: &'static str,
}

impl InvalidValue {
    pub(crate) fn new(kind: &'static str, value: &str, expected: &'static str) -> Self {
        let value: String = value.chars().take(64).collect();
        Self {
            kind,
            value,
            expected,
        }
    }
}

/// ccm's own identifier for a worker (a UUID v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(Uuid);

impl WorkerId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for WorkerId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for WorkerId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WorkerId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidValue::new("worker id", s, "a UUID"))
    }
}

/// Declares a string newtype whose constructor validates with `$check`.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $expected:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn parse(value: &str) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(InvalidValue::new($kind, value, $expected))
                }
            }

            /// The value as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

validated_string!(
    /// An EC2 instance id: `i-` followed by 8 or 17 lowercase hex digits.
    InstanceId,
    "instance id",
    "i- followed by 8 or 17 lowercase hex digits",
    |s| s
        .strip_prefix("i-")
        .is_some_and(|h| (h.len() == 8 || h.len() == 17) && is_lower_hex(h))
);

validated_string!(
    /// An EC2 image id: `ami-` followed by 8 or 17 lowercase hex digits.
    AmiId,
    "AMI id",
    "ami- followed by 8 or 17 lowercase hex digits",
    |s| s
        .strip_prefix("ami-")
        .is_some_and(|h| (h.len() == 8 || h.len() == 17) && is_lower_hex(h))
);

validated_string!(
    /// An AWS region name such as `eu-west-1` (lowercase letters, digits and dashes).
    Region,
    "region",
    "lowercase letters, digits and dashes, such as eu-west-1",
    |s| (2..=32).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
);

validated_string!(
    /// A CML lab id (a UUID4 in CML 2.9; kept as text so older formats still load).
    LabId,
    "lab id",
    "1 to 64 letters, digits or dashes",
    |s| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
);

validated_string!(
    /// An EC2 instance type such as `m5zn.metal`.
    InstanceType,
    "instance type",
    "family.size, such as m5zn.metal",
    |s| (3..=32).contains(&s.len())
        && s.contains('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
);

/// Who did something: a user, an API token or ccm itself (`system:idle`, `system:sync`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// A person or token, by name (at most 128 characters kept).
    pub fn user(name: &str) -> Self {
        Self(name.chars().take(128).collect())
    }

    /// ccm itself, doing `what` (for example `idle`, `sync`, `import`).
    pub fn system(what: &str) -> Self {
        Self(format!("system:{what}"))
    }

    /// The actor as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is ccm itself rather than a person.
    pub fn is_system(&self) -> bool {
        self.0.starts_with("system:")
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_should_accept_only_the_aws_shapes() {
        for ok in ["i-0123abcd", "i-0123456789abcdef0"] {
            assert!(InstanceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "i-",
            "i-123",
            "i-0123ABCD",
            "x-0123abcd",
            "i-0123456789abcdef",
            "i-0123abcg",
        ] {
            assert!(InstanceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regions_and_amis_should_be_validated() {
        assert!(Region::parse("eu-west-1").is_ok());
        assert!(Region::parse("EU-west-1").is_err());
        assert!(Region::parse("-eu").is_err());
        assert!(AmiId::parse("ami-0abcdef1234567890").is_ok());
        assert!(AmiId::parse("ami-xyz").is_err());
    }

    #[test]
    fn deserialising_should_validate() {
        let err = serde_json::from_str::<InstanceId>("\"i-nope\"").unwrap_err();
        assert!(err.to_string().contains("instance id"));
        let id: InstanceId = serde_json::from_str("\"i-0123abcd\"").unwrap();
        assert_eq!(id.as_str(), "i-0123abcd");
    }

    #[test]
    fn invalid_values_should_be_shortened() {
        let long = "x".repeat(1000);
        let err = Region::parse(&long).unwrap_err();
        assert_eq!(err.value.len(), 64);
    }

    #[test]
    fn worker_ids_should_round_trip_through_text() {
        let id = WorkerId::new();
        assert_eq!(id.to_string().parse::<WorkerId>().unwrap(), id);
        assert!("not-a-uuid".parse::<WorkerId>().is_err());
    }
}
