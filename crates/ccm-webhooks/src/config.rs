//! `[[webhooks]]`: one entry per receiver, validated at start (errors name the key and never
//! show the secret).

use std::net::IpAddr;
use std::time::Duration;

use ccm_domain::EventKind;
use ccm_domain::Secret;
use serde::{Deserialize, Serialize};
use sha2_free::short_hash;

use crate::net::refused_address;

/// A configuration value out of range, naming its dotted key (`webhooks[0].url`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The dotted key.
    pub key: String,
    /// What is wrong (never the secret).
    pub message: String,
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique name (letters, digits, `-`, `_`; 1–64): the cursor's key, the metrics label, the
    /// `X-Ccm-Webhook` header.
    pub name: String,
    /// Where to POST (`http` or `https`, no credentials).
    pub url: String,
    /// Event types to deliver: exact types (`ccm.worker.paused`), prefixes (`ccm.worker.*`)
    /// or `*` (every type kept in the event log).
    #[serde(default = "every_type")]
    pub events: Vec<String>,
    /// The HMAC-SHA256 key of `X-Ccm-Signature-256` (at least 16 characters).
    pub secret: Secret,
    /// Longest time one attempt may take (connect, send, answer).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Backoff ceiling before the first retry of a failing event; doubles per retry.
    #[serde(default = "default_retry_base", with = "humantime_serde")]
    pub retry_base: Duration,
    /// Largest backoff between two attempts.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// Allow link-local targets (169.254.0.0/16 — where the cloud metadata service lives —
    /// and fe80::/10). Off: such addresses are refused in the URL and in DNS answers.
    #[serde(default)]
    pub allow_link_local: bool,
}

fn every_type() -> Vec<String> {
    vec!["*".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_base() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(300)
}

impl WebhookConfig {
    /// An entry with the defaults (every event type, 10 s timeout, 1 s → 5 min backoff).
    pub fn new(name: &str, url: &str, secret: Secret) -> Self {
        Self {
            name: name.to_owned(),
            url: url.to_owned(),
            events: every_type(),
            secret,
            timeout: default_timeout(),
            retry_base: default_retry_base(),
            retry_max: default_retry_max(),
            allow_link_local: false,
        }
    }

    /// Checks every value of entry `index`; the first problem names its key.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("webhooks[{index}].{k}");
        let bad = |k: &str, m: String| {
            Err(ConfigError {
                key: key(k),
                message: m,
            })
        };
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return bad("name", "1 to 64 letters, digits, '-' or '_'".into());
        }
        if let Err(m) = check_url(&self.url, self.allow_link_local) {
            return bad("url", m);
        }
        if let Err(m) = EventFilter::parse(&self.events) {
            return bad("events", m);
        }
        if self.secret.expose().chars().count() < 16 {
            return bad(
                "secret",
                "must be at least 16 characters (a random string: `openssl rand -hex 32`)".into(),
            );
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(120) {
            return bad("timeout", "must be between 100ms and 2m".into());
        }
        if self.retry_base < Duration::from_millis(10) {
            return bad("retry_base", "must be at least 10ms".into());
        }
        if self.retry_max < self.retry_base || self.retry_max > Duration::from_secs(3600) {
            return bad(
                "retry_max",
                "must be at least retry_base and at most 1h".into(),
            );
        }
        Ok(())
    }

    /// The URL's origin (`https://hooks.example.com:8443`): all of the URL that is ever shown
    /// (its path or query may carry a token).
    pub fn origin(&self) -> String {
        url::Url::parse(&self.url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| "invalid".to_owned())
    }

    /// The key of this URL's circuit breaker: the origin and a short hash of the whole URL
    /// (one breaker per URL, without showing its path).
    pub(crate) fn breaker_key(&self) -> String {
        format!("webhook:{}#{}", self.origin(), short_hash(&self.url))
    }
}

/// Validates all entries, and that names are unique.
pub fn validate_all(hooks: &[WebhookConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for (i, h) in hooks.iter().enumerate() {
        h.validate(i)?;
        if !names.insert(h.name.as_str()) {
            return Err(ConfigError {
                key: format!("webhooks[{i}].name"),
                message: format!("{:?} is used twice", h.name),
            });
        }
    }
    Ok(())
}

fn check_url(raw: &str, allow_link_local: bool) -> Result<(), String> {
    if raw.len() > 2048 {
        return Err("longer than 2048 characters".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?}: only http and https", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@); sign with `secret`".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    let ip = match url.host() {
        None => return Err("has no host".into()),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = ip
        && let Some(why) = refused_address(ip, allow_link_local)
    {
        return Err(format!(
            "{ip} is {why}; refused (set allow_link_local = true only if you mean it)"
        ));
    }
    Ok(())
}

/// Which event types a webhook gets: the filter's patterns expanded over the catalogue's
/// persistent types (transient ones are never in the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Every persistent type in the catalogue matched (`all`: every one).
    types: Vec<&'static str>,
    all: bool,
}

impl EventFilter {
    /// Parses patterns: `*`, `prefix.*` or an exact type. Each must match at least one type
    /// kept in the event log.
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Err("at least one event type or pattern (`*` for all)".into());
        }
        let persistent = || EventKind::SHAPES.iter().filter(|t| !t.transient);
        let mut types = std::collections::BTreeSet::new();
        let mut all = false;
        for p in patterns {
            let ok_chars = p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._*".contains(&b));
            let star_ok = match p.find('*') {
                None => true,
                Some(i) => i == p.len() - 1 && (p == "*" || p.ends_with(".*")),
            };
            if !ok_chars || !star_ok {
                return Err(format!(
                    "{p:?}: an event type (ccm.worker.paused), a prefix (ccm.worker.*) or *"
                ));
            }
            let matched: Vec<&'static str> = if p == "*" {
                all = true;
                persistent().map(|t| t.type_name).collect()
            } else if let Some(prefix) = p.strip_suffix('*') {
                persistent()
                    .filter(|t| t.type_name.starts_with(prefix))
                    .map(|t| t.type_name)
                    .collect()
            } else {
                persistent()
                    .filter(|t| t.type_name == p)
                    .map(|t| t.type_name)
                    .collect()
            };
            if matched.is_empty() {
                let transient = EventKind::SHAPES.iter().any(|t| {
                    t.transient
                        && (t.type_name == p
                            || p.strip_suffix('*')
                                .is_some_and(|x| t.type_name.starts_with(x)))
                });
                return Err(if transient {
                    format!(
                        "{p:?} matches only transient events, which are not kept in the log and never delivered"
                    )
                } else {
                    format!("{p:?} matches no event type of the catalogue")
                });
            }
            types.extend(matched);
        }
        Ok(Self {
            types: types.into_iter().collect(),
            all,
        })
    }

    /// The types for an event-log query (empty: any type).
    pub fn query_types(&self) -> Vec<String> {
        if self.all {
            Vec::new()
        } else {
            self.types.iter().map(|t| (*t).to_owned()).collect()
        }
    }

    /// Whether an event of this type is delivered.
    pub fn matches(&self, event_type: &str) -> bool {
        self.types.contains(&event_type)
    }
}

