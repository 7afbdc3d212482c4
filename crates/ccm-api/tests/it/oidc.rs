//! A fake OpenID provider on a loopback address: discovery, JWKS (rotatable, fetches counted),
//! an authorize endpoint that records the PKCE challenge and a token endpoint that checks it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use base64::Engine as _;
use ccm_api::OidcConfig;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{TestApi, http};

/// An RSA signing key and its public JWK.
#[derive(Clone)]
struct Key {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

fn new_key(kid: &str) -> Key {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = pair.as_der().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    Key {
        kid: kid.to_owned(),
        encoding,
        jwk,
    }
}

struct Login {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    client_id: String,
}

struct Provider {
    issuer: String,
    keys: Mutex<Vec<Key>>,
    fetches: AtomicUsize,
    /// The JWKS endpoint answers 500 (the provider is down).
    fail_jwks: AtomicBool,
    logins: Mutex<HashMap<String, Login>>,
    /// Roles the next sign-in gets (in the access token, as Keycloak does).
    roles: Mutex<Vec<String>>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Provider {
    fn sign(&self, key: &Key, claims: Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&h, &claims, &key.encoding).unwrap()
    }
}

async fn discovery(State(p): State<Arc<Provider>>) -> axum::Json<Value> {
    axum::Json(json!({
        "issuer": p.issuer,
        "jwks_uri": format!("{}/jwks", p.issuer),
        "authorization_endpoint": format!("{}/authorize", p.issuer),
        "token_endpoint": format!("{}/token", p.issuer),
    }))
}

async fn jwks(State(p): State<Arc<Provider>>) -> axum::response::Response {
    p.fetches.fetch_add(1, Ordering::SeqCst);
    if p.fail_jwks.load(Ordering::SeqCst) {
        return http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    axum::Json(JwkSet {
        keys: p.keys.lock().iter().map(|k| k.jwk.clone()).collect(),
    })
    .into_response()
}

async fn authorize(
    State(p): State<Arc<Provider>>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].contains("openid"));
    let code = format!("code-{}", uuid::Uuid::new_v4());
    p.logins.lock().insert(
        code.clone(),
        Login {
            challenge: q["code_challenge"].clone(),
            nonce: q["nonce"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
            client_id: q["client_id"].clone(),
        },
    );
    Redirect::to(&format!(
        "{}?code={code}&state={}",
        q["redirect_uri"], q["state"]
    ))
}

async fn token(State(p): State<Arc<Provider>>, body: String) -> axum::response::Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let Some(login) = p.logins.lock().remove(&form["code"]) else {
        return (
            http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(form["code_verifier"].as_bytes()));
    if form["grant_type"] != "authorization_code"
        || challenge != login.challenge
        || form["redirect_uri"] != login.redirect_uri
        || form["client_id"] != login.client_id
    {
        return (
            http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let key = p.keys.lock()[0].clone();
    let id_token = p.sign(
        &key,
        json!({"iss": p.issuer, "aud": login.client_id, "sub": "u-1", "exp": now() + 300,
               "preferred_username": "carol", "nonce": login.nonce}),
    );
    let access_token = p.sign(
        &key,
        json!({"iss": p.issuer, "aud": "account", "sub": "u-1", "exp": now() + 300,
               "realm_access": {"roles": p.roles.lock().clone()}}),
    );
    axum::Json(json!({"id_token": id_token, "access_token": access_token, "token_type": "Bearer"}))
        .into_response()
}

async fn start_provider(ip: [u8; 4], keys: Vec<Key>) -> (Arc<Provider>, SocketAddr) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (p, app) = provider(format!("http://{addr}/realms/test"), keys);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (p, addr)
}

/// The provider over HTTPS, its certificate signed by a fresh private CA; returns the CA's
/// PEM too.
async fn start_provider_tls(ip: [u8; 4], keys: Vec<Key>) -> (Arc<Provider>, String) {
    let tcp = tokio::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .await
        .unwrap();
    let addr = tcp.local_addr().unwrap();
    let (acceptor, ca_pem) = private_ca_tls(addr.ip());
    let (p, app) = provider(format!("https://{addr}/realms/test"), keys);
    let listener = TlsListener { tcp, acceptor };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (p, ca_pem)
}

/// A TLS acceptor whose certificate (for `ip`) is signed by a fresh CA, and that CA's PEM.
fn private_ca_tls(ip: std::net::IpAddr) -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "test SSO CA");
    ca.distinguished_name = dn;
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::IpAddress(ip)];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca_pem)
}

