//! [`Target`]: one worker as the client addresses it (base URL, credentials, TLS mode).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::pin::CertFingerprint;
use crate::secret::Secret;

/// A CML user name and password. The password prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The CML user name.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

impl Credentials {
    /// Credentials for `username`.
    pub fn new(username: impl Into<String>, password: impl Into<Secret>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// How one worker's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// System root certificates.
    Verify,
    /// Only the CA certificates in this PEM file.
    CaFile(Arc<Path>),
    /// Exactly the leaf certificate with this SHA-256 fingerprint.
    Pinned(CertFingerprint),
    /// No verification (warned about once at start).
    Insecure,
}

impl From<&crate::config::TlsConfig> for TlsMode {
    fn from(c: &crate::config::TlsConfig) -> Self {
        match c {
            crate::config::TlsConfig::Verify => Self::Verify,
            crate::config::TlsConfig::CaFile(p) => Self::CaFile(Arc::from(p.as_path())),
            crate::config::TlsConfig::Fingerprint(f) => Self::Pinned(*f),
            crate::config::TlsConfig::Insecure => Self::Insecure,
        }
    }
}

/// One CML worker as the client addresses it. Cheap to clone (the URL and the credentials
/// are shared), so the engine can keep one per worker for 10,000 workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    base_url: Arc<str>,
    credentials: Arc<Credentials>,
    tls: TlsMode,
}

/// A base URL the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cml base url {url:?}: {reason}")]
pub struct InvalidBaseUrl {
    /// The URL as given (URLs carry no secrets here: user info is rejected).
    pub url: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl Target {
    /// A worker at `base_url` (`https://10.0.0.5` or `http://127.1.0.1:9443`; a trailing `/`
    /// or `/api/v0` is dropped). Rejects non-HTTP schemes, user info, queries and fragments.
    pub fn new(
        base_url: &str,
        credentials: Arc<Credentials>,
        tls: TlsMode,
    ) -> Result<Self, InvalidBaseUrl> {
        let bad = |reason| InvalidBaseUrl {
            // A URL with user info may carry a password: never echo it.
            url: if base_url.contains('@') {
                "<withheld>".to_owned()
            } else {
                base_url.chars().take(200).collect()
            },
            reason,
        };
        let url = url::Url::parse(base_url).map_err(|_| bad("not a url"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.host().is_none() {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the url are not allowed"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        let trimmed = base_url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/api/v0").unwrap_or(trimmed);
        Ok(Self {
            base_url: Arc::from(trimmed),
            credentials,
            tls,
        })
    }

    /// The base URL, without `/api/v0` and without a trailing slash. Also the key of the
    /// worker's session and circuit breaker.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub(crate) fn base_url_arc(&self) -> &Arc<str> {
        &self.base_url
    }

    /// The credentials used to log in.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// How the worker's certificate is checked.
    pub fn tls(&self) -> &TlsMode {
        &self.tls
    }

    /// Whether this target talks HTTPS.
    pub fn is_https(&self) -> bool {
        self.base_url.starts_with("https:")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Arc<Credentials> {
        Arc::new(Credentials::new("admin", "s3cret"))
    }

    #[test]
    fn base_urls_should_be_normalised() {
        for (given, want) in [
            ("http://127.1.0.1:9443", "http://127.1.0.1:9443"),
            ("http://127.1.0.1:9443/", "http://127.1.0.1:9443"),
            ("https://10.0.0.5/api/v0", "https://10.0.0.5"),
            ("https://10.0.0.5/api/v0/", "https://10.0.0.5"),
        ] {
            let t = Target::new(given, creds(), TlsMode::Verify).unwrap();
            assert_eq!(t.base_url(), want);
        }
    }

    #[test]
    fn unusable_base_urls_should_be_rejected() {
        for bad in [
            "ftp://x",
            "not a url",
            "https://admin:pw@10.0.0.5",
            "http://h/?a=1",
        ] {
            let err = Target::new(bad, creds(), TlsMode::Verify).unwrap_err();
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn debug_output_should_hide_the_password() {
        let t = Target::new("http://h", creds(), TlsMode::Insecure).unwrap();
        let text = format!("{t:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
}
