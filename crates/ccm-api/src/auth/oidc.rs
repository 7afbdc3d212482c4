//! OpenID Connect: bearer JWTs checked against the provider's keys, and the browser sign-in
//! (authorization code flow with PKCE).
//!
//! - Keys come from the JWKS (`[auth.oidc] jwks_url`, or `jwks_uri` of the issuer's
//!   `.well-known/openid-configuration`), cached for `jwks_cache_ttl`. A token signed with an
//!   unknown key id makes ccm fetch the JWKS again (key rotation) — at most once per
//!   `jwks_min_refresh_interval`, one fetch at a time. A failed fetch backs off
//!   ([`backoff`]: from that interval, doubling, up to 5 minutes) instead of being retried
//!   by every request while the provider is down; cached keys keep working meanwhile.
//! - Tokens must be RS256 with a key id; `iss`, `aud`, `exp` and `nbf` are checked (with
//!   `leeway`). A session made from a token lasts no longer than its `exp`.
//! - The browser sign-in's pending `state` is bound to the browser that started it: a random
//!   value in a short-lived HttpOnly cookie, whose hash the pending sign-in keeps; a callback
//!   from another browser (login CSRF: an attacker's code planted in a victim's browser) is
//!   refused.
//! - The role comes from the claim at `roles_claim` (a dotted path; Keycloak's realm roles by
//!   default) through `role_mapping`; the user name from `username_claim` (else `sub`).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::RwLock;
use rand::RngCore as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::time::Instant;

use super::{AuthError, AuthMethod, Credential, Principal, Verified};
use crate::config::OidcConfig;

/// How long a started browser sign-in may take (also the lifetime of its binding cookie).
pub(crate) const SIGN_IN_TTL: Duration = Duration::from_secs(600);
/// The longest wait between JWKS fetches after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Most browser sign-ins under way at once.
const MAX_PENDING: usize = 10_000;
/// Largest provider answer read (JWKS, discovery, token response).
const MAX_BODY: usize = 1024 * 1024;

/// What the provider's discovery document says (the parts ccm uses).
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    jwks_uri: Option<String>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
    /// Failed fetches in a row, and when the next may be tried.
    failures: u32,
    retry_at: Option<Instant>,
}

/// The wait after `failures` failed JWKS fetches in a row: `base` (at least 1 s), doubling,
/// at most [`MAX_BACKOFF`].
pub(crate) fn backoff(base: Duration, failures: u32) -> Duration {
    let base = base.max(Duration::from_secs(1));
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(MAX_BACKOFF.max(base))
}

/// The `exp` of a set of claims, as a time.
fn expiry(claims: &Value) -> Option<DateTime<Utc>> {
    let secs = claims
        .get("exp")
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))?;
    DateTime::from_timestamp(secs, 0)
}

/// A browser sign-in waiting for the provider's callback.
struct Pending {
    /// SHA-256 of the binding cookie's value.
    browser: [u8; 32],
    verifier: String,
    nonce: String,
    redirect_uri: String,
    return_to: String,
    started: Instant,
}

/// The OIDC verifier and sign-in flow.
pub(crate) struct Oidc {
    cfg: OidcConfig,
    http: reqwest::Client,
    discovery: tokio::sync::Mutex<Option<Discovery>>,
    keys: RwLock<KeyCache>,
    refresh: tokio::sync::Mutex<()>,
    pending: DashMap<String, Pending>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.cfg.issuer)
            .finish_non_exhaustive()
    }
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A short, token-free description of why a JWT was refused.
fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "expired".into(),
        K::ImmatureSignature => "not valid yet".into(),
        K::InvalidAudience => "wrong audience".into(),
        K::InvalidIssuer => "wrong issuer".into(),
        K::InvalidSignature => "bad signature".into(),
        K::InvalidAlgorithm => "wrong algorithm".into(),
        K::MissingRequiredClaim(c) => format!("missing claim {c}"),
        _ => "malformed token".into(),
    }
}

/// The strings at a dotted claim path: an array of strings, or one string (space-separated
/// values, as in `scope`).
fn strings_at<'a>(claims: &'a Value, path: &str) -> Vec<&'a str> {
    let mut v = claims;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    match v {
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => s.split_whitespace().collect(),
        _ => Vec::new(),
    }
}

