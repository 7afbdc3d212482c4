//! Browser sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie, looked up in
//! an in-memory store (keyed by the id's hash, so the store never holds a usable id), with an
//! absolute lifetime and a CSRF token per session.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use http::HeaderMap;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::Principal;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "ccm_session";

/// What the store knows of one session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Who signed in.
    pub principal: Principal,
    /// The token state-changing requests must echo in `X-CSRF-Token`.
    pub csrf_token: String,
    /// When it ends (wall clock, for clients).
    pub expires_at: DateTime<Utc>,
    expires: Instant,
}

/// The in-memory session store.
#[derive(Debug)]
pub(crate) struct SessionStore {
    sessions: DashMap<[u8; 32], SessionInfo>,
    ttl: Duration,
    max: usize,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl SessionStore {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            sessions: DashMap::new(),
            ttl,
            max: max.max(1),
        }
    }

    /// The lifetime of new sessions.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session; returns its id (for the cookie only) and what the store keeps.
    pub(crate) fn create(&self, principal: Principal) -> (String, SessionInfo) {
        if self.sessions.len() >= self.max {
            self.evict();
        }
        let id = random_token();
        let info = SessionInfo {
            principal,
            csrf_token: random_token(),
            expires_at: Utc::now()
                + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(8)),
            expires: Instant::now() + self.ttl,
        };
        self.sessions.insert(key(&id), info.clone());
        (id, info)
    }

    /// The live session with this id.
    pub(crate) fn get(&self, id: &str) -> Option<SessionInfo> {
        let k = key(id);
        let info = self.sessions.get(&k)?.clone();
        if info.expires <= Instant::now() {
            self.sessions.remove(&k);
            return None;
        }
        Some(info)
    }

    /// Ends a session; returns whether it existed.
    pub(crate) fn remove(&self, id: &str) -> bool {
        self.sessions.remove(&key(id)).is_some()
    }

    /// Live sessions (expired ones may still be counted until touched).
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Drops expired sessions; if the store is still full, the one closest to expiry.
    fn evict(&self) {
        let now = Instant::now();
        self.sessions.retain(|_, s| s.expires > now);
        if self.sessions.len() >= self.max
            && let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|e| e.value().expires)
                .map(|e| *e.key())
        {
            self.sessions.remove(&oldest);
        }
    }
}

/// The session id from the request's `Cookie` header(s), if any.
pub(crate) fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// The `Set-Cookie` value that stores a session id.
pub(crate) fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthMethod, Role};

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Viewer,
            method: AuthMethod::Token,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_should_expire_after_their_lifetime() {
        let store = SessionStore::new(Duration::from_secs(60), 10);
        let (id, info) = store.create(alice());
        assert_eq!(store.get(&id).unwrap().csrf_token, info.csrf_token);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.get(&id).is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.get(&id).is_none());
        assert_eq!(store.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_should_drop_the_oldest_session() {
        let store = SessionStore::new(Duration::from_secs(60), 2);
        let (a, _) = store.create(alice());
        tokio::time::advance(Duration::from_secs(1)).await;
        let (b, _) = store.create(alice());
        let (c, _) = store.create(alice());
        assert!(store.get(&a).is_none());
        assert!(store.get(&b).is_some() && store.get(&c).is_some());
    }

    #[test]
    fn the_store_should_not_hold_usable_ids() {
        let store = SessionStore::new(Duration::from_secs(60), 2);
        let (id, _) = store.create(alice());
        assert!(store.sessions.iter().all(|e| e.key() != id.as_bytes()));
        assert!(store.remove(&id));
        assert!(!store.remove(&id));
    }

    #[test]
    fn the_cookie_should_be_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; ccm_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_of(&h), Some("abc"));
        let c = set_cookie("abc", Duration::from_secs(10), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
    }
}
