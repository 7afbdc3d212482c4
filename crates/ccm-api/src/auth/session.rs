//! Browser sessions: an opaque random id in an HttpOnly, SameSite=Strict cookie, with an
//! absolute lifetime and a CSRF token per session. Kept in memory and written through to the
//! store (keyed by the id's SHA-256 in both, so neither ever holds a usable id): sessions
//! survive a restart of ccm, and a session unknown to this process is looked up there.
//!
//! A session is bound to the credential that made it ([`Credential`]: the static token's
//! name and configured hash, or the OIDC issuer — never the secret): it lasts no longer than
//! that credential (an OIDC token's `exp`), and one read back from the database is checked
//! against the configuration ([`Accepted`]), so removing a token or lowering its role ends
//! its sessions at the next start. Event streams watch their session ([`SessionWatch`]) and
//! end when it is signed out.

use std::collections::HashMap;
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
use tokio_util::sync::CancellationToken;

use super::{AuthMethod, Principal, Role};
use crate::config::AuthConfig;

/// The session cookie's base name (`__Host-` prefixed when cookies are always `Secure`).
pub(crate) const SESSION_COOKIE: &str = "ccm_session";

/// What made a session: enough to check it against the configuration, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Credential {
    /// A static token: its name and the SHA-256 the configuration holds for it.
    Token {
        /// `[[auth.tokens]] name`.
        name: String,
        /// `[[auth.tokens]] sha256`.
        sha256: String,
    },
    /// A token from the OIDC provider with this issuer.
    Oidc {
        /// `[auth.oidc] issuer`.
        issuer: String,
    },
}

/// The credentials the configuration accepts now (sessions read back from the database must
/// still be made from one of them, with at least their role).
#[derive(Debug, Clone, Default)]
pub(crate) struct Accepted {
    tokens: HashMap<String, (String, Role)>,
    oidc_issuer: Option<String>,
}

impl Accepted {
    pub(crate) fn from_config(config: &AuthConfig) -> Self {
        Self {
            tokens: config
                .tokens
                .iter()
                .map(|t| (t.name.clone(), (t.sha256.clone(), t.role)))
                .collect(),
            oidc_issuer: config.oidc.as_ref().map(|o| o.issuer.clone()),
        }
    }

    /// `Err(why)` when a session of `role` made from `credential` may no longer be used.
    fn admits(&self, credential: Option<&Credential>, role: Role) -> Result<(), &'static str> {
        match credential {
            None => Err("it records no credential (made by an older ccm)"),
            Some(Credential::Token { name, sha256 }) => match self.tokens.get(name) {
                None => Err("its token was removed from the configuration"),
                Some((hash, _)) if hash != sha256 => Err("its token was replaced"),
                Some((_, now)) if *now < role => Err("its token's role was lowered"),
                Some(_) => Ok(()),
            },
            Some(Credential::Oidc { issuer }) => {
                if self.oidc_issuer.as_deref() == Some(issuer.as_str()) {
                    Ok(())
                } else {
                    Err("its identity provider is no longer configured")
                }
            }
        }
    }
}

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
    key: [u8; 32],
}

impl SessionInfo {
    /// When it ends (tokio's clock).
    pub(crate) fn expires(&self) -> Instant {
        self.expires
    }
}

/// A session as the database keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    name: String,
    role: Role,
    method: AuthMethod,
    csrf_token: String,
    expires_at: DateTime<Utc>,
    #[serde(default)]
    credential: Option<Credential>,
}

/// The sign-out of one session, for whoever watches it (event streams).
type Watchers = DashMap<[u8; 32], (CancellationToken, usize)>;

/// Resolves when its session is signed out; unregisters itself when dropped.
#[derive(Debug)]
pub(crate) struct SessionWatch {
    ended: CancellationToken,
    key: [u8; 32],
    watchers: Arc<Watchers>,
}

impl SessionWatch {
    /// Resolves when the session is signed out.
    pub(crate) async fn signed_out(&self) {
        self.ended.cancelled().await;
    }