/// Accepts TCP connections and completes their TLS handshake (failed ones are dropped).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The provider's state and routes, for an issuer URL.
fn provider(issuer: String, keys: Vec<Key>) -> (Arc<Provider>, Router) {
    let p = Arc::new(Provider {
        issuer,
        keys: Mutex::new(keys),
        fetches: AtomicUsize::new(0),
        fail_jwks: AtomicBool::new(false),
        logins: Mutex::new(HashMap::new()),
        roles: Mutex::new(vec!["ccm-manager".into()]),
    });
    let app = Router::new()
        .route(
            "/realms/test/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/realms/test/jwks", get(jwks))
        .route("/realms/test/authorize", get(authorize))
        .route("/realms/test/token", post(token))
        .with_state(p.clone());
    (p, app)
}

fn claims(p: &Provider, extra: Value) -> Value {
    let mut c = json!({"iss": p.issuer, "aud": "ccm", "sub": "u-42", "exp": now() + 300,
                       "preferred_username": "alice", "realm_access": {"roles": ["ccm-manager"]}});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

async fn oidc_api(n: u16, p: &Provider, tweak: impl FnOnce(&mut OidcConfig)) -> TestApi {
    let mut cfg = OidcConfig::new(p.issuer.clone(), "ccm");
    cfg.jwks_min_refresh_interval = Duration::ZERO;
    tweak(&mut cfg);
    TestApi::start_with(n, 1, |_, _, auth| auth.oidc = Some(cfg)).await
}

#[tokio::test]
async fn oidc_tokens_should_be_checked_for_signature_issuer_audience_expiry_and_role() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 66, 1], vec![k1.clone()]).await;
    let api = oidc_api(66, &p, |_| {}).await;

    let good = p.sign(&k1, claims(&p, json!({})));
    let me = api.get("/api/v1/session", &good).await.ok(200);
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("manager"))
    );
    assert_eq!(me["method"], "oidc");
    assert_eq!(me["cookie"], false);

    let stranger = new_key("k1"); // same key id, another key: the signature cannot verify
    let unknown_kid = new_key("k9");
    let cases = [
        (
            "wrong audience",
            p.sign(&k1, claims(&p, json!({"aud": "other"}))),
        ),
        (
            "wrong issuer",
            p.sign(
                &k1,
                claims(&p, json!({"iss": "http://evil.example/realms/test"})),
            ),
        ),
        (
            "expired",
            p.sign(&k1, claims(&p, json!({"exp": now() - 3600}))),
        ),
        ("no expiry", p.sign(&k1, claims(&p, json!({"exp": null})))),
        ("bad signature", p.sign(&stranger, claims(&p, json!({})))),
        (
            "unknown key id",
            p.sign(&unknown_kid, claims(&p, json!({}))),
        ),
        (
            "HS256",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(&p, json!({})),
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap(),
        ),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (what, token) in cases {
        let p = api.get("/api/v1/session", &token).await.problem(401);
        assert!(!p["detail"].as_str().unwrap().contains(&token), "{what}");
    }
    // Valid, but no ccm role in the claim.
    let no_role = p.sign(
        &k1,
        claims(&p, json!({"realm_access": {"roles": ["offline_access"]}})),
    );
    api.get("/api/v1/session", &no_role).await.problem(403);
    // Roles map to the highest match; a viewer cannot operate.
    let viewer = p.sign(
        &k1,
        claims(&p, json!({"realm_access": {"roles": ["ccm-viewer"]}})),
    );
    assert_eq!(
        api.get("/api/v1/session", &viewer).await.ok(200)["role"],
        "viewer"
    );
    let id = api.workers().await[0].id;
    api.post(&format!("/api/v1/workers/{id}/refresh"), &viewer, None)
        .await
        .problem(403);
    let admin = p.sign(
        &k1,
        claims(
            &p,
            json!({"realm_access": {"roles": ["ccm-viewer", "ccm-admin"]}}),
        ),
    );
    assert_eq!(
        api.get("/api/v1/session", &admin).await.ok(200)["role"],
        "admin"
    );
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn roles_should_come_from_the_configured_claim_and_mapping() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 67, 1], vec![k1.clone()]).await;
    let api = oidc_api(67, &p, |c| {
        c.roles_claim = "resource_access.ccm.roles".into();
        c.role_mapping.admin = vec!["operator".into()];
        c.username_claim = "email".into();
    })
    .await;
    let t = p.sign(
        &k1,
        claims(
            &p,
            json!({"email": "ops@example.com", "resource_access": {"ccm": {"roles": ["operator"]}}}),
        ),
    );
    let me = api.get("/api/v1/session", &t).await.ok(200);
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("ops@example.com"), Some("admin"))
    );
    // The realm roles are not the configured claim any more.
    let realm_only = p.sign(&k1, claims(&p, json!({})));
    api.get("/api/v1/session", &realm_only).await.problem(403);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn an_unknown_key_id_should_refetch_the_jwks_so_keys_can_rotate() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 68, 1], vec![k1.clone()]).await;
    let api = oidc_api(68, &p, |_| {}).await;
    let t1 = p.sign(&k1, claims(&p, json!({})));
    api.get("/api/v1/session", &t1).await.ok(200);
    api.get("/api/v1/session", &t1).await.ok(200);
    assert_eq!(
        p.fetches.load(Ordering::SeqCst),
        1,
        "cached after the first fetch"
    );

    // The provider rotates to k2 and drops k1.
    let k2 = new_key("k2");
    *p.keys.lock() = vec![k2.clone()];
    let t2 = p.sign(&k2, claims(&p, json!({})));
    api.get("/api/v1/session", &t2).await.ok(200);
    assert_eq!(
        p.fetches.load(Ordering::SeqCst),
        2,
        "the unknown kid caused one fetch"
    );
    api.get("/api/v1/session", &t2).await.ok(200);
    assert_eq!(p.fetches.load(Ordering::SeqCst), 2);
    // k1 is gone from the provider: its tokens no longer pass.
    api.get("/api/v1/session", &t1).await.problem(401);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn forged_key_ids_should_not_make_ccm_hammer_the_provider() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 69, 1], vec![k1.clone()]).await;
    let api = oidc_api(69, &p, |c| {
        c.jwks_min_refresh_interval = Duration::from_secs(3600)
    })
    .await;
    api.get("/api/v1/session", &p.sign(&k1, claims(&p, json!({}))))
        .await
        .ok(200);
    let forged = new_key("forged");
    for _ in 0..20 {
        api.get("/api/v1/session", &p.sign(&forged, claims(&p, json!({}))))
            .await
            .problem(401);
    }
    assert_eq!(p.fetches.load(Ordering::SeqCst), 1);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn browser_sign_in_through_the_provider_should_start_a_session() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 70, 1], vec![k1.clone()]).await;
    let api = oidc_api(70, &p, |_| {}).await;
    let addr = api.serve().await;
    let base = format!("http://{addr}");
    let client = http();

    let methods: Value = client
        .get(format!("{base}/api/v1/session/methods"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(methods["oidc"], "/api/v1/session/oidc");

    let begin = client
        .get(format!(
            "{base}/api/v1/session/oidc?return_to=/workers%3Fstate%3Drunning"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(begin.status(), 303);
    let to_provider = begin.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to_provider.starts_with(&format!("{}/authorize?", p.issuer)),
        "{to_provider}"
    );
    // The sign-in is bound to this browser by a short-lived HttpOnly cookie.
    let bind_cookie = begin.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in [
        "ccm_oidc=",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(bind_cookie.contains(attr), "{attr} missing: {bind_cookie}");
    }
    let binding = bind_cookie.split(';').next().unwrap().to_owned();
    assert!(to_provider.contains("code_challenge="));
    let back = client.get(&to_provider).send().await.unwrap();
    assert!(back.status().is_redirection());
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("{base}/api/v1/session/oidc/callback?")),
        "{callback}"
    );

    let done = client
        .get(&callback)
        .header("cookie", &binding)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303, "{:?}", done.text().await);
    assert_eq!(done.headers()["location"], "/workers?state=running");
    let cookie = done.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        done.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("ccm_oidc=;")),
        "the binding cookie is cleared"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let me: Value = client
        .get(format!("{base}/api/v1/session"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "carol");
    assert_eq!(me["role"], "manager", "roles from the access token: {me}");
    assert_eq!(me["cookie"], true);
    assert!(me["csrf_token"].as_str().is_some());
    // The session lasts no longer than the provider's tokens (they expire in 300 s).
    let expires: chrono::DateTime<chrono::Utc> =
        me["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::seconds(301) && left > chrono::Duration::seconds(200),
        "session ends with the token: {left}"
    );

    // The same callback again: the state was used up.
    let replay = client
        .get(&callback)
        .header("cookie", &binding)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
    // A forged state.
    let forged = client
        .get(format!(
            "{base}/api/v1/session/oidc/callback?code=x&state=forged"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // The provider said no.
    let denied = client
        .get(format!(
            "{base}/api/v1/session/oidc/callback?error=access_denied"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    // An account without a ccm role gets no session.
    *p.roles.lock() = vec!["offline_access".into()];
    let begin = client
        .get(format!("{base}/api/v1/session/oidc"))
        .send()
        .await
        .unwrap();
    let to_provider = begin.headers()["location"].to_str().unwrap().to_owned();
    let binding = begin.headers()["set-cookie"].to_str().unwrap();
    let binding = binding.split(';').next().unwrap().to_owned();
    let back = client.get(&to_provider).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let done = client
        .get(&callback)
        .header("cookie", &binding)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 403);
    assert!(done.headers().get("set-cookie").is_none());
    api.fleet.shutdown().await;
}

/// Starts a sign-in and follows it to the provider: the callback URL and the binding cookie.
async fn to_callback(client: &reqwest::Client, base: &str) -> (String, String) {
    let begin = client
        .get(format!("{base}/api/v1/session/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(begin.status(), 303);
    let binding = begin.headers()["set-cookie"].to_str().unwrap();
    let binding = binding.split(';').next().unwrap().to_owned();
    let to_provider = begin.headers()["location"].to_str().unwrap().to_owned();
    let back = client.get(&to_provider).send().await.unwrap();
    (
        back.headers()["location"].to_str().unwrap().to_owned(),
        binding,
    )
}

#[tokio::test]
async fn a_sign_in_callback_in_another_browser_should_be_refused_as_login_csrf() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 74, 1], vec![k1.clone()]).await;
    let api = oidc_api(74, &p, |_| {}).await;
    let addr = api.serve().await;
    let base = format!("http://{addr}");
    let client = http();
    // The attacker signs in up to the callback, then gets the victim's browser to open it:
    // the victim has no binding cookie, or the one of a sign-in of their own.
    let (attackers_callback, _) = to_callback(&client, &base).await;
    let (_, victims_binding) = to_callback(&client, &base).await;
    for cookie in [
        None,
        Some(victims_binding.as_str()),
        Some("ccm_oidc=forged"),
    ] {
        let (callback, _) = if cookie.is_none() {
            (attackers_callback.clone(), String::new())
        } else {
            to_callback(&client, &base).await
        };
        let mut req = client.get(&callback);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{cookie:?}");
        assert!(
            res.headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| !c.to_str().unwrap().starts_with("ccm_session=")),
            "no session for {cookie:?}"
        );
        let body: Value = res.json().await.unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("this browser"),
            "{body}"
        );
    }
    assert_eq!(api.state.sessions(), 0);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn starting_oidc_sign_ins_should_be_limited_per_client() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 75, 1], vec![k1.clone()]).await;
    let mut cfg = OidcConfig::new(p.issuer.clone(), "ccm");
    cfg.jwks_min_refresh_interval = Duration::ZERO;
    let api = TestApi::start_with(75, 1, |_, _, auth| {
        auth.oidc = Some(cfg);
        auth.sign_in_start_limit = ccm_api::SignInLimit {
            burst: 3,
            per_minute: 1,
        };
    })
    .await;
    let addr = api.serve().await;
    let client = http();
    let begin = || {
        client
            .get(format!("http://{addr}/api/v1/session/oidc"))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(begin().await.unwrap().status(), 303);
    }
    let limited = begin().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_token_not_valid_yet_should_be_refused() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 76, 1], vec![k1.clone()]).await;
    let api = oidc_api(76, &p, |_| {}).await;
    let later = p.sign(&k1, claims(&p, json!({"nbf": now() + 3600})));
    let problem = api.get("/api/v1/session", &later).await.problem(401);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not valid yet"),
        "{problem}"
    );
    // Within the leeway (30 s) it passes.
    let soon = p.sign(&k1, claims(&p, json!({"nbf": now() + 5})));
    api.get("/api/v1/session", &soon).await.ok(200);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn jwks_fetches_should_back_off_while_the_provider_is_down() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 77, 1], vec![k1.clone()]).await;
    let api = oidc_api(77, &p, |c| {
        c.jwks_min_refresh_interval = Duration::from_secs(60)
    })
    .await;
    p.fail_jwks.store(true, Ordering::SeqCst);
    let token = p.sign(&k1, claims(&p, json!({})));
    for _ in 0..20 {
        api.get("/api/v1/session", &token).await.problem(503);
    }
    assert_eq!(
        p.fetches.load(Ordering::SeqCst),
        1,
        "one failed fetch, then a back-off instead of one fetch per request"
    );
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_stream_opened_with_an_oidc_token_should_end_when_the_token_expires() {
    let k1 = new_key("k1");
    let (p, _) = start_provider([127, 71, 78, 1], vec![k1.clone()]).await;
    let api = oidc_api(78, &p, |_| {}).await;
    let addr = api.serve().await;
    // Expires in 2 s (the leeway would accept it for 30 s more: the stream still ends at exp).
    let token = p.sign(&k1, claims(&p, json!({"exp": now() + 2})));
    let mut res = http()
        .get(format!("http://{addr}/api/v1/events?snapshot=false"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = res.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the stream ended");
    assert!(text.contains("event: ccm.session.ended"), "{text}");
    assert!(text.contains("\"reason\":\"expired\""), "{text}");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn without_oidc_the_browser_sign_in_through_a_provider_should_be_404() {
    let api = TestApi::start(71, 1).await;
    let p = api
        .call(http::Method::GET, "/api/v1/session/oidc", None, None)
        .await
        .problem(404);
    assert!(p["detail"].as_str().unwrap().contains("not configured"));
    let m = api
        .call(http::Method::GET, "/api/v1/session/methods", None, None)
        .await
        .ok(200);
    assert!(m["oidc"].is_null());
    assert_eq!(m["token"], true);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_provider_behind_a_private_ca_should_be_trusted_through_its_ca_file() {
    let k1 = new_key("k1");
    let (p, ca_pem) = start_provider_tls([127, 71, 72, 1], vec![k1.clone()]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("sso-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let token = p.sign(&k1, claims(&p, json!({})));

    // The system roots do not know the CA: the keys cannot be fetched, no sign-in.
    let untrusted = oidc_api(72, &p, |_| {}).await;
    let res = untrusted.get("/api/v1/session", &token).await;
    assert_ne!(res.status.as_u16(), 200, "{:?}", res.body);
    assert_eq!(
        p.fetches.load(Ordering::SeqCst),
        0,
        "no JWKS over an untrusted TLS link"
    );

    // With `ca_file`, the same token is accepted.
    let trusted = oidc_api(73, &p, |c| c.ca_file = Some(ca_file.clone())).await;
    let me = trusted.get("/api/v1/session", &token).await.ok(200);
    assert_eq!(me["method"], "oidc");
    assert_eq!(p.fetches.load(Ordering::SeqCst), 1);
}
