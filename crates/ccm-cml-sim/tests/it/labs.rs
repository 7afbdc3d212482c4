//! Import, the lab and node state machine, visibility, size limits.

use std::time::Duration;

use ccm_cml_sim::{NodeTiming, SAMPLE_LAB_YAML};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, Cml, STUDENT, categories, expect_error, fleet};

const TIMING: NodeTiming = NodeTiming {
    queue: Duration::from_secs(2),
    stagger: Duration::from_millis(500),
    boot: Duration::from_secs(30),
};

fn node_states(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn lab_lifecycle_should_follow_the_cml_state_machine_on_the_clock() {
    let f = fleet(1, |c| c.node_timing = TIMING).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let id = cml.import(SAMPLE_LAB_YAML).await;
    let lab = format!("/labs/{id}");

    let view = cml.get_json(&lab).await;
    assert_eq!(view["state"], "DEFINED_ON_CORE");
    assert_eq!(view["node_count"], 2);
    assert_eq!(view["link_count"], 1);
    assert_eq!(view["lab_title"], "Student Lab");
    assert_eq!(cml.get_json("/labs").await, json!([id]));
    let created_modified = view["modified"].clone();

    assert_eq!(
        cml.put(&format!("{lab}/start")).await.status(),
        StatusCode::NO_CONTENT
    );
    let nodes = cml.get_json(&format!("{lab}/nodes?data=true")).await;
    assert_eq!(node_states(&nodes), ["QUEUED", "QUEUED"]);
    assert_eq!(
        cml.get_json(&format!("{lab}/state")).await,
        json!("STARTED")
    );
    assert_eq!(
        cml.get_json(&format!("{lab}/check_if_converged")).await,
        json!(false)
    );
    // Starting a started lab is a no-op.
    assert_eq!(
        cml.put(&format!("{lab}/start")).await.status(),
        StatusCode::NO_CONTENT
    );

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let nodes = cml.get_json(&format!("{lab}/nodes?data=true")).await;
    assert_eq!(
        node_states(&nodes),
        ["STARTED", "QUEUED"],
        "nodes start one after another"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let nodes = cml.get_json(&format!("{lab}/nodes?data=true")).await;
    assert_eq!(node_states(&nodes), ["STARTED", "STARTED"]);
    assert_eq!(nodes[0]["boot_progress"], "Booting");

    tokio::time::sleep(Duration::from_secs(30)).await;
    let nodes = cml.get_json(&format!("{lab}/nodes?data=true")).await;
    assert_eq!(node_states(&nodes), ["BOOTED", "BOOTED"]);
    assert_eq!(nodes[0]["boot_progress"], "Booted");
    assert_eq!(
        cml.get_json(&format!("{lab}/check_if_converged")).await,
        json!(true)
    );
    let elements = cml.get_json(&format!("{lab}/lab_element_state")).await;
    assert!(
        elements["links"]
            .as_object()
            .unwrap()
            .values()
            .all(|s| s == "STARTED")
    );
    assert_eq!(elements["interfaces"].as_object().unwrap().len(), 2);
    assert_ne!(
        cml.get_json(&lab).await["modified"],
        created_modified,
        "modified is bumped"
    );

    assert_eq!(
        cml.put(&format!("{lab}/stop")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(cml.get_json(&lab).await["state"], "STOPPED");
    assert_eq!(
        cml.put(&format!("{lab}/stop")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cml.put(&format!("{lab}/wipe")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(cml.get_json(&lab).await["state"], "DEFINED_ON_CORE");
    let yaml = cml
        .get(&format!("{lab}/download"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        yaml.contains("title: Student Lab") && yaml.contains("alpine-0"),
        "{yaml}"
    );
    assert_eq!(cml.delete(&lab).await.status(), StatusCode::NO_CONTENT);
    expect_error(cml.delete(&lab).await, StatusCode::NOT_FOUND).await;
    assert_eq!(cml.get_json("/labs").await, json!([]));

    let cats = categories(&cml).await;
    let order: Vec<&str> = cats
        .iter()
        .map(String::as_str)
        .filter(|c| *c != "user_activity")
        .collect();
    assert_eq!(
        order,
        [
            "import_lab",
            "start_lab",
            "queue_node",
            "queue_node",
            "start_node",
            "start_node",
            "boot_node",
            "boot_node",
            "stop_lab",
            "stop_node",
            "stop_node",
            "wipe_node",
            "wipe_node",
            "export_lab"
        ]
    );
    let events = cml.get_json("/telemetry/events").await;
    let stamps: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted, "events are in time order");
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn lab_events_should_record_state_changes() {
    let f = fleet(1, |c| c.node_timing = TIMING).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let id = cml.import(SAMPLE_LAB_YAML).await;
    cml.put(&format!("/labs/{id}/start")).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let events = cml.get_json(&format!("/labs/{id}/events")).await;
    let changes: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "STATE_CHANGED")
        .map(|e| {
            (
                e["element_type"].as_str().unwrap().into(),
                e["data"]["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(changes.contains(&("LAB".into(), "STARTED".into())));
    assert_eq!(
        changes
            .iter()
            .filter(|(t, s)| t == "NODE" && s == "BOOTED")
            .count(),
        2
    );
    f.shutdown().await;
}

#[tokio::test]
async fn lab_errors_should_be_400_or_404_with_an_error_body() {
    let f = fleet(1, |_| {}).await;
    let w = f.worker(0).unwrap();
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    expect_error(cml.get("/labs/not-a-uuid").await, StatusCode::BAD_REQUEST).await;
    expect_error(
        cml.put("/labs/not-a-uuid/start").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    let unknown = "9c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5";
    for (m, p) in [
        (Method::GET, format!("/labs/{unknown}")),
        (Method::PUT, format!("/labs/{unknown}/start")),
        (Method::PUT, format!("/labs/{unknown}/stop")),
        (Method::PUT, format!("/labs/{unknown}/wipe")),
        (Method::DELETE, format!("/labs/{unknown}")),
        (Method::GET, format!("/labs/{unknown}/download")),
        (Method::GET, format!("/labs/{unknown}/events")),
        (Method::GET, format!("/labs/{unknown}/nodes")),
    ] {
        let resp = cml.request(m, &p).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND).await;
    }
    let id = cml.import(SAMPLE_LAB_YAML).await;
    w.set_ready(false);
    expect_error(
        cml.put(&format!("/labs/{id}/start")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    w.set_ready(true);
    cml.put(&format!("/labs/{id}/start")).await;
    expect_error(
        cml.put(&format!("/labs/{id}/wipe")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_error(
        cml.delete(&format!("/labs/{id}")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    cml.put(&format!("/labs/{id}/stop")).await;
    expect_error(
        cml.delete(&format!("/labs/{id}")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_error(cml.get("/no/such/path").await, StatusCode::NOT_FOUND).await;
    expect_error(
        cml.put("/system_information").await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    expect_error(
        cml.get("/labs?show_all=perhaps").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    f.shutdown().await;
}

#[tokio::test]
async fn import_should_take_yaml_or_json_and_reject_bad_topologies() {
    let f = fleet(1, |_| {}).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let json_topology = json!({
        "lab": {"version": "0.2.2", "title": "From JSON"},
        "nodes": [{"id": "n0", "label": "r1", "node_definition": "iosv", "x": 0, "y": 0, "ram": 2048, "cpus": 2}],
        "links": [],
    });
    let id = cml.import(&json_topology.to_string()).await;
    assert_eq!(
        cml.get_json(&format!("/labs/{id}")).await["lab_title"],
        "From JSON"
    );

    let resp = cml
        .request(Method::POST, "/import?title=Renamed%20lab")
        .body(SAMPLE_LAB_YAML)
        .send()
        .await
        .unwrap();
    let id2 = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        cml.get_json(&format!("/labs/{id2}")).await["lab_title"],
        "Renamed lab"
    );

    for bad in [
        "",
        "lab: [unclosed",
        "nodes: []\nlinks: []\n",
        "lab: {version: 0.3.0}\nnodes: []\n",
        "lab: {version: 7.0.0}\nnodes: []\nlinks: []\n",
        "lab: {version: 0.3.0}\nnodes: [{id: n0, label: a, x: 0, y: 0}]\nlinks: []\n",
    ] {
        let resp = cml
            .request(Method::POST, "/import")
            .body(bad)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST).await;
    }
    let long_title = "x".repeat(65);
    let resp = cml
        .request(Method::POST, &format!("/import?title={long_title}"))
        .body(SAMPLE_LAB_YAML)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST).await;
    f.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_nginx_limits_should_get_413() {
    let f = fleet(1, |_| {}).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    // 1.5 MB of YAML comments is under the 2 MB import limit…
    let padding = format!("# {}\n", "p".repeat(100)).repeat(15_000);
    let ok = format!("{SAMPLE_LAB_YAML}{padding}");
    assert!(ok.len() > 1_400_000 && ok.len() < 2 * 1024 * 1024);
    let resp = cml
        .request(Method::POST, "/import")
        .body(ok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // …2.5 MB is over it.
    let big = format!("{SAMPLE_LAB_YAML}{}", padding.repeat(2));
    let resp = cml
        .request(Method::POST, "/import")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Other endpoints stop at 100 KB.
    let login = json!({"username": "admin", "password": "x".repeat(120 * 1024)});
    let resp = cml
        .http
        .post(cml.url("/authenticate"))
        .json(&login)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    f.shutdown().await;
}

#[tokio::test]
async fn labs_should_be_visible_to_their_owner_and_to_admins_with_show_all() {
    let f = fleet(1, |_| {}).await;
    let mut admin = Cml::new(&f.endpoints()[0]);
    admin.login(ADMIN).await;
    let mut student = admin.clone();
    student.login(STUDENT).await;
    let mine = admin.import(SAMPLE_LAB_YAML).await;
    let theirs = student.import(SAMPLE_LAB_YAML).await;
    assert_eq!(admin.get_json("/labs").await, json!([mine]));
    assert_eq!(
        admin.get_json("/labs?show_all=true").await,
        json!([mine, theirs])
    );
    assert_eq!(
        student.get_json("/labs?show_all=true").await,
        json!([theirs])
    );
    expect_error(
        student.get(&format!("/labs/{mine}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        admin.get_json(&format!("/labs/{theirs}")).await["owner_username"],
        "student"
    );
    let users = admin.get_json("/users").await;
    let student_row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "student")
        .unwrap();
    assert_eq!(student_row["labs"], json!([theirs]));
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn system_stats_should_follow_the_running_nodes() {
    let f = fleet(1, |c| c.node_timing = TIMING).await;
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let dominfo = |s: &Value| {
        let computes = s["computes"].as_object().unwrap();
        assert_eq!(computes.len(), 1);
        computes.values().next().unwrap()["stats"]["dominfo"].clone()
    };
    let idle = cml.get_json("/system_stats").await;
    assert_eq!(dominfo(&idle)["running_nodes"], 0);
    let topo = json!({
        "lab": {"version": "0.3.0"},
        "nodes": [
            {"id": "a", "label": "a", "node_definition": "iosv", "x": 0, "y": 0, "ram": 1024, "cpus": 2},
            {"id": "b", "label": "b", "node_definition": "iosv", "x": 0, "y": 0, "ram": 2048, "cpus": 1},
            {"id": "c", "label": "c", "node_definition": "iosv", "x": 0, "y": 0},
        ],
        "links": [],
    });
    let id = cml.import(&topo.to_string()).await;
    assert_eq!(
        dominfo(&cml.get_json("/system_stats").await)["total_nodes"],
        3
    );
    cml.put(&format!("/labs/{id}/start")).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let busy = cml.get_json("/system_stats").await;
    let d = dominfo(&busy);
    assert_eq!(d["running_nodes"], 3);
    assert_eq!(d["allocated_cpus"], 4);
    assert_eq!(d["allocated_memory"], (1024 + 2048 + 512) * 1024);
    assert!(
        busy["all"]["cpu"]["percent"].as_f64().unwrap()
            > idle["all"]["cpu"]["percent"].as_f64().unwrap()
    );
    assert!(
        busy["all"]["memory"]["used"].as_f64().unwrap()
            > idle["all"]["memory"]["used"].as_f64().unwrap()
    );
    let hosts = cml.get_json("/system/compute_hosts").await;
    assert_eq!(hosts[0]["node_counts"]["running_nodes"], 3);
    cml.put(&format!("/labs/{id}/stop")).await;
    assert_eq!(
        dominfo(&cml.get_json("/system_stats").await)["running_nodes"],
        0
    );
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn disconnected_nodes_should_keep_their_lab_started() {
    let f = fleet(1, |c| c.node_timing = TIMING).await;
    let w = f.worker(0).unwrap();
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let id = cml.import(SAMPLE_LAB_YAML).await;
    cml.put(&format!("/labs/{id}/start")).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    w.apply_faults(&"*:disconnected".parse().unwrap());
    let nodes = cml.get_json(&format!("/labs/{id}/nodes?data=true")).await;
    assert_eq!(node_states(&nodes), ["DISCONNECTED", "DISCONNECTED"]);
    assert_eq!(
        cml.get_json(&format!("/labs/{id}")).await["state"],
        "STARTED"
    );
    w.clear_faults();
    let nodes = cml.get_json(&format!("/labs/{id}/nodes?data=true")).await;
    assert_eq!(node_states(&nodes), ["BOOTED", "BOOTED"]);
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn user_helpers_should_leave_activity_in_telemetry() {
    let f = fleet(1, |c| c.node_timing = TIMING).await;
    let w = f.worker(0).unwrap();
    let user = w.simulate_user_login();
    let lab = w.import_lab_as_user(SAMPLE_LAB_YAML).unwrap();
    w.start_lab_as_user(lab).unwrap();
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let events = cml.get_json("/telemetry/events").await;
    let events = events.as_array().unwrap();
    assert_eq!(events[0]["category"], "user_activity");
    assert_eq!(events[0]["data"]["user_id"], user.to_string());
    assert!(
        events
            .iter()
            .any(|e| e["category"] == "start_lab" && e["data"]["user_id"] == user.to_string())
    );
    assert_eq!(
        cml.get_json(&format!("/labs/{lab}")).await["owner"],
        user.to_string()
    );
    assert!(w.start_lab_as_user(uuid::Uuid::new_v4()).is_err());
    f.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn activity_generator_should_keep_only_its_share_of_workers_busy() {
    let f = fleet(10, |c| {
        c.node_timing = TIMING;
        c.activity = Some(ccm_cml_sim::ActivityConfig {
            fraction: 0.3,
            interval: Duration::from_secs(10),
        });
    })
    .await;
    tokio::time::sleep(Duration::from_secs(45)).await;
    let student = ccm_cml_sim::STUDENT_USER_ID.to_string();
    let mut busy = 0;
    for e in f.endpoints() {
        let mut cml = Cml::new(&e);
        cml.login(ADMIN).await;
        let events = cml.get_json("/telemetry/events").await;
        let by_student: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|ev| ev["data"]["user_id"] == student)
            .map(|ev| ev["category"].as_str().unwrap())
            .collect();
        if by_student.is_empty() {
            assert_eq!(
                cml.get_json("/labs?show_all=true").await,
                json!([]),
                "{e} is idle"
            );
            continue;
        }
        busy += 1;
        assert!(by_student.contains(&"user_activity"), "{e}: {by_student:?}");
        assert!(by_student.contains(&"import_lab") && by_student.contains(&"start_lab"));
    }
    assert_eq!(busy, 3, "30% of 10 workers");
    f.shutdown().await;
}

/// A node transition carries the wall-clock time it fell due at, as the clock read when the
/// lab was started — not the time of whichever later request applies it. A harness that
/// steps the clock (`ccm bench idle`) gets the same telemetry however its requests interleave
/// with a client's.
#[tokio::test(start_paused = true)]
async fn a_transition_applied_after_the_clock_moved_should_keep_the_time_it_fell_due() {
    let f = fleet(1, |c| {
        c.node_timing = NodeTiming {
            queue: Duration::ZERO,
            stagger: Duration::ZERO,
            boot: Duration::ZERO,
        }
    })
    .await;
    let w = f.worker(0).unwrap();
    let started: chrono::DateTime<chrono::Utc> = "2026-01-05T11:10:00Z".parse().unwrap();
    w.set_wall_clock(started);
    w.start_user_lab().unwrap();
    // Nothing has applied the (already due) transitions yet; the clock moves on an hour.
    w.set_wall_clock(started + chrono::Duration::hours(1));
    let mut cml = Cml::new(&f.endpoints()[0]);
    cml.login(ADMIN).await;
    let events = cml.get_json("/telemetry/events").await;
    // Telemetry times carry no zone (`2025-11-26T14:29:58.112000`), as CML's do.
    let stamps: Vec<(String, chrono::NaiveDateTime)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["category"].as_str().is_some_and(|c| c.ends_with("_node")))
        .map(|e| {
            let at = e["timestamp"].as_str().unwrap().parse().unwrap();
            (e["category"].as_str().unwrap().to_owned(), at)
        })
        .collect();
    assert!(
        stamps.iter().any(|(c, _)| c == "boot_node"),
        "the nodes booted: {stamps:?}"
    );
    for (category, at) in &stamps {
        // (The clock is set to the millisecond.)
        let off = (*at - started.naive_utc()).abs();
        assert!(
            off < chrono::Duration::milliseconds(2),
            "{category} stamped {at}, not when it fell due ({started})"
        );
    }
    f.shutdown().await;
}
