//! [`Secret`]: the one type for every secret ccm holds — the CML password, the OIDC client
//! secret, AWS keys, licence tokens, sign-in tokens in API requests — so that none of them can
//! reach a log line, an error, an API response or `ccm config check`'s output by accident.
//!
//! It wraps `secrecy`'s `SecretString` (zeroized when the last clone is dropped) and adds what
//! configs and requests need around it: masked `Serialize`, `Display`, equality and cheap
//! clones.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug`, `Display` and `Serialize` all write [`Secret::MASK`]; the text is
/// reachable only through [`Secret::expose`], which call sites use at the moment they put it
/// on the wire. `Deserialize` reads the real text (a config file, a request body).
///
/// Serializing a `Secret` masks it, so a config written out (`ccm config check`) is for
/// reading, not for loading back: its secrets read `***`. Cheap to clone (`Arc` inside); the
/// memory is zeroized when the last clone is dropped.
#[derive(Clone)]
pub struct Secret(Arc<SecretString>);

impl Secret {
    /// What every secret prints as.
    pub const MASK: &'static str = "***";

    /// Wraps a secret.
    pub fn new(text: impl Into<String>) -> Self {
        Self(Arc::new(SecretString::from(text.into())))
    }

    /// The secret text, for the request that needs it. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MASK)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(Self::MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `deserialize_any`: with `deserialize_string`, serde_json reports a number itself,
        // value included, without asking the visitor.
        d.deserialize_any(SecretVisitor)
    }
}

/// Reads a string. Any other value is refused **without echoing it** (serde's own message
/// would print a number or bytes: "invalid type: integer `12345678`"), which matters when a
/// numeric password arrives unquoted, e.g. through a `CCM_*` environment variable.
struct SecretVisitor;

impl SecretVisitor {
    fn refuse<E: serde::de::Error>(what: &str) -> Result<Secret, E> {
        Err(E::custom(format_args!(
            "expected a quoted string, found {what} (the value is not shown)"
        )))
    }
}

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret::new(v))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
        Self::refuse("a boolean")
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
        Self::refuse("a number")
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
        Self::refuse("a number")
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
        Self::refuse("a number")
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Self::refuse("bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_should_never_print_or_serialize_their_text() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.to_string(), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secrets_should_deserialize_their_text_and_compare_by_it() {
        let s: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s, Secret::new("hunter2"));
        assert_ne!(s, Secret::new("hunter3"));
        assert!(Secret::new("").is_empty());
    }

    #[test]
    fn a_secret_of_the_wrong_type_should_be_refused_without_echoing_it() {
        for json in ["12345678", "1234.5678", "true"] {
            let err = serde_json::from_str::<Secret>(json)
                .unwrap_err()
                .to_string();
            assert!(err.contains("expected a quoted string"), "{err}");
            assert!(!err.contains("1234"), "{err}");
        }
    }
}