    /// Whether it was.
    pub(crate) fn is_signed_out(&self) -> bool {
        self.ended.is_cancelled()
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        self.watchers.remove_if_mut(&self.key, |_, (_, n)| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// The session store: memory, written through to the database when there is one.
pub(crate) struct SessionStore {
    sessions: DashMap<[u8; 32], SessionInfo>,
    watchers: Arc<Watchers>,
    persist: Option<Arc<dyn SessionRepo>>,
    accepted: Accepted,
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
    /// A store of sessions that live at most `ttl`, at most `max` in memory; with `persist`,
    /// written through to the database, and those read back from it checked against
    /// `accepted`.
    pub(crate) fn new(
        ttl: Duration,
        max: usize,
        persist: Option<Arc<dyn SessionRepo>>,
        accepted: Accepted,
    ) -> Self {
        Self {
            sessions: DashMap::new(),
            watchers: Arc::new(DashMap::new()),
            persist,
            accepted,
            ttl,
            max: max.max(1),
        }
    }

    /// Starts a session made from `credential`, ending after the store's lifetime or at
    /// `not_after` (the credential's own expiry), whichever is first. Returns its id (for
    /// the cookie only) and what the store keeps.
    ///
    /// A database that cannot store it is logged, not fatal: the session then lives in this
    /// process only (it ends with a restart).
    pub(crate) async fn create(
        &self,
        principal: Principal,
        credential: Credential,
        not_after: Option<DateTime<Utc>>,
    ) -> (String, SessionInfo) {
        if self.sessions.len() >= self.max {
            self.evict();
        }
        let now = Utc::now();
        let lifetime = match not_after {
            Some(end) => (end - now).to_std().unwrap_or(Duration::ZERO).min(self.ttl),
            None => self.ttl,
        };
        let id = random_token();
        let k = key(&id);
        let info = SessionInfo {
            principal,
            csrf_token: random_token(),
            expires_at: now
                + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(8)),
            expires: Instant::now() + lifetime,
            key: k,
        };
        self.sessions.insert(k, info.clone());
        if let Some(db) = &self.persist {
            let doc = StoredSession {
                name: info.principal.name.clone(),
                role: info.principal.role,
                method: info.principal.method,
                csrf_token: info.csrf_token.clone(),
                expires_at: info.expires_at,
                credential: Some(credential),
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

    /// The live session with this id: from memory, else from the database (if its
    /// credential is still accepted; one that is not is deleted there).
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
        if let Err(why) = self
            .accepted
            .admits(stored.credential.as_ref(), stored.role)
        {
            tracing::info!(user = %stored.name, reason = why, "a stored session was ended: {why}");
            if let Err(e) = db.delete_session(&hex::encode(k)).await {
                tracing::warn!(error = %e, "cannot delete an ended session from the database");
            }
            return None;
        }
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
            key: k,
        };
        if self.sessions.len() >= self.max {
            self.evict();
        }
        self.sessions.insert(k, info.clone());
        Some(info)
    }

    /// Ends a session, in the database first: when that fails the session stays valid
    /// everywhere and the error is returned (a sign-out that silently failed would come back
    /// from the database at the next start). Returns whether it existed; its watchers are
    /// told.
    pub(crate) async fn remove(&self, id: &str) -> Result<bool, String> {
        let k = key(id);
        let there = match &self.persist {
            Some(db) => db
                .delete_session(&hex::encode(k))
                .await
                .map_err(|e| e.to_string())?,
            None => false,
        };
        let here = self.sessions.remove(&k).is_some();
        if let Some((_, (ended, _))) = self.watchers.remove(&k) {
            ended.cancel();
        }
        Ok(here || there)
    }

    /// Ends a session signed out elsewhere (another replica), by its key (SHA-256 of the id,
    /// hex): dropped from memory, its event streams told. Unknown or malformed keys are
    /// ignored.
    pub(crate) fn end_key(&self, hex_key: &str) {
        let Ok(bytes) = hex::decode(hex_key) else {
            return;
        };
        let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            return;
        };
        self.sessions.remove(&k);
        if let Some((_, (ended, _))) = self.watchers.remove(&k) {
            ended.cancel();
        }
    }

    /// A handle that resolves when this session is signed out.
    pub(crate) fn watch(&self, info: &SessionInfo) -> SessionWatch {
        let ended = {
            let mut entry = self
                .watchers
                .entry(info.key)
                .or_insert_with(|| (CancellationToken::new(), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        // Signed out between the caller's look-up and this registration: already ended.
        if !self.sessions.contains_key(&info.key) {
            ended.cancel();
        }
        SessionWatch {
            ended,
            key: info.key,
            watchers: self.watchers.clone(),
        }
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

/// The value of the cookie `name` from the request's `Cookie` header(s), if any.
pub(crate) fn cookie_of<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty() && v.len() <= 256)
}

/// How a cookie may travel with cross-site requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SameSite {
    /// Never (the session).
    Strict,
    /// With top-level navigations only (the OIDC sign-in binding: the provider redirects
    /// the browser back, which is cross-site).
    Lax,
}

/// A `Set-Cookie` value: HttpOnly, `Path=/` (as the `__Host-` prefix demands), `Max-Age`.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    max_age: Duration,
    secure: bool,
    same_site: SameSite,
) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite={}{}",
        max_age.as_secs(),
        match same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        },
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes a cookie.
pub(crate) fn clear_cookie(name: &str, secure: bool, same_site: SameSite) -> String {
    set_cookie(name, "", Duration::ZERO, secure, same_site)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use ccm_store::SqliteStore;

    use super::*;

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Viewer,
            method: AuthMethod::Token,
        }
    }

