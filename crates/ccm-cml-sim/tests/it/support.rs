//! Shared fixtures: a fleet on free ports, an HTTP client, a tiny CML client, and the OpenAPI
//! schema validator.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ccm_cml_sim::{CmlSimConfig, SimFleet};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;

pub(crate) const ADMIN: (&str, &str) = ("admin", "admin");
pub(crate) const STUDENT: (&str, &str) = ("student", "student");

/// A fleet of `n` workers on free ports (port 0), base address 127.3.0.1.
pub(crate) async fn fleet(n: usize, tweak: impl FnOnce(&mut CmlSimConfig)) -> SimFleet {
    let mut cfg = CmlSimConfig {
        workers: n,
        port: 0,
        listen_base: Ipv4Addr::new(127, 3, 0, 1),
        ..CmlSimConfig::default()
    };
    tweak(&mut cfg);
    SimFleet::start(cfg).await.expect("fleet starts")
}

/// An HTTP client whose pool holds no timers (paused-time tests must not jump over them).
pub(crate) fn http() -> Client {
    Client::builder()
        .no_proxy()
        .pool_idle_timeout(None)
        .build()
        .expect("client builds")
}

/// A minimal CML client for the tests.
#[derive(Clone)]
pub(crate) struct Cml {
    pub(crate) base: String,
    pub(crate) http: Client,
    pub(crate) token: Option<String>,
}

impl Cml {
    pub(crate) fn new(base: impl Into<String>) -> Self {
        Cml {
            base: base.into(),
            http: http(),
            token: None,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v0{path}", self.base)
    }

    pub(crate) async fn login(&mut self, (user, password): (&str, &str)) -> String {
        let resp = self
            .http
            .post(self.url("/authenticate"))
            .json(&serde_json::json!({"username": user, "password": password}))
            .send()
            .await
            .expect("login request");
        assert_eq!(resp.status(), StatusCode::OK, "login as {user}");
        let token: String = resp.json().await.expect("token is a JSON string");
        self.token = Some(token.clone());
        token
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub(crate) async fn put(&self, path: &str) -> Response {
        self.request(Method::PUT, path).send().await.expect("PUT")
    }

    pub(crate) async fn delete(&self, path: &str) -> Response {
        self.request(Method::DELETE, path)
            .send()
            .await
            .expect("DELETE")
    }

    pub(crate) async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.expect("JSON body")
    }

    pub(crate) async fn import(&self, body: &str) -> String {
        let resp = self
            .request(Method::POST, "/import")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("import");
        assert_eq!(resp.status(), StatusCode::OK, "import");
        let v: Value = resp.json().await.expect("import JSON");
        v["id"].as_str().expect("lab id").to_owned()
    }
}

/// Asserts a CML error answer: the status, and a `{code, description}` body with that code.
pub(crate) async fn expect_error(resp: Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status, "status");
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["code"], status.as_u16(), "code field: {body}");
    assert!(body["description"].is_string(), "description: {body}");
    body
}

/// The telemetry categories in order.
pub(crate) async fn categories(cml: &Cml) -> Vec<String> {
    cml.get_json("/telemetry/events")
        .await
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["category"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Validates bodies against the response schemas of the official OpenAPI document.
pub(crate) struct Schemas {
    doc: Value,
    cache: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    /// Loads `CCM_CML_OPENAPI`, else the copy in `tests/data`, else `shared/cml`.
    pub(crate) fn load() -> Schemas {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let candidates = [
            std::env::var_os("CCM_CML_OPENAPI").map(PathBuf::from),
            Some(manifest.join("tests/data/openapi-2.9.json")),
            Some(manifest.join("../../../shared/cml/openapi-2.9.json")),
        ];
        let path = candidates
            .into_iter()
            .flatten()
            .find(|p| p.exists())
            .expect("openapi-2.9.json is available");
        let text = std::fs::read_to_string(&path).expect("read openapi");
        Schemas {
            doc: serde_json::from_str(&text).expect("openapi is JSON"),
            cache: HashMap::new(),
        }
    }

    /// The response schema for `method path` (a spec template) and `status`, falling back to
    /// `default`; None when the answer has no JSON body in the spec.
    fn schema(&self, path: &str, method: &str, status: u16) -> Option<Value> {
        let responses = &self.doc["paths"][path][method]["responses"];
        assert!(responses.is_object(), "{method} {path} is not in the spec");
        let resp = match &responses[status.to_string()] {
            Value::Null => &responses["default"],
            r => r,
        };
        let mut schema = &resp["content"]["application/json"]["schema"];
        if schema.is_null() && status >= 400 {
            // An error status documented without a body (e.g. deregistration's 400): the
            // operation's `default` Error schema is what any error body must follow.
            schema = &responses["default"]["content"]["application/json"]["schema"];
        }
        (!schema.is_null()).then(|| schema.clone())
    }

    /// Asserts that `body` is valid for the given operation and status.
    pub(crate) fn check(&mut self, path: &str, method: &str, status: u16, body: &Value) {
        let key = format!("{method} {path} {status}");
        if !self.cache.contains_key(&key) {
            let Some(schema) = self.schema(path, method, status) else {
                panic!("{key}: the spec documents no JSON body, got {body}");
            };
            let mut root = self.doc.clone();
            root["$defs"] = serde_json::json!({ "target": schema });
            root["$ref"] = Value::String("#/$defs/target".into());
            let v = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&root)
                .unwrap_or_else(|e| panic!("{key}: schema does not compile: {e}"));
            self.cache.insert(key.clone(), v);
        }
        let v = &self.cache[&key];
        let errors: Vec<String> = v
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{key}: {body}\n{}", errors.join("\n"));
    }
}
