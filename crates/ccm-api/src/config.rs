//! Configuration of the API: the `[server]` section ([`ServerConfig`]: the listener, its
//! timeouts, connection limit and optional TLS), the `[api]` section ([`ApiConfig`]: SSE,
//! CORS, cookies, proxies) and the `[auth]` section ([`AuthConfig`]: static tokens, OIDC,
//! sessions, sign-in rate limits). All are serde with defaults and `deny_unknown_fields`;
//! `validate` names the key.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ccm_domain::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Role;

/// A configuration value out of range, naming its dotted key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The dotted key, e.g. `auth.tokens[0].sha256`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The `[server]` section: the listener and what it tolerates from clients.
///
/// Slow or idle clients hold a connection (a file descriptor and a task) each; these limits
/// bound how long and how many: a client must send its request header within
/// `header_read_timeout` (also the wait for the next request on a kept-alive connection, and
/// the TLS handshake), its body within `body_read_timeout`, and may keep an idle connection
/// for `keep_alive_timeout`; beyond `max_connections` new connections are closed at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP API and web UI.
    pub listen: SocketAddr,
    /// Time a client has to send a complete request header (and to finish the TLS
    /// handshake); a connection that has not sent one by then is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a complete request body, from the end of its header; a
    /// request whose body is still incomplete then is answered 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may sit idle after a response before it is closed
    /// (at most `header_read_timeout`, which also bounds that wait).
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// Most connections open at once (event streams included); more are closed at once.
    pub max_connections: usize,
    /// At shutdown, how long open requests and connections get to finish before they are
    /// closed.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// PEM file with the certificate chain for HTTPS on the listener itself (with
    /// `tls_key`). Unset: plain HTTP (put a TLS proxy in front).
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Worker threads of the API's own runtime (0: one per core). The engine's background
    /// work runs on another runtime (`[engine]`), so requests never queue behind a cycle's
    /// polls.
    pub threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(5),
            max_connections: 16_384,
            shutdown_timeout: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            threads: 0,
        }
    }
}

impl ServerConfig {
    /// Checks every value; the first problem names its key. (The TLS files are read when
    /// the API state is built: see [`crate::ApiState::with_server`].)
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |key: &str, v: Duration, min: Duration, max: Duration, text: &str| {
            if v < min || v > max {
                Err(bad(
                    format!("server.{key}"),
                    format!("must be between {text}"),
                ))
            } else {
                Ok(())
            }
        };
        let ms = Duration::from_millis;
        range(
            "header_read_timeout",
            self.header_read_timeout,
            ms(100),
            Duration::from_secs(600),
            "100ms and 10m",
        )?;
        range(
            "body_read_timeout",
            self.body_read_timeout,
            ms(100),
            hours(1),
            "100ms and 1h",
        )?;
        range(
            "keep_alive_timeout",
            self.keep_alive_timeout,
            ms(100),
            Duration::from_secs(600),
            "100ms and 10m",
        )?;
        if self.keep_alive_timeout > self.header_read_timeout {
            return Err(bad(
                "server.keep_alive_timeout",
                "must not exceed server.header_read_timeout, which also bounds the wait for the next request",
            ));
        }
        range(
            "shutdown_timeout",
            self.shutdown_timeout,
            Duration::ZERO,
            Duration::from_secs(600),
            "0s and 10m",
        )?;
        if self.threads > 1024 {
            return Err(bad(
                "server.threads",
                "must be between 0 (one per core) and 1024",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err(bad(
                "server.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(bad(
                "server.tls_key",
                "is needed with server.tls_cert (the certificate's private key, PEM)",
            )),
            (None, Some(_)) => Err(bad(
                "server.tls_cert",
                "is needed with server.tls_key (the certificate chain, PEM)",
            )),
            _ => Ok(()),
        }
    }

    /// Whether the listener speaks HTTPS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

/// The `[api]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// How often an idle SSE stream gets a comment line (keeps proxies from closing it).
    #[serde(with = "humantime_serde")]
    pub sse_heartbeat: Duration,
    /// Events an SSE client may fall behind by before it is told to reconnect (`event:
    /// reset`) and disconnected.
    pub sse_buffer: usize,
    /// Most SSE clients at once; more are refused with 503.
    pub sse_max_clients: usize,
    /// A connection whose writes make no progress for this long is closed (a client that
    /// stopped reading its event stream).
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// Origins allowed to call the API from a browser (CORS). Empty: CORS off.
    pub cors_origins: Vec<String>,
    /// Behind a reverse proxy: take the client address from `X-Forwarded-For` and the scheme
    /// from `X-Forwarded-Proto`, when the connection comes from one of `trusted_proxies`.
    /// Only switch on when a proxy always sets them.
    pub trust_forwarded_headers: bool,
    /// The proxies whose forwarded headers are believed (addresses or CIDR blocks). The
    /// client is the right-most `X-Forwarded-For` hop that is not one of them (earlier hops
    /// are whatever the client sent). Default: loopback only (a proxy on the same host).
    pub trusted_proxies: Vec<String>,
    /// The URL browsers use to reach ccm (e.g. `https://ccm.example.com`): the OIDC redirect
    /// URL is built from it, and an `https` URL makes session cookies `Secure`.
    pub public_url: Option<String>,
    /// Most workers whose rendered view (list row, detail) is kept for reuse, ~3–4 KB each;
    /// a kept view is used only while the worker's stored version, the second, the runtime
    /// settings and its breaker are unchanged. 0: none kept.
    pub view_cache_entries: usize,
    /// Most kept views rendered ahead for the next second, shortly before it begins: those
    /// of workers read by two answers or more in each of the last two seconds (a list page several
    /// clients follow). Without them every such view is rendered again by the first answers
    /// of each second. 0: none prepared.
    pub view_prepare_max: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            sse_heartbeat: Duration::from_secs(15),
            sse_buffer: 4096,
            sse_max_clients: 10_000,
            write_stall_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
            trust_forwarded_headers: false,
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1/128".into()],
            public_url: None,
            view_cache_entries: 4096,
            view_prepare_max: 1000,
        }
    }
}

