use std::collections::BTreeSet;

use axum::body::Body;
use ccm_api::Role;
use ccm_api::routes::{Access, ROUTES};
use http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{ADMIN, LAB_OPERATOR, MANAGER, TestApi, VIEWER};

/// The expected matrix, written out independently of the code's table: every route, the
/// least role that may call it (`None`: public), and a request body that reaches the
/// handler.
fn expected() -> Vec<(Method, &'static str, Option<Role>, Option<Value>)> {
    use Method as M;
    let (v, m, a) = (Some(Role::Viewer), Some(Role::Manager), Some(Role::Admin));
    let l = Some(Role::LabOperator);
    vec![
        (M::GET, "/healthz", None, None),
        (M::GET, "/readyz", None, None),
        (M::GET, "/metrics", v, None),
        (M::GET, "/api/openapi.json", v, None),
        (M::GET, "/api/docs", v, None),
        (M::GET, "/api/docs/", v, None),
        (M::GET, "/api/docs/{file}", v, None),
        (M::GET, "/api/v1/session/methods", None, None),
        (
            M::POST,
            "/api/v1/session",
            None,
            Some(json!({"token": VIEWER})),
        ),
        (M::GET, "/api/v1/session", v, None),
        (M::DELETE, "/api/v1/session", None, None),
        (M::GET, "/api/v1/session/oidc", None, None),
        (M::GET, "/api/v1/session/oidc/callback", None, None),
        (M::GET, "/api/v1/events", v, None),
        (M::GET, "/api/v1/workers", v, None),
        (M::POST, "/api/v1/workers", m, Some(json!({}))),
        (M::POST, "/api/v1/workers/import", m, Some(json!({}))),
        (
            M::POST,
            "/api/v1/workers/import/preview",
            m,
            Some(json!({})),
        ),
        (M::GET, "/api/v1/images", m, None),
        (M::GET, "/api/v1/workers/{id}", v, None),
        (M::DELETE, "/api/v1/workers/{id}", a, None),
        (M::POST, "/api/v1/workers/{id}/start", m, None),
        (M::POST, "/api/v1/workers/{id}/stop", m, None),
        (M::POST, "/api/v1/workers/{id}/pause", m, None),
        (M::POST, "/api/v1/workers/{id}/resume", m, None),
        (M::POST, "/api/v1/workers/{id}/terminate", a, None),
        (M::POST, "/api/v1/workers/{id}/refresh", l, None),
        (
            M::PATCH,
            "/api/v1/workers/{id}/tags",
            m,
            Some(json!({"set": {"a": "b"}})),
        ),
        (M::POST, "/api/v1/workers/{id}/detailed-monitoring", m, None),
        (
            M::PUT,
            "/api/v1/workers/{id}/idle-detection",
            m,
            Some(json!({"enabled": true})),
        ),
        (
            M::PUT,
            "/api/v1/workers/{id}/snooze",
            m,
            Some(json!({"for": "1h"})),
        ),
        (M::DELETE, "/api/v1/workers/{id}/snooze", m, None),
        (M::GET, "/api/v1/workers/{id}/metrics", v, None),
        (M::GET, "/api/v1/workers/{id}/events", v, None),
        (M::GET, "/api/v1/workers/{id}/labs", v, None),
        (
            M::POST,
            "/api/v1/workers/{id}/labs",
            l,
            Some(json!({"topology": "x"})),
        ),
        (M::DELETE, "/api/v1/workers/{id}/labs/{lab_id}", m, None),
        (M::POST, "/api/v1/workers/{id}/labs/{lab_id}/start", l, None),
        (M::POST, "/api/v1/workers/{id}/labs/{lab_id}/stop", l, None),
        (M::POST, "/api/v1/workers/{id}/labs/{lab_id}/wipe", l, None),
        (
            M::GET,
            "/api/v1/workers/{id}/labs/{lab_id}/topology",
            v,
            None,
        ),
        (
            M::POST,
            "/api/v1/workers/{id}/licence",
            m,
            Some(json!({"token": "abc"})),
        ),
        (M::DELETE, "/api/v1/workers/{id}/licence", m, None),
        (M::GET, "/api/v1/system/health", v, None),
        (M::GET, "/api/v1/system/counts", v, None),
        (M::GET, "/api/v1/system/replicas", v, None),
        (M::GET, "/api/v1/system/resilience", v, None),
        (M::GET, "/api/v1/system/jobs", v, None),
        (M::POST, "/api/v1/system/jobs/{job}/run", a, None),
        (M::GET, "/api/v1/system/savings", v, None),
        (M::GET, "/api/v1/system/webhooks", v, None),
        (M::GET, "/api/v1/system/provisioning", v, None),
        (M::GET, "/api/v1/settings", v, None),
        (M::PATCH, "/api/v1/settings", a, Some(json!({"nope": 1}))),
        // The web UI: page shell and assets are public (they hold no data).
        (M::GET, "/", None, None),
        (M::GET, "/login", None, None),
        (M::GET, "/ui/{file}", None, None),
    ]
}