    fn token(name: &str) -> Credential {
        Credential::Token {
            name: name.into(),
            sha256: crate::config::hash_token(name),
        }
    }

    fn memory(ttl: u64, max: usize) -> SessionStore {
        SessionStore::new(Duration::from_secs(ttl), max, None, Accepted::default())
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_should_expire_after_their_lifetime() {
        let store = memory(60, 10);
        let (id, info) = store.create(alice(), token("t"), None).await;
        assert_eq!(store.get(&id).await.unwrap().csrf_token, info.csrf_token);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.get(&id).await.is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store.get(&id).await.is_none());
        assert_eq!(store.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_should_end_no_later_than_its_credential() {
        let store = memory(3600, 10);
        let exp = Utc::now() + chrono::Duration::seconds(90);
        let (id, info) = store.create(alice(), token("t"), Some(exp)).await;
        assert!(info.expires_at <= exp, "{} > {exp}", info.expires_at);
        tokio::time::advance(Duration::from_secs(89)).await;
        assert!(store.get(&id).await.is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            store.get(&id).await.is_none(),
            "the token expired, so did the session"
        );
        // A credential already expired makes a session that is over at once.
        let (id, _) = store
            .create(
                alice(),
                token("t"),
                Some(Utc::now() - chrono::Duration::seconds(5)),
            )
            .await;
        assert!(store.get(&id).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_should_drop_the_oldest_session() {
        let store = memory(60, 2);
        let (a, _) = store.create(alice(), token("t"), None).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let (b, _) = store.create(alice(), token("t"), None).await;
        let (c, _) = store.create(alice(), token("t"), None).await;
        assert!(store.get(&a).await.is_none());
        assert!(store.get(&b).await.is_some() && store.get(&c).await.is_some());
    }

    #[tokio::test]
    async fn the_store_should_not_hold_usable_ids() {
        let store = memory(60, 2);
        let (id, _) = store.create(alice(), token("t"), None).await;
        assert!(store.sessions.iter().all(|e| e.key() != id.as_bytes()));
        assert!(store.remove(&id).await.unwrap());
        assert!(!store.remove(&id).await.unwrap());
    }

    #[tokio::test]
    async fn a_sign_out_should_end_every_watch_of_that_session_only() {
        let store = memory(60, 10);
        let (a, info_a) = store.create(alice(), token("t"), None).await;
        let (_, info_b) = store.create(alice(), token("t"), None).await;
        let (w1, w2, other) = (
            store.watch(&info_a),
            store.watch(&info_a),
            store.watch(&info_b),
        );
        store.remove(&a).await.unwrap();
        w1.signed_out().await;
        assert!(w2.is_signed_out() && !other.is_signed_out());
        drop((w1, w2, other));
        assert!(store.watchers.is_empty(), "watches unregister when dropped");
        // Watching a session that is already gone: ended at once.
        assert!(store.watch(&info_a).is_signed_out());
    }

    /// The real store, with deletes that fail while `fail` is set.
    struct FlakyDeletes {
        db: SqliteStore,
        fail: AtomicBool,
    }

    #[async_trait::async_trait]
    impl SessionRepo for FlakyDeletes {
        async fn put_session(
            &self,
            key: &str,
            doc: &str,
            expires_at: DateTime<Utc>,
        ) -> ccm_store::Result<()> {
            self.db.put_session(key, doc, expires_at).await
        }
        async fn session(
            &self,
            key: &str,
            now: DateTime<Utc>,
        ) -> ccm_store::Result<Option<String>> {
            self.db.session(key, now).await
        }
        async fn delete_session(&self, key: &str) -> ccm_store::Result<bool> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(ccm_store::StoreError::Corrupt {
                    what: "session",
                    id: key.to_owned(),
                    message: "disk I/O error".into(),
                });
            }
            self.db.delete_session(key).await
        }
        async fn purge_sessions(&self, now: DateTime<Utc>) -> ccm_store::Result<u64> {
            self.db.purge_sessions(now).await
        }
    }

    #[tokio::test]
    async fn a_failed_database_delete_should_fail_the_sign_out_and_keep_the_session_whole() {
        let db = Arc::new(FlakyDeletes {
            db: SqliteStore::open_in_memory().await.unwrap(),
            fail: AtomicBool::new(true),
        });
        let accepted =
            Accepted::from_config(&AuthConfig::default().with_token("t", Role::Viewer, "t"));
        let store = SessionStore::new(
            Duration::from_secs(60),
            10,
            Some(db.clone()),
            accepted.clone(),
        );
        let (id, info) = store.create(alice(), token("t"), None).await;
        let watch = store.watch(&info);
        assert!(store.remove(&id).await.is_err());
        assert!(store.get(&id).await.is_some(), "still valid here");
        assert!(!watch.is_signed_out(), "its streams go on");
        let restarted = SessionStore::new(
            Duration::from_secs(60),
            10,
            Some(db.clone()),
            accepted.clone(),
        );
        assert!(
            restarted.get(&id).await.is_some(),
            "and after a restart, as the client was told"
        );
        db.fail.store(false, Ordering::SeqCst);
        assert!(store.remove(&id).await.unwrap());
        assert!(watch.is_signed_out());
        let restarted = SessionStore::new(Duration::from_secs(60), 10, Some(db), accepted);
        assert!(
            restarted.get(&id).await.is_none(),
            "gone for good once the delete succeeded"
        );
    }

    #[tokio::test]
    async fn sessions_read_back_should_end_when_their_token_was_removed_replaced_or_lowered() {
        let db: Arc<dyn SessionRepo> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let config = AuthConfig::default()
            .with_token("ops", Role::Admin, "ops-secret")
            .with_token("ci", Role::Manager, "ci-secret");
        let before = SessionStore::new(
            Duration::from_secs(600),
            10,
            Some(db.clone()),
            Accepted::from_config(&config),
        );
        let admin = Principal {
            name: "token:ops".into(),
            role: Role::Admin,
            method: AuthMethod::Token,
        };
        let manager = Principal {
            name: "token:ci".into(),
            role: Role::Manager,
            method: AuthMethod::Token,
        };
        let ops = Credential::Token {
            name: "ops".into(),
            sha256: crate::config::hash_token("ops-secret"),
        };
        let ci = Credential::Token {
            name: "ci".into(),
            sha256: crate::config::hash_token("ci-secret"),
        };
        let (ops_id, _) = before.create(admin.clone(), ops.clone(), None).await;
        let (ci_id, _) = before.create(manager.clone(), ci.clone(), None).await;
        let restart = |config: &AuthConfig| {
            SessionStore::new(
                Duration::from_secs(600),
                10,
                Some(db.clone()),
                Accepted::from_config(config),
            )
        };
        // The same configuration: both sessions come back.
        let same = restart(&config);
        assert!(same.get(&ops_id).await.is_some() && same.get(&ci_id).await.is_some());

        let cases = [
            // ops lowered to viewer
            AuthConfig::default()
                .with_token("ops", Role::Viewer, "ops-secret")
                .with_token("ci", Role::Manager, "ci-secret"),
            // ops removed
            AuthConfig::default().with_token("ci", Role::Manager, "ci-secret"),
            // ops replaced by another token of the same name
            AuthConfig::default()
                .with_token("ops", Role::Admin, "new-secret")
                .with_token("ci", Role::Manager, "ci-secret"),
        ];
        for changed in &cases {
            let (ops_id, _) = before.create(admin.clone(), ops.clone(), None).await;
            let after = restart(changed);
            assert!(after.get(&ops_id).await.is_none(), "{changed:?}");
            assert!(after.get(&ci_id).await.is_some(), "ci is unchanged");
            // Deleted from the database, not merely refused.
            assert!(restart(&config).get(&ops_id).await.is_none());
        }
        // A session that records no credential (an older ccm) is not trusted either.
        let legacy = serde_json::json!({
            "name": "token:ops", "role": "admin", "method": "token", "csrf_token": "x",
            "expires_at": Utc::now() + chrono::Duration::minutes(5),
        });
        db.put_session(
            &hex::encode(key("legacy-id")),
            &legacy.to_string(),
            Utc::now() + chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
        assert!(restart(&config).get("legacy-id").await.is_none());
        // An OIDC session ends when OIDC is no longer configured.
        let mut with_oidc = config.clone();
        with_oidc.oidc = Some(crate::config::OidcConfig::new("https://idp.example", "ccm"));
        let store = restart(&with_oidc);
        let carol = Principal {
            name: "carol".into(),
            role: Role::Viewer,
            method: AuthMethod::Oidc,
        };
        let (c, _) = store
            .create(
                carol,
                Credential::Oidc {
                    issuer: "https://idp.example".into(),
                },
                None,
            )
            .await;
        assert!(restart(&with_oidc).get(&c).await.is_some());
        assert!(restart(&config).get(&c).await.is_none());
    }

    #[test]
    fn cookies_should_be_found_among_others_and_set_with_their_attributes() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; ccm_session=abc; __Host-ccm_session=def; b=2"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie_of(&h, "ccm_session"), Some("abc"));
        assert_eq!(cookie_of(&h, "__Host-ccm_session"), Some("def"));
        let c = set_cookie("n", "abc", Duration::from_secs(10), true, SameSite::Strict);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(c.contains("Path=/;") && c.contains("Max-Age=10"));
        let c = clear_cookie("n", false, SameSite::Lax);
        assert!(c.starts_with("n=;") && c.contains("Max-Age=0") && !c.contains("Secure"));
    }
}