impl ApiConfig {
    /// Checks every value; the first problem names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sse_heartbeat < Duration::from_millis(100) || self.sse_heartbeat > hours(1) {
            return Err(bad("api.sse_heartbeat", "must be between 100ms and 1h"));
        }
        if !(16..=1_000_000).contains(&self.sse_buffer) {
            return Err(bad(
                "api.sse_buffer",
                "must be between 16 and 1000000 events",
            ));
        }
        if self.sse_max_clients == 0 {
            return Err(bad("api.sse_max_clients", "must be at least 1"));
        }
        if self.write_stall_timeout < Duration::from_millis(100) {
            return Err(bad("api.write_stall_timeout", "must be at least 100ms"));
        }
        if self.view_cache_entries > 1_000_000 {
            return Err(bad("api.view_cache_entries", "must be at most 1000000"));
        }
        if self.view_prepare_max > 1_000_000 {
            return Err(bad("api.view_prepare_max", "must be at most 1000000"));
        }
        for (i, origin) in self.cors_origins.iter().enumerate() {
            let ok = url::Url::parse(origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.path() == "/")
                .is_some();
            if !ok || origin.ends_with('/') {
                return Err(bad(
                    format!("api.cors_origins[{i}]"),
                    format!("{origin:?} is not an origin such as https://ui.example.com"),
                ));
            }
        }
        self.proxies()?;
        if let Some(u) = &self.public_url {
            let ok = url::Url::parse(u)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .is_some();
            if !ok {
                return Err(bad(
                    "api.public_url",
                    format!("{u:?} is not an http(s) URL"),
                ));
            }
        }
        Ok(())
    }
}

impl ApiConfig {
    /// `trusted_proxies` parsed: a bare address is a block of one.
    pub(crate) fn proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        bad(
                            format!("api.trusted_proxies[{i}]"),
                            format!("{p:?} is not an address or CIDR block such as 10.0.0.0/8"),
                        )
                    })
            })
            .collect()
    }
}

/// When session cookies carry the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CookieSecure {
    /// When `api.public_url` is `https`, or a trusted proxy says the request came over TLS.
    #[default]
    Auto,
    /// Always (ccm is only reached over TLS).
    Always,
    /// Never (plain HTTP on a trusted network, e.g. the demo).
    Never,
}

/// One static API token: its name, role and the SHA-256 of its text (never the text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who uses it (appears as `token:<name>` in events and logs).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Lowercase hex SHA-256 of the token text (`ccm token hash` prints it).
    pub sha256: String,
}

/// Which values of the roles claim grant which role. The highest matching role wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleMapping {
    /// Claim values that mean `admin`.
    pub admin: Vec<String>,
    /// Claim values that mean `manager`.
    pub manager: Vec<String>,
    /// Claim values that mean `lab_operator` (lab actions and refresh, nothing else).
    pub lab_operator: Vec<String>,
    /// Claim values that mean `viewer`.
    pub viewer: Vec<String>,
}

