//! Every response the simulator gives for the endpoints ccm uses, success and error, is valid
//! against the official CML 2.9 OpenAPI document (`tests/data/openapi-2.9.json`).

use std::time::Duration;

use ccm_cml_sim::SAMPLE_LAB_YAML;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::support::{ADMIN, Cml, STUDENT, Schemas, fleet};

struct Checker {
    schemas: Schemas,
    checked: usize,
}

impl Checker {
    /// Validates the answer to `method template` (the spec's path) and returns its body.
    async fn check(&mut self, template: &str, resp: Response, method: Method) -> Value {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            assert!(
                matches!(status, 202 | 204),
                "{method} {template}: empty body with status {status}"
            );
            return Value::Null;
        }
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: not JSON ({e}): {text}"));
        self.schemas
            .check(template, &method.as_str().to_lowercase(), status, &body);
        self.checked += 1;
        body
    }
}

async fn check_lab(ck: &mut Checker, admin: &Cml, lab: &str) {
    for (t, suffix) in [
        ("/labs/{lab_id}", ""),
        ("/labs/{lab_id}/nodes", "/nodes"),
        ("/labs/{lab_id}/nodes", "/nodes?data=true"),
        ("/labs/{lab_id}/state", "/state"),
        ("/labs/{lab_id}/check_if_converged", "/check_if_converged"),
        ("/labs/{lab_id}/lab_element_state", "/lab_element_state"),
        ("/labs/{lab_id}/events", "/events"),
        ("/labs/{lab_id}/download", "/download"),
    ] {
        let r = admin.get(&format!("{lab}{suffix}")).await;
        if suffix == "/download" {
            // Raw YAML, as real controllers send it; the spec calls it a string.
            let text = r.text().await.unwrap();
            ck.schemas.check(t, "get", 200, &Value::String(text));
            continue;
        }
        ck.check(t, r, Method::GET).await;
    }
}