impl Oidc {
    pub(crate) fn new(cfg: OidcConfig) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(path) = &cfg.ca_file {
            let bad = |reason: String| format!("ca_file {}: {reason}", path.display());
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(bad("holds no certificate".to_owned()));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the OIDC HTTP client: {e}"))?;
        Ok(Self {
            cfg,
            http,
            discovery: tokio::sync::Mutex::new(None),
            keys: RwLock::new(KeyCache::default()),
            refresh: tokio::sync::Mutex::new(()),
            pending: DashMap::new(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, AuthError> {
        let res = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| AuthError::Provider(format!("GET {url}: {}", e.without_url())))?;
        Self::read_json(url, res).await
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        url: &str,
        mut res: reqwest::Response,
    ) -> Result<T, AuthError> {
        let status = res.status();
        let mut body = Vec::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| AuthError::Provider(format!("{url}: {}", e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(AuthError::Provider(format!("{url}: answer too large")));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(AuthError::Provider(format!(
                "{url}: http {}",
                status.as_u16()
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| AuthError::Provider(format!("{url}: cannot decode the answer: {e}")))
    }

    async fn discovery(&self) -> Result<Discovery, AuthError> {
        let mut cached = self.discovery.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let d: Discovery = self.get_json(&url).await?;
        *cached = Some(d.clone());
        Ok(d)
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, AuthError> {
        let url = match &self.cfg.jwks_url {
            Some(u) => u.clone(),
            None => self.discovery().await?.jwks_uri.ok_or_else(|| {
                AuthError::Provider("the discovery document has no jwks_uri".into())
            })?,
        };
        let set: JwkSet = self.get_json(&url).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) =
                (&jwk.common.key_id, &jwk.algorithm)
            else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid.clone(), key);
            }
        }
        tracing::info!(keys = keys.len(), "fetched the OIDC signing keys");
        metrics::counter!(crate::metrics::OIDC_JWKS_FETCHES).increment(1);
        Ok(keys)
    }

    /// The key with this id: cached, or fetched (TTL expired, or an unknown id and the last
    /// fetch is older than the minimum interval).
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let fresh = |c: &KeyCache| {
            c.fetched
                .is_some_and(|at| at.elapsed() < self.cfg.jwks_cache_ttl)
        };
        {
            let c = self.keys.read();
            if fresh(&c)
                && let Some(k) = c.keys.get(kid)
            {
                return Ok(k.clone());
            }
        }
        let _one_at_a_time = self.refresh.lock().await;
        let may_fetch = {
            let c = self.keys.read();
            if fresh(&c)
                && let Some(k) = c.keys.get(kid)
            {
                return Ok(k.clone());
            }
            let due = !fresh(&c)
                || c.fetched
                    .is_none_or(|at| at.elapsed() >= self.cfg.jwks_min_refresh_interval);
            let backing_off = c.retry_at.is_some_and(|at| Instant::now() < at);
            if due && backing_off {
                // The provider failed recently: what we have, or no.
                if let Some(k) = c.keys.get(kid) {
                    return Ok(k.clone());
                }
                let wait = c
                    .retry_at
                    .map(|at| at.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                return Err(AuthError::Provider(format!(
                    "the signing keys could not be fetched; next try in {}s",
                    wait.as_secs().max(1)
                )));
            }
            due
        };
        if may_fetch {
            match self.fetch_keys().await {
                Ok(keys) => {
                    let mut c = self.keys.write();
                    c.keys = keys;
                    c.fetched = Some(Instant::now());
                    c.failures = 0;
                    c.retry_at = None;
                }
                Err(e) => {
                    let wait = {
                        let mut c = self.keys.write();
                        c.failures = c.failures.saturating_add(1);
                        let wait = backoff(self.cfg.jwks_min_refresh_interval, c.failures);
                        c.retry_at = Some(Instant::now() + wait);
                        wait
                    };
                    metrics::counter!(crate::metrics::OIDC_JWKS_FETCH_FAILURES).increment(1);
                    tracing::warn!(error = %e, retry_in_seconds = wait.as_secs(), "could not fetch the OIDC signing keys; backing off");
                    // Serve the keys we have (stale) rather than lock everybody out.
                    if let Some(k) = self.keys.read().keys.get(kid) {
                        return Ok(k.clone());
                    }
                    return Err(e);
                }
            }
        }
        self.keys
            .read()
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::Invalid("signed with an unknown key".into()))
    }

    /// Verifies a JWT's signature, issuer, expiry and (when `audience` is given) audience;
    /// returns its claims.
    async fn verify(&self, token: &str, audience: Option<&str>) -> Result<Value, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token".into()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid("only RS256 tokens are accepted".into()));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("the token has no key id".into()))?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_issuer(&[self.cfg.issuer.as_str()]);
        match audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
            }
            None => {
                v.validate_aud = false;
                v.set_required_spec_claims(&["exp", "iss"]);
            }
        }
        v.leeway = self.cfg.leeway.as_secs();
        v.validate_nbf = true;
        jsonwebtoken::decode::<Value>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))
    }

    /// The principal of a set of claims (roles may come from several claim sets).
    fn principal(&self, claims: &[&Value]) -> Result<Principal, AuthError> {
        let roles: Vec<&str> = claims
            .iter()
            .flat_map(|c| strings_at(c, &self.cfg.roles_claim))
            .collect();
        let role = self
            .cfg
            .role_mapping
            .role_of(roles.iter().copied())
            .ok_or(AuthError::NoRole)?;
        let name = claims
            .iter()
            .find_map(|c| c.get(&self.cfg.username_claim).and_then(Value::as_str))
            .or_else(|| {
                claims
                    .iter()
                    .find_map(|c| c.get("sub").and_then(Value::as_str))
            })
            .filter(|n| !n.is_empty())
            .ok_or_else(|| AuthError::Invalid("the token names no user".into()))?;
        Ok(Principal {
            name: name.chars().take(128).collect(),
            role,
            method: AuthMethod::Oidc,
        })
    }

    /// What sessions made from this provider's tokens record.
    fn credential(&self) -> Credential {
        Credential::Oidc {
            issuer: self.cfg.issuer.clone(),
        }
    }

    /// Checks a bearer JWT.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Verified, AuthError> {
        let claims = self.verify(token, Some(&self.cfg.audience)).await?;
        Ok(Verified {
            principal: self.principal(&[&claims])?,
            credential: self.credential(),
            expires_at: expiry(&claims),
        })
    }

    /// Starts a browser sign-in: the provider URL to send the browser to, and the value of
    /// the binding cookie the browser must bring back to the callback.
    pub(crate) async fn begin(
        &self,
        redirect_uri: &str,
        return_to: &str,
    ) -> Result<(String, String), AuthError> {
        let endpoint = self
            .discovery()
            .await?
            .authorization_endpoint
            .ok_or_else(|| {
                AuthError::Provider("the discovery document has no authorization_endpoint".into())
            })?;
        let mut url = url::Url::parse(&endpoint)
            .map_err(|e| AuthError::Provider(format!("authorization_endpoint: {e}")))?;
        if self.pending.len() >= MAX_PENDING {
            self.pending
                .retain(|_, p| p.started.elapsed() < SIGN_IN_TTL);
            if self.pending.len() >= MAX_PENDING {
                return Err(AuthError::Provider("too many sign-ins under way".into()));
            }
        }
        let state = random_b64(32);
        let binding = random_b64(32);
        let verifier = random_b64(32);
        let nonce = random_b64(16);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(verifier.as_bytes()));
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", self.cfg.client_id())
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.cfg.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        self.pending.insert(
            state,
            Pending {
                browser: Sha256::digest(binding.as_bytes()).into(),
                verifier,
                nonce,
                redirect_uri: redirect_uri.to_owned(),
                return_to: return_to.to_owned(),
                started: Instant::now(),
            },
        );
        Ok((url.into(), binding))
    }

    /// Completes a browser sign-in: checks that this browser started it (`binding`, the
    /// value of its binding cookie), exchanges the code (with the PKCE verifier), checks the
    /// ID token (signature, issuer, audience = client id, expiry, nonce). Returns who signed
    /// in (expiring with the earlier of the ID and access tokens) and where to send the
    /// browser.
    pub(crate) async fn complete(
        &self,
        code: &str,
        state: &str,
        binding: Option<&str>,
    ) -> Result<(Verified, String), AuthError> {
        let (_, pending) = self
            .pending
            .remove(state)
            .ok_or_else(|| AuthError::Invalid("unknown or already used sign-in state".into()))?;
        let bound = binding.is_some_and(|b| {
            let h: [u8; 32] = Sha256::digest(b.as_bytes()).into();
            bool::from(h.ct_eq(&pending.browser))
        });
        if !bound {
            return Err(AuthError::Invalid(
                "the sign-in was not started in this browser (its sign-in cookie is missing or different); start again".into(),
            ));
        }
        if pending.started.elapsed() > SIGN_IN_TTL {
            return Err(AuthError::Invalid(
                "the sign-in took too long; start again".into(),
            ));
        }
        let endpoint = self.discovery().await?.token_endpoint.ok_or_else(|| {
            AuthError::Provider("the discovery document has no token_endpoint".into())
        })?;
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &pending.redirect_uri)
                .append_pair("client_id", self.cfg.client_id())
                .append_pair("code_verifier", &pending.verifier);
            if let Some(secret) = &self.cfg.client_secret {
                form.append_pair("client_secret", secret.expose());
            }
            form.finish()
        };
        let res = self
            .http
            .post(&endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| AuthError::Provider(format!("token endpoint: {}", e.without_url())))?;
        if res.status().is_client_error() {
            return Err(AuthError::Invalid(format!(
                "the provider refused the code (http {})",
                res.status().as_u16()
            )));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
            access_token: Option<String>,
        }
        let tokens: TokenResponse = Self::read_json("token endpoint", res).await?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| AuthError::Invalid("the provider sent no ID token".into()))?;
        let id = self.verify(&id_token, Some(self.cfg.client_id())).await?;
        if id.get("nonce").and_then(Value::as_str) != Some(pending.nonce.as_str()) {
            return Err(AuthError::Invalid(
                "the ID token's nonce does not match".into(),
            ));
        }
        // Keycloak puts realm roles in the access token; it came straight from the token
        // endpoint, so its signature, issuer and expiry are enough.
        let access = match tokens.access_token.as_deref() {
            Some(t) if t.split('.').count() == 3 => self.verify(t, None).await.ok(),
            _ => None,
        };
        let mut claims = vec![&id];
        if let Some(a) = &access {
            claims.push(a);
        }
        let expires_at = claims.iter().filter_map(|c| expiry(c)).min();
        let verified = Verified {
            principal: self.principal(&claims)?,
            credential: self.credential(),
            expires_at,
        };
        Ok((verified, pending.return_to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn jwks_fetches_should_back_off_doubling_up_to_five_minutes() {
        let s = Duration::from_secs;
        let waits: Vec<_> = (1..=8).map(|n| backoff(s(10), n)).collect();
        assert_eq!(
            waits,
            [s(10), s(20), s(40), s(80), s(160), s(300), s(300), s(300)]
        );
        assert_eq!(
            backoff(Duration::ZERO, 1),
            s(1),
            "never hammering, even with 0s"
        );
        assert_eq!(backoff(s(600), 3), s(600), "a longer interval is kept");
        assert_eq!(backoff(s(10), u32::MAX), s(300));
    }

    #[test]
    fn expiry_should_read_exp_as_seconds() {
        let at = expiry(&serde_json::json!({"exp": 1_800_000_000})).unwrap();
        assert_eq!(at.timestamp(), 1_800_000_000);
        assert_eq!(
            expiry(&serde_json::json!({"exp": 1.8e9}))
                .unwrap()
                .timestamp(),
            1_800_000_000
        );
        assert!(expiry(&serde_json::json!({"exp": "soon"})).is_none());
        assert!(expiry(&serde_json::json!({})).is_none());
    }

    #[test]
    fn a_ca_file_that_cannot_serve_should_be_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("ccm-oidc-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        for (path, why) in [
            (dir.join("missing.pem"), "cannot read"),
            (not_pem, "holds no certificate"),
        ] {
            let mut cfg = OidcConfig::new("https://idp.example", "ccm");
            cfg.ca_file = Some(path.clone());
            let err = Oidc::new(cfg).err().unwrap();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(why), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn roles_should_be_read_from_a_dotted_claim_path() {
        let claims = serde_json::json!({
            "realm_access": {"roles": ["offline_access", "ccm-manager"]},
            "groups": "a b",
        });
        assert_eq!(
            strings_at(&claims, "realm_access.roles"),
            ["offline_access", "ccm-manager"]
        );
        assert_eq!(strings_at(&claims, "groups"), ["a", "b"]);
        assert!(strings_at(&claims, "resource_access.ccm.roles").is_empty());
        let oidc = Oidc::new(OidcConfig::new("https://idp.example", "ccm")).unwrap();
        let p = oidc
            .principal(&[&serde_json::json!({
                "sub": "123",
                "preferred_username": "alice",
                "realm_access": {"roles": ["ccm-manager"]},
            })])
            .unwrap();
        assert_eq!((p.name.as_str(), p.role), ("alice", Role::Manager));
        assert_eq!(
            oidc.principal(&[&serde_json::json!({"sub": "1"})]),
            Err(AuthError::NoRole)
        );
    }
}