/// A short, stable hash for names (not a security measure).
mod sha2_free {
    use aws_lc_rs::digest;

    /// The first 8 bytes of the SHA-256 of `text`, as hex.
    pub(crate) fn short_hash(text: &str) -> String {
        let d = digest::digest(&digest::SHA256, text.as_bytes());
        hex::encode(&d.as_ref()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig::new("ops", url, Secret::from("0123456789abcdef-secret"))
    }

    #[test]
    fn a_good_entry_should_validate() {
        hook("https://hooks.example.com/ccm?k=v")
            .validate(0)
            .unwrap();
        hook("http://127.0.0.1:9000/in").validate(0).unwrap();
        hook("http://10.1.2.3/in").validate(0).unwrap();
    }

    #[test]
    fn bad_urls_should_be_refused_naming_the_key() {
        for (url, why) in [
            ("ftp://example.com/x", "scheme"),
            ("https://user:pw@example.com/", "credentials"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[fd00:ec2::254]/", "metadata"),
            ("http://0.0.0.0/", "unspecified"),
            ("http://224.0.0.1/", "multicast"),
            ("not a url", "not a URL"),
            ("https://example.com/#frag", "fragment"),
        ] {
            let err = hook(url).validate(3).unwrap_err();
            assert_eq!(err.key, "webhooks[3].url", "{url}");
            assert!(err.message.contains(why), "{url}: {}", err.message);
        }
        let mut allowed = hook("http://169.254.169.254/hook");
        allowed.allow_link_local = true;
        allowed.validate(0).unwrap();
    }

    #[test]
    fn a_short_secret_should_be_refused_without_showing_it() {
        let mut h = hook("https://example.com/");
        h.secret = Secret::from("tiny-secret");
        let err = h.validate(0).unwrap_err();
        assert_eq!(err.key, "webhooks[0].secret");
        assert!(!err.to_string().contains("tiny-secret"));
        assert!(!format!("{h:?}").contains("tiny-secret"));
    }

    #[test]
    fn filters_should_expand_over_persistent_types_only() {
        let f = EventFilter::parse(&["ccm.worker.*".into()]).unwrap();
        assert!(f.matches("ccm.worker.paused"));
        assert!(!f.matches("ccm.worker.synced"), "transient");
        assert!(!f.matches("ccm.lab.action_failed"));
        assert!(!f.query_types().is_empty());
        let all = EventFilter::parse(&["*".into()]).unwrap();
        assert!(all.query_types().is_empty());
        assert!(all.matches("ccm.job.failed") && !all.matches("ccm.job.started"));
        for (bad, why) in [
            ("ccm.worker.synced", "transient"),
            ("ccm.nothing.*", "matches no"),
            ("ccm.*.paused", "prefix"),
            ("CCM.worker.*", "prefix"),
        ] {
            let err = EventFilter::parse(&[bad.into()]).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(EventFilter::parse(&[]).is_err());
    }

    #[test]
    fn names_should_be_unique_and_breaker_keys_hide_the_path() {
        let a = hook("https://hooks.example.com/services/T000/SECRETPATH");
        let mut b = a.clone();
        b.url = "https://hooks.example.com/other".into();
        assert_ne!(a.breaker_key(), b.breaker_key());
        assert!(
            a.breaker_key()
                .starts_with("webhook:https://hooks.example.com#")
        );
        assert!(!a.breaker_key().contains("SECRETPATH"));
        assert_eq!(a.origin(), "https://hooks.example.com");
        let err = validate_all(&[a.clone(), a]).unwrap_err();
        assert_eq!(err.key, "webhooks[1].name");
    }

    #[test]
    fn entries_should_parse_from_toml_with_defaults() {
        let text = r#"
            name = "ops"
            url = "https://hooks.example.com/ccm"
            events = ["ccm.worker.*", "ccm.breaker.opened"]
            secret = "0123456789abcdef0123"
            timeout = "5s"
        "#;
        let h: WebhookConfig = toml::from_str(text).unwrap();
        h.validate(0).unwrap();
        assert_eq!(h.timeout, Duration::from_secs(5));
        assert_eq!(h.retry_max, Duration::from_secs(300));
        assert!(
            toml::from_str::<WebhookConfig>("name='x'\nurl='http://a'\nsecret='s'\nnope=1")
                .is_err()
        );
    }
}