impl Default for RoleMapping {
    fn default() -> Self {
        Self {
            admin: vec!["ccm-admin".into()],
            manager: vec!["ccm-manager".into()],
            lab_operator: vec!["ccm-lab-operator".into()],
            viewer: vec!["ccm-viewer".into()],
        }
    }
}

impl RoleMapping {
    /// The highest role granted by `values`, if any.
    pub fn role_of<'a>(&self, values: impl IntoIterator<Item = &'a str> + Clone) -> Option<Role> {
        let has = |list: &[String]| {
            values
                .clone()
                .into_iter()
                .any(|v| list.iter().any(|l| l == v))
        };
        if has(&self.admin) {
            Some(Role::Admin)
        } else if has(&self.manager) {
            Some(Role::Manager)
        } else if has(&self.lab_operator) {
            Some(Role::LabOperator)
        } else if has(&self.viewer) {
            Some(Role::Viewer)
        } else {
            None
        }
    }
}

/// The `[auth.oidc]` section: bearer JWTs from an OpenID Connect provider (Keycloak, …) and
/// the browser sign-in through it (authorization code flow with PKCE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL, exactly as in the tokens' `iss` (Keycloak:
    /// `https://sso.example.com/realms/NAME`).
    pub issuer: String,
    /// The audience bearer tokens must carry (`aud`).
    pub audience: String,
    /// The JWKS URL (default: `jwks_uri` from the issuer's
    /// `.well-known/openid-configuration`).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The client id for the browser sign-in (default: `audience`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The client secret, for a confidential client (a public client uses PKCE only).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Scopes asked for at sign-in.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Dotted path of the claim holding the roles (Keycloak realm roles:
    /// `realm_access.roles`; client roles: `resource_access.CLIENT.roles`; or `groups`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// The claim naming the user (recorded as the actor of their commands).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Which claim values mean which role.
    #[serde(default)]
    pub role_mapping: RoleMapping,
    /// How long fetched signing keys are used before they are fetched again.
    #[serde(default = "default_jwks_ttl", with = "humantime_serde")]
    pub jwks_cache_ttl: Duration,
    /// At most one JWKS fetch for an unknown key id per this interval (a flood of forged
    /// key ids cannot make ccm hammer the provider).
    #[serde(default = "default_jwks_min_refresh", with = "humantime_serde")]
    pub jwks_min_refresh_interval: Duration,
    /// PEM bundle of the CA(s) that signed the provider's TLS certificate, trusted besides
    /// the system roots (a Keycloak behind a company CA). Read when ccm starts: a missing or
    /// unreadable file is a configuration error naming it.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into()]
}
fn default_roles_claim() -> String {
    "realm_access.roles".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_jwks_ttl() -> Duration {
    hours(1)
}
fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(10)
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

impl OidcConfig {
    /// A configuration with every default, for `issuer` and `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            client_id: None,
            client_secret: None,
            scopes: default_scopes(),
            roles_claim: default_roles_claim(),
            username_claim: default_username_claim(),
            role_mapping: RoleMapping::default(),
            jwks_cache_ttl: default_jwks_ttl(),
            jwks_min_refresh_interval: default_jwks_min_refresh(),
            ca_file: None,
            leeway: default_leeway(),
        }
    }

    /// The client id of the browser sign-in.
    pub fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or(&self.audience)
    }
}

/// Failed sign-ins allowed per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignInLimit {
    /// Failures allowed at once before the address is refused.
    pub burst: u32,
    /// Failures forgiven per minute after that.
    pub per_minute: u32,
}

impl Default for SignInLimit {
    fn default() -> Self {
        Self {
            burst: 5,
            per_minute: 5,
        }
    }
}

/// The `[auth]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Static API tokens (hashes only).
    pub tokens: Vec<TokenConfig>,
    /// OpenID Connect, when used.
    pub oidc: Option<OidcConfig>,
    /// How long a browser session lasts after sign-in.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Most sessions kept in memory (beyond, the one closest to expiry is dropped from
    /// memory; the database keeps every session until it expires or is signed out).
    pub max_sessions: usize,
    /// When the session cookie is `Secure`.
    pub cookie_secure: CookieSecure,
    /// Failed sign-ins allowed per client address (a failed bearer token on any route
    /// counts too).
    pub sign_in_limit: SignInLimit,
    /// Browser sign-ins through the OIDC provider a client address may start (each one
    /// counts, successful or not: every start holds state until it completes or expires).
    pub sign_in_start_limit: SignInLimit,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            oidc: None,
            session_ttl: hours(8),
            max_sessions: 10_000,
            cookie_secure: CookieSecure::Auto,
            sign_in_limit: SignInLimit::default(),
            sign_in_start_limit: SignInLimit {
                burst: 10,
                per_minute: 10,
            },
        }
    }
}