fn concrete(template: &str, worker: &str) -> String {
    template
        .replace("{id}", worker)
        .replace("{lab_id}", "lab-1")
        .replace("{job}", "no_such_job")
        .replace("{file}", "index.html")
}

/// Sends a request; reads the body only when it is not a (possibly endless) success.
async fn status_of(
    api: &TestApi,
    method: &Method,
    path: &str,
    token: Option<&str>,
    body: &Option<Value>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut b = Request::builder().method(method.clone()).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(v).unwrap()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let res = api.router.clone().oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = if status.is_success() {
        String::new()
    } else {
        let b = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8_lossy(&b).into_owned()
    };
    (status, headers, text)
}

#[tokio::test]
async fn every_route_should_enforce_its_role_for_every_caller() {
    let api = TestApi::start(61, 1).await;
    let table = expected();

    // The code's table and this one list the same routes with the same roles.
    let ours: BTreeSet<(String, &str, Option<Role>)> = table
        .iter()
        .map(|(m, p, r, _)| (m.to_string(), *p, *r))
        .collect();
    let code: BTreeSet<(String, &str, Option<Role>)> = ROUTES
        .iter()
        .map(|r| {
            let role = match r.access {
                Access::Public => None,
                Access::Role(role) => Some(role),
            };
            (r.method.to_string(), r.path, role)
        })
        .collect();
    assert_eq!(
        ours, code,
        "the role table changed: update this test deliberately"
    );

    let worker = uuid::Uuid::now_v7().to_string();
    let callers = [
        ("admin", Some(ADMIN), Some(Role::Admin)),
        ("manager", Some(MANAGER), Some(Role::Manager)),
        ("lab operator", Some(LAB_OPERATOR), Some(Role::LabOperator)),
        ("viewer", Some(VIEWER), Some(Role::Viewer)),
        ("no token", None, None),
        ("a wrong token", Some("not-a-valid-token"), None),
    ];
    let mut checked = 0;
    for (method, template, least, body) in &table {
        let path = concrete(template, &worker);
        for (who, token, role) in &callers {
            let (status, headers, text) = status_of(&api, method, &path, *token, body).await;
            let what = format!("{method} {path} as {who}: {status} {text}");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
            assert!(!text.contains("no route for"), "not routed: {what}");
            assert!(!status.is_server_error() || status == 503, "{what}");
            match (least, role) {
                (None, _) if *who != "a wrong token" => {
                    assert!(status != 401 && status != 403, "public: {what}")
                }
                (None, _) => {}
                (Some(_), None) => {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                    assert!(
                        headers[header::WWW_AUTHENTICATE]
                            .to_str()
                            .unwrap()
                            .starts_with("Bearer"),
                        "{what}"
                    );
                }
                (Some(least), Some(role)) if role >= least => {
                    assert!(status != 401 && status != 403, "allowed: {what}")
                }
                (Some(_), Some(_)) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                    assert!(text.contains("role"), "{what}");
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * callers.len());
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn the_openapi_document_should_list_exactly_the_routes_with_their_roles() {
    let doc = ccm_api::openapi();
    let json: Value = serde_json::from_str(&doc.to_json().unwrap()).unwrap();
    assert_eq!(json["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in json["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let role = op["x-ccm-role"].as_str().unwrap_or("missing").to_owned();
            documented.insert((method.to_uppercase(), path.clone(), role));
        }
    }
    let routed: BTreeSet<(String, String, String)> = ROUTES
        .iter()
        .map(|r| {
            let role = match r.access {
                Access::Public => "public".to_owned(),
                Access::Role(role) => role.to_string(),
            };
            (r.method.to_string(), r.path.to_owned(), role)
        })
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes not in the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented operations without a route rule: {extra:?}"
    );
    // Public operations declare no security; the rest inherit bearer or session.
    assert_eq!(json["paths"]["/healthz"]["get"]["security"], json!([{}]));
    assert!(
        json["paths"]["/api/v1/workers"]["get"]
            .get("security")
            .is_none()
    );
    assert!(json["components"]["securitySchemes"]["bearer"].is_object());
    assert!(json["components"]["schemas"]["WorkerView"].is_object());
    assert!(json["components"]["schemas"]["Problem"].is_object());
    // Published schema names stay when Rust types are renamed (`dto::SkippedInstanceView`).
    assert_eq!(
        json["components"]["schemas"]["ImportView"]["properties"]["skipped"]["items"]["$ref"],
        "#/components/schemas/SkippedInstance"
    );
    assert!(json["components"]["schemas"]["SkippedInstance"].is_object());
}

#[tokio::test]
async fn the_docs_page_should_be_served_from_the_binary() {
    let api = TestApi::start(62, 1).await;
    let doc = api.get("/api/openapi.json", VIEWER).await.ok(200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/workers/{id}"]["get"].is_object());
    let r = api.get("/api/docs", VIEWER).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers[header::LOCATION], "/api/docs/");
    let page = api.get("/api/docs/", VIEWER).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().contains("swagger-ui"), "{}", page.text());
    assert!(
        !page.text().contains("https://"),
        "loads nothing from the internet"
    );
    let init = api.get("/api/docs/swagger-initializer.js", VIEWER).await;
    assert_eq!(init.status, 200);
    assert!(init.text().contains("/api/openapi.json"), "{}", init.text());
    let bundle = api.get("/api/docs/swagger-ui-bundle.js", VIEWER).await;
    assert_eq!(bundle.status, 200);
    assert!(bundle.body.len() > 100_000);
    api.get("/api/docs/nope.js", VIEWER).await.problem(404);
    api.get("/api/docs/..%2F..%2Fetc", VIEWER)
        .await
        .problem(404);
    api.fleet.shutdown().await;
}

#[test]
fn the_api_docs_should_list_every_event_type_and_the_reserved_ones() {
    let json: Value = serde_json::from_str(&ccm_api::openapi().to_json().unwrap()).unwrap();
    let text = json["paths"]["/api/v1/events"]["get"]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    for t in ccm_domain::EventKind::SHAPES {
        assert!(
            text.contains(&format!("`{}`", t.type_name)),
            "{} missing",
            t.type_name
        );
    }
    let reserved = text.split("Reserved").nth(1).expect("a reserved section");
    for t in ccm_domain::EventKind::SHAPES {
        assert_eq!(
            reserved.contains(&format!("`{}`", t.type_name)),
            t.reserved,
            "{}",
            t.type_name
        );
    }
    if ccm_domain::EventKind::SHAPES.iter().all(|t| !t.reserved) {
        assert!(reserved.contains("none"), "{reserved}");
    }
}