#[tokio::test(start_paused = true)]
async fn every_response_should_match_the_openapi_schema() {
    let f = fleet(1, |c| {
        c.licence_delay = Duration::from_secs(1);
        c.faults = "*/system_stats:older".parse().unwrap();
    })
    .await;
    f.worker(0).unwrap().clear_faults();
    let mut ck = Checker {
        schemas: Schemas::load(),
        checked: 0,
    };
    let base = f.endpoints()[0].clone();
    let anon = Cml::new(&base);

    // --- no auth ---
    let r = anon.get("/system_information").await;
    ck.check("/system_information", r, Method::GET).await;
    let r = anon.get("/system/maintenance_mode").await;
    ck.check("/system/maintenance_mode", r, Method::GET).await;
    let login = |u: &str, p: &str| json!({"username": u, "password": p});
    let r = anon
        .http
        .post(anon.url("/authenticate"))
        .json(&login("admin", "admin"))
        .send()
        .await
        .unwrap();
    ck.check("/authenticate", r, Method::POST).await;
    let r = anon
        .http
        .post(anon.url("/authenticate"))
        .json(&login("admin", "bad"))
        .send()
        .await
        .unwrap();
    ck.check("/authenticate", r, Method::POST).await;
    let r = anon
        .http
        .post(anon.url("/authenticate"))
        .json(&json!({"username": "admin"}))
        .send()
        .await
        .unwrap();
    ck.check("/authenticate", r, Method::POST).await;
    let r = anon
        .http
        .post(anon.url("/auth_extended"))
        .json(&login("admin", "admin"))
        .send()
        .await
        .unwrap();
    ck.check("/auth_extended", r, Method::POST).await;
    let r = anon
        .http
        .post(anon.url("/auth_extended"))
        .json(&login("x", "y"))
        .send()
        .await
        .unwrap();
    ck.check("/auth_extended", r, Method::POST).await;
    let r = anon.get("/authok").await;
    ck.check("/authok", r, Method::GET).await;

    let mut admin = anon.clone();
    admin.login(ADMIN).await;
    let mut student = anon.clone();
    student.login(STUDENT).await;

    // --- auth and system ---
    for (t, p) in [
        ("/authok", "/authok"),
        ("/web_session_timeout", "/web_session_timeout"),
        ("/system_health", "/system_health"),
        ("/system_stats", "/system_stats"),
        ("/system/compute_hosts", "/system/compute_hosts"),
        ("/licensing", "/licensing"),
        ("/telemetry", "/telemetry"),
        ("/users", "/users"),
        ("/labs", "/labs?show_all=true"),
    ] {
        let r = admin.get(p).await;
        ck.check(t, r, Method::GET).await;
    }
    let r = student.get("/system_health").await;
    ck.check("/system_health", r, Method::GET).await;
    let r = student.get("/licensing").await;
    ck.check("/licensing", r, Method::GET).await;
    let r = student.get("/telemetry").await;
    ck.check("/telemetry", r, Method::GET).await;

    // --- labs through their whole life ---
    let r = admin
        .request(Method::POST, "/import")
        .body(SAMPLE_LAB_YAML)
        .send()
        .await
        .unwrap();
    let id = ck.check("/import", r, Method::POST).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = admin
        .request(Method::POST, "/import")
        .body("lab: {}")
        .send()
        .await
        .unwrap();
    ck.check("/import", r, Method::POST).await;
    let lab = format!("/labs/{id}");
    check_lab(&mut ck, &admin, &lab).await;
    let r = admin.put(&format!("{lab}/start")).await;
    ck.check("/labs/{lab_id}/start", r, Method::PUT).await;
    check_lab(&mut ck, &admin, &lab).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    check_lab(&mut ck, &admin, &lab).await;
    let r = admin.get("/system_stats").await;
    ck.check("/system_stats", r, Method::GET).await;
    let r = admin.get("/system/compute_hosts").await;
    ck.check("/system/compute_hosts", r, Method::GET).await;
    let r = admin.put(&format!("{lab}/wipe")).await;
    ck.check("/labs/{lab_id}/wipe", r, Method::PUT).await;
    let r = admin.delete(&lab).await;
    ck.check("/labs/{lab_id}", r, Method::DELETE).await;
    let r = admin.put(&format!("{lab}/stop")).await;
    ck.check("/labs/{lab_id}/stop", r, Method::PUT).await;
    check_lab(&mut ck, &admin, &lab).await;
    let r = admin.put(&format!("{lab}/wipe")).await;
    ck.check("/labs/{lab_id}/wipe", r, Method::PUT).await;
    let r = admin.delete(&lab).await;
    ck.check("/labs/{lab_id}", r, Method::DELETE).await;
    for t in ["", "/start", "/stop", "/wipe"] {
        let path = format!("{lab}{t}");
        let method = if t.is_empty() {
            Method::GET
        } else {
            Method::PUT
        };
        let r = admin.request(method.clone(), &path).send().await.unwrap();
        ck.check(&format!("/labs/{{lab_id}}{t}"), r, method).await;
    }
    let r = admin.get("/labs/not-a-uuid").await;
    ck.check("/labs/{lab_id}", r, Method::GET).await;

    // --- licensing ---
    let reg = |body: Value| {
        admin
            .request(Method::POST, "/licensing/registration")
            .json(&body)
            .send()
    };
    let r = reg(json!({"token": "bad token"})).await.unwrap();
    ck.check("/licensing/registration", r, Method::POST).await;
    let r = admin.put("/licensing/registration/renew").await;
    ck.check("/licensing/registration/renew", r, Method::PUT)
        .await;
    let r = admin.delete("/licensing/deregistration").await;
    ck.check("/licensing/deregistration", r, Method::DELETE)
        .await;
    let r = reg(json!({"token": "Zm9vYmFy"})).await.unwrap();
    ck.check("/licensing/registration", r, Method::POST).await;
    let r = reg(json!({"token": "Zm9vYmFy"})).await.unwrap();
    ck.check("/licensing/registration", r, Method::POST).await;
    let r = admin.get("/licensing").await;
    ck.check("/licensing", r, Method::GET).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = admin.get("/licensing").await;
    ck.check("/licensing", r, Method::GET).await;
    let r = admin.get("/system_health").await;
    ck.check("/system_health", r, Method::GET).await;
    let r = admin.put("/licensing/registration/renew").await;
    ck.check("/licensing/registration/renew", r, Method::PUT)
        .await;
    let r = admin.put("/licensing/authorization/renew").await;
    ck.check("/licensing/authorization/renew", r, Method::PUT)
        .await;
    let r = admin.delete("/licensing/deregistration").await;
    ck.check("/licensing/deregistration", r, Method::DELETE)
        .await;
    let r = admin
        .request(Method::POST, "/licensing/registration")
        .json(&json!({"token": "invalid"}))
        .send()
        .await
        .unwrap();
    ck.check("/licensing/registration", r, Method::POST).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = admin.get("/licensing").await;
    ck.check("/licensing", r, Method::GET).await;

    // --- telemetry, with every kind of event recorded above ---
    let r = admin.get("/telemetry/events").await;
    let events = ck.check("/telemetry/events", r, Method::GET).await;
    assert!(events.as_array().unwrap().len() > 10);

    // --- faults keep the error shape ---
    f.apply_faults(
        &"*/system_stats:older;*/system_health:error=503"
            .parse()
            .unwrap(),
        true,
    );
    let r = admin.get("/system_stats").await;
    ck.check("/system_stats", r, Method::GET).await;
    let r = admin.get("/system_health").await;
    ck.check("/system_health", r, Method::GET).await;

    // --- logout last ---
    let r = admin.delete("/logout").await;
    ck.check("/logout", r, Method::DELETE).await;
    let r = admin.delete("/logout").await;
    ck.check("/logout", r, Method::DELETE).await;
    assert!(ck.checked > 60, "checked {} answers", ck.checked);
    f.shutdown().await;
}