impl AuthConfig {
    /// Adds a token given as plain text (only its hash is kept): the demo generates a random
    /// admin token at start, adds it here and prints it.
    pub fn with_token(mut self, name: &str, role: Role, plaintext: &str) -> Self {
        self.tokens.push(TokenConfig {
            name: name.to_owned(),
            role,
            sha256: hash_token(plaintext),
        });
        self
    }

    /// Checks every value; the first problem names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let key = |k: &str| format!("auth.tokens[{i}].{k}");
            let name_ok = (1..=64).contains(&t.name.len())
                && t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
            if !name_ok {
                return Err(bad(
                    key("name"),
                    "1 to 64 letters, digits, '-', '_', '.' or '@'",
                ));
            }
            if !names.insert(t.name.as_str()) {
                return Err(bad(key("name"), format!("{:?} is used twice", t.name)));
            }
            let hex_ok = t.sha256.len() == 64
                && t.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(bad(
                    key("sha256"),
                    "must be 64 lowercase hex digits: the SHA-256 of the token (`ccm token hash`), never the token itself",
                ));
            }
        }
        if let Some(o) = &self.oidc {
            for (k, v) in [
                ("issuer", Some(&o.issuer)),
                ("jwks_url", o.jwks_url.as_ref()),
            ] {
                if let Some(v) = v {
                    let ok = url::Url::parse(v)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"))
                        .is_some();
                    if !ok {
                        return Err(bad(
                            format!("auth.oidc.{k}"),
                            format!("{v:?} is not an http(s) URL"),
                        ));
                    }
                }
            }
            if o.audience.trim().is_empty() {
                return Err(bad("auth.oidc.audience", "must not be empty"));
            }
            if o.roles_claim.trim().is_empty() || o.roles_claim.split('.').any(str::is_empty) {
                return Err(bad(
                    "auth.oidc.roles_claim",
                    "a dotted claim path such as realm_access.roles",
                ));
            }
            if o.username_claim.trim().is_empty() {
                return Err(bad("auth.oidc.username_claim", "must not be empty"));
            }
            if o.jwks_cache_ttl < Duration::from_secs(1) {
                return Err(bad("auth.oidc.jwks_cache_ttl", "must be at least 1s"));
            }
            if o.leeway > Duration::from_secs(600) {
                return Err(bad("auth.oidc.leeway", "must be at most 10m"));
            }
        }
        if self.session_ttl < Duration::from_secs(60) || self.session_ttl > hours(24 * 30) {
            return Err(bad("auth.session_ttl", "must be between 1m and 30 days"));
        }
        if self.max_sessions == 0 {
            return Err(bad("auth.max_sessions", "must be at least 1"));
        }
        if self.sign_in_limit.burst == 0 {
            return Err(bad("auth.sign_in_limit.burst", "must be at least 1"));
        }
        if self.sign_in_limit.per_minute == 0 {
            return Err(bad("auth.sign_in_limit.per_minute", "must be at least 1"));
        }
        if self.sign_in_start_limit.burst == 0 {
            return Err(bad("auth.sign_in_start_limit.burst", "must be at least 1"));
        }
        if self.sign_in_start_limit.per_minute == 0 {
            return Err(bad(
                "auth.sign_in_start_limit.per_minute",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The SHA-256 of a token, as lowercase hex: what `[[auth.tokens]] sha256` holds. Make one
/// with `ccm token hash` (or `printf %s "$TOKEN" | sha256sum`).
pub fn hash_token(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// A new random API token (`ccm_` and 43 URL-safe characters: 256 bits).
pub fn generate_token() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "ccm_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_should_be_valid() {
        ServerConfig::default().validate().unwrap();
        ApiConfig::default().validate().unwrap();
        AuthConfig::default().validate().unwrap();
    }

    #[test]
    fn server_limits_out_of_range_should_be_refused_naming_the_key() {
        type Change = fn(&mut ServerConfig);
        let cases: [(Change, &str); 6] = [
            (
                |s| s.header_read_timeout = Duration::ZERO,
                "server.header_read_timeout",
            ),
            (
                |s| s.body_read_timeout = hours(2),
                "server.body_read_timeout",
            ),
            (
                |s| s.keep_alive_timeout = s.header_read_timeout + Duration::from_secs(1),
                "server.keep_alive_timeout",
            ),
            (|s| s.max_connections = 0, "server.max_connections"),
            (|s| s.threads = 5000, "server.threads"),
            (
                |s| s.tls_cert = Some("/etc/ccm/cert.pem".into()),
                "server.tls_key",
            ),
        ];
        for (change, key) in cases {
            let mut s = ServerConfig::default();
            change(&mut s);
            assert_eq!(s.validate().unwrap_err().key, key);
        }
        let text = r#"
            listen = "0.0.0.0:8443"
            header_read_timeout = "5s"
            keep_alive_timeout = "2s"
            tls_cert = "/etc/ccm/cert.pem"
            tls_key = "/etc/ccm/key.pem"
        "#;
        let s: ServerConfig = toml::from_str(text).unwrap();
        s.validate().unwrap();
        assert!(s.tls());
        assert_eq!(
            s.body_read_timeout,
            Duration::from_secs(30),
            "unset keys keep defaults"
        );
    }

    #[test]
    fn a_plaintext_token_in_the_hash_field_should_be_refused_naming_the_key() {
        let mut c = AuthConfig::default().with_token("ci", Role::Admin, "secret");
        c.tokens.push(TokenConfig {
            name: "oops".into(),
            role: Role::Viewer,
            sha256: "my-plain-token".into(),
        });
        let err = c.validate().unwrap_err();
        assert_eq!(err.key, "auth.tokens[1].sha256");
        assert!(!err.to_string().contains("my-plain-token"));
    }

    #[test]
    fn duplicate_token_names_should_be_refused() {
        let c = AuthConfig::default()
            .with_token("ci", Role::Admin, "a")
            .with_token("ci", Role::Viewer, "b");
        assert_eq!(c.validate().unwrap_err().key, "auth.tokens[1].name");
    }

    #[test]
    fn the_auth_section_should_parse_from_toml_and_reject_unknown_keys() {
        let text = r#"
            session_ttl = "2h"
            [[tokens]]
            name = "ci-bot"
            role = "manager"
            sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
            [oidc]
            issuer = "https://sso.example.com/realms/ccm"
            audience = "ccm"
            jwks_cache_ttl = "30m"
            [oidc.role_mapping]
            admin = ["ops"]
        "#;
        let c: AuthConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.session_ttl, hours(2));
        assert_eq!(c.tokens[0].role, Role::Manager);
        let o = c.oidc.unwrap();
        assert_eq!(o.roles_claim, "realm_access.roles");
        assert_eq!(o.jwks_cache_ttl, Duration::from_secs(1800));
        assert_eq!(o.role_mapping.admin, ["ops"]);
        assert_eq!(
            o.role_mapping.viewer,
            ["ccm-viewer"],
            "unset keys keep their defaults"
        );
        let err = serde_json::from_value::<AuthConfig>(serde_json::json!({"tokenz": []}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenz"), "{err}");
    }

    #[test]
    fn hashes_should_be_lowercase_hex_sha256() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = generate_token();
        assert!(t.starts_with("ccm_") && t.len() == 47, "{t}");
        assert_ne!(t, generate_token());
    }

    #[test]
    fn role_mapping_should_pick_the_highest_role() {
        let m = RoleMapping::default();
        assert_eq!(m.role_of(["ccm-viewer", "ccm-admin"]), Some(Role::Admin));
        assert_eq!(m.role_of(["ccm-manager"]), Some(Role::Manager));
        assert_eq!(
            m.role_of(["ccm-viewer", "ccm-lab-operator"]),
            Some(Role::LabOperator)
        );
        assert_eq!(
            m.role_of(["ccm-lab-operator", "ccm-manager"]),
            Some(Role::Manager)
        );
        assert_eq!(m.role_of(["other"]), None);
    }

    #[test]
    fn cors_origins_should_be_bare_origins() {
        let mut c = ApiConfig {
            cors_origins: vec!["https://ui.example.com".into()],
            ..ApiConfig::default()
        };
        c.validate().unwrap();
        c.cors_origins.push("https://ui.example.com/path".into());
        assert_eq!(c.validate().unwrap_err().key, "api.cors_origins[1]");
    }
}
