//! Browser sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie, with an
//! absolute lifetime and a CSRF token per session. Kept in memory and written through to the
//! store (keyed by the id's SHA-256 in both, so neither ever holds a usable id): sessions
//! survive a restart of ccm, and a session unknown to this process is looked up there.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ccm_store::SessionRepo;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use http::HeaderMap;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{AuthMethod, Principal, Role};

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

/// A session as the database keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    name: String,
    role: Role,
    method: AuthMethod,
    csrf_token: String,
    expires_at: DateTime<Utc>,
}

/// The session store: memory, written through to the database when there is one.
pub(crate) struct SessionStore {
    sessions: DashMap<[u8; 32], SessionInfo>,
    persist: Option<Arc<dyn SessionRepo>>,
    ttl: Duration,
    max: usize,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("sessions", &self.sessions.len())
            .field("persistent", &self.persist.is_some())
            .finish_non_exhaustive()
    }
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
    /// A store of sessions that live `ttl`, at most `max` in memory; with `persist`, written
    /// through to the database.
    pub(crate) fn new(ttl: Duration, max: usize, persist: Option<Arc<dyn SessionRepo>>) -> Self {
        Self {
            sessions: DashMap::new(),
            persist,
            ttl,
            max: max.max(1),
        }
    }

    /// The lifetime of new sessions.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session; returns its id (for the cookie only) and what the store keeps.
    ///
    /// A database that cannot store it is logged, not fatal: the session then lives in this
    /// process only (it ends with a restart).
    pub(crate) async fn create(&self, principal: Principal) -> (String, SessionInfo) {
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
        let k = key(&id);
        self.sessions.insert(k, info.clone());
        if let Some(db) = &self.persist {
            let doc = StoredSession {
                name: info.principal.name.clone(),
                role: info.principal.role,
                method: info.principal.method,
                csrf_token: info.csrf_token.clone(),
                expires_at: info.expires_at,
            };
            let stored = match serde_json::to_string(&doc) {
                Ok(json) => db
                    .put_session(&hex::encode(k), &json, info.expires_at)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = stored {
                tracing::warn!(error = %e, "the session is kept in memory only: it will not survive a restart");
            }
            if let Err(e) = db.purge_sessions(Utc::now()).await {
                tracing::debug!(error = %e, "expired sessions not purged");
            }
        }
        (id, info)
    }

    /// The live session with this id: from memory, else from the database.
    pub(crate) async fn get(&self, id: &str) -> Option<SessionInfo> {
        let k = key(id);
        if let Some(info) = self.sessions.get(&k).map(|e| e.clone()) {
            if info.expires <= Instant::now() {
                self.sessions.remove(&k);
                return None;
            }
            return Some(info);
        }
        let db = self.persist.as_ref()?;
        let now = Utc::now();
        let doc = match db.session(&hex::encode(k), now).await {
            Ok(doc) => doc?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session from the database");
                return None;
            }
        };
        let stored: StoredSession = match serde_json::from_str(&doc) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "a stored session is unreadable; it is ignored");
                return None;
            }
        };
        let left = (stored.expires_at - now).to_std().ok()?;
        let info = SessionInfo {
            principal: Principal {
                name: stored.name,
                role: stored.role,
                method: stored.method,
            },
            csrf_token: stored.csrf_token,
            expires_at: stored.expires_at,
            expires: Instant::now() + left,
        };
        if self.sessions.len() >= self.max {
            self.evict();
        }
        self.sessions.insert(k, info.clone());
        Some(info)
    }

    /// Ends a session (here and in the database); returns whether it existed.
    pub(crate) async fn remove(&self, id: &str) -> bool {
        let k = key(id);
        let here = self.sessions.remove(&k).is_some();
        let there = match &self.persist {
            Some(db) => db
                .delete_session(&hex::encode(k))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot delete a session from the database");
                    false
                }),
            None => false,
        };
        here || there
    }

    /// Sessions in memory (expired ones may still be counted until touched).
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Drops expired sessions; if memory is still full, the one closest to expiry (it stays
    /// in the database, and comes back from there when used).
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

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Viewer,
            method: AuthMethod::Token,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_should_expire_after_their_lifetime() {
        let store = SessionStore::new(Duration::from_secs(60), 10, None);
        let (id, info) = store.create(alice()).await;
        assert_eq!(store.get(&id).await.unwrap().csrf_token, info.csrf_token);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.get(&id).await.is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.get(&id).await.is_none());
        assert_eq!(store.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_should_drop_the_oldest_session() {
        let store = SessionStore::new(Duration::from_secs(60), 2, None);
        let (a, _) = store.create(alice()).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let (b, _) = store.create(alice()).await;
        let (c, _) = store.create(alice()).await;
        assert!(store.get(&a).await.is_none());
        assert!(store.get(&b).await.is_some() && store.get(&c).await.is_some());
    }

    #[tokio::test]
    async fn the_store_should_not_hold_usable_ids() {
        let store = SessionStore::new(Duration::from_secs(60), 2, None);
        let (id, _) = store.create(alice()).await;
        assert!(store.sessions.iter().all(|e| e.key() != id.as_bytes()));
        assert!(store.remove(&id).await);
        assert!(!store.remove(&id).await);
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
