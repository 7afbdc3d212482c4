//! Rendered worker views kept for reuse (`[api] view_cache_entries`): the answers are the
//! bytes a fresh render gives, never older than the store (a write behind the API's back,
//! another API over the same store), and follow the second, the settings and the order.

use std::time::Duration;

use ccm_api::dto::{WorkerPage, WorkerView};
use ccm_api::{ApiState, router};
use ccm_store::WorkerFilter;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{ADMIN, MANAGER, TestApi, VIEWER};

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_pages_and_details_should_be_the_bytes_a_fresh_render_gives() {
    let api = TestApi::start(5801, 3).await;
    api.until_ready().await;
    for _ in 0..2 {
        // The second round is answered from kept views: the same bytes.
        let res = api.get("/api/v1/workers?sort=name&limit=2", VIEWER).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.headers[http::header::CONTENT_TYPE], "application/json");
        let page: WorkerPage = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(
            (page.total, page.limit, page.offset, page.items.len()),
            (3, 2, 0, 2)
        );
        assert_eq!(
            serde_json::to_vec(&page).unwrap(),
            res.body.to_vec(),
            "the page is what serde writes for it"
        );
        let engine = &api.fleet.engine;
        for view in &page.items {
            let id = view.id.to_string();
            let w = engine.worker(view.id.into()).await.unwrap();
            let fresh = serde_json::to_vec(&WorkerView::new(&w, engine)).unwrap();
            let res = api.get(&format!("/api/v1/workers/{id}"), VIEWER).await;
            assert_eq!(res.status, 200);
            assert_eq!(res.body.to_vec(), fresh, "the detail is a fresh render");
            assert_eq!(serde_json::to_vec(view).unwrap(), fresh, "so is the row");
        }
    }
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_write_behind_the_apis_back_should_show_at_once_in_list_and_detail() {
    let api = TestApi::start(5802, 2).await;
    let id = api.workers().await[0].id;
    let path = format!("/api/v1/workers/{id}");
    let list = "/api/v1/workers?sort=name";
    // Rendered and kept.
    assert_eq!(
        api.get(&path, VIEWER).await.ok(200)["name"],
        api.workers().await[0].name
    );
    api.get(list, VIEWER).await.ok(200);

    // Another writer changes the stored document (the clock does not move: the same second,
    // the same settings, so only the version tells).
    let store = api.fleet.engine.store().clone();
    let mut w = store.get(id).await.unwrap().unwrap();
    w.name = "renamed-behind-the-back".into();
    let saved = store.update(&w).await.unwrap();

    let detail = api.get(&path, VIEWER).await.ok(200);
    assert_eq!(detail["name"], "renamed-behind-the-back");
    assert_eq!(detail["version"], saved.version);
    let page = api.get(list, VIEWER).await.ok(200);
    assert!(
        names(&page).contains(&"renamed-behind-the-back".to_owned()),
        "{page}"
    );

    // Another API over the same engine and store (a second replica's reader) changes the
    // tags: the first one's kept views are not used for the new version.
    let other = ApiState::new(
        api.fleet.engine.clone(),
        api.api_config.clone(),
        api.auth_config.clone(),
        None,
    )
    .unwrap();
    let req = http::Request::builder()
        .method(http::Method::PATCH)
        .uri(format!("{path}/tags"))
        .header(http::header::AUTHORIZATION, format!("Bearer {MANAGER}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(
            serde_json::to_vec(&json!({"set": {"team": "blue"}})).unwrap(),
        ))
        .unwrap();
    let res = router(other).oneshot(req).await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let detail = api.get(&path, VIEWER).await.ok(200);
    assert_eq!(detail["tags"]["team"], "blue", "{detail}");
    let page = api.get(list, VIEWER).await.ok(200);
    let row = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.to_string())
        .unwrap();
    assert_eq!(row["tags"]["team"], "blue", "{row}");
    assert_eq!(row, &detail);

    // Deleted behind the back: gone from the list, 404 for the detail.
    assert!(store.delete(id).await.unwrap());
    api.get(&path, VIEWER).await.problem(404);
    let page = api.get(list, VIEWER).await.ok(200);
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn kept_views_should_follow_the_second_and_the_runtime_settings() {
    let api = TestApi::start(5803, 1).await;
    api.until_ready().await;
    let id = api.workers().await[0].id;
    let path = format!("/api/v1/workers/{id}");
    let age = |w: &Value| w["sources"]["system_information"]["age_seconds"].as_u64();
    let first = api.get(&path, VIEWER).await.ok(200);
    assert_eq!(age(&first), Some(0), "{first}");

    // Within the second the view is the same; at the next second it is rendered again.
    api.clock.advance(Duration::from_millis(400));
    assert_eq!(api.get(&path, VIEWER).await.ok(200), first);
    api.clock.advance(Duration::from_millis(600));
    let later = api.get(&path, VIEWER).await.ok(200);
    assert_eq!(age(&later), Some(1), "{later}");
    api.clock.advance(Duration::from_secs(41));
    let page = api.get("/api/v1/workers", VIEWER).await.ok(200);
    assert_eq!(age(&page["items"][0]), Some(42), "{page}");

    // New runtime settings (a new version) render the views again in the same second.
    let flag = |w: &Value| w["monitoring"]["idle"]["running_nodes_count_as_use"].as_bool();
    let before = flag(&api.get(&path, VIEWER).await.ok(200)).unwrap();
    let req = http::Request::builder()
        .method(http::Method::PATCH)
        .uri("/api/v1/settings")
        .header(http::header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(axum::body::Body::from(
            serde_json::to_vec(&json!({"idle": {"running_nodes_count_as_use": !before}})).unwrap(),
        ))
        .unwrap();
    api.send(req).await.ok(200);
    assert_eq!(flag(&api.get(&path, VIEWER).await.ok(200)), Some(!before));
    let page = api.get("/api/v1/workers", VIEWER).await.ok(200);
    assert_eq!(flag(&page["items"][0]), Some(!before));
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn views_read_twice_in_two_seconds_should_be_prepared_for_the_next_and_used_only_if_they_match()
 {
    let api = TestApi::start(5805, 3).await;
    api.until_ready().await;
    let list = "/api/v1/workers?sort=name";
    let engine = &api.fleet.engine;
    // Two answers in one second: not yet hot.
    api.get(list, VIEWER).await.ok(200);
    api.get(list, VIEWER).await.ok(200);
    assert_eq!(
        api.state.prepare_views().await,
        0,
        "read in one second only"
    );
    // Two more in the next second: the three workers stay on a followed page, hot.
    api.clock.advance(Duration::from_secs(1));
    api.get(list, VIEWER).await.ok(200);
    api.get(list, VIEWER).await.ok(200);
    assert_eq!(api.state.prepare_views().await, 3);

    // One worker changes before the next second begins: its prepared view must not be used.
    let store = engine.store().clone();
    let mut changed = api.workers().await[0].clone();
    changed.name = "changed-after-it-was-prepared".into();
    store.update(&changed).await.unwrap();
    api.clock.advance(Duration::from_secs(1));

    let before = api.state.view_cache_stats();
    let page = api.get(list, VIEWER).await.ok(200);
    let after = api.state.view_cache_stats();
    // The background task may have prepared again (after the change): never fewer.
    assert!(
        after.prepared_hits - before.prepared_hits >= 2,
        "{before:?} → {after:?}"
    );
    assert_eq!(after.hits, before.hits, "nothing of the old second is used");
    assert!(names(&page).contains(&"changed-after-it-was-prepared".to_owned()));
    for item in page["items"].as_array().unwrap() {
        let id: uuid::Uuid = item["id"].as_str().unwrap().parse().unwrap();
        let w = engine.worker(id.into()).await.unwrap();
        let fresh = serde_json::to_value(WorkerView::new(&w, engine)).unwrap();
        assert_eq!(item, &fresh, "a prepared view is the render of its second");
    }
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn a_page_should_keep_the_stores_order_and_filter_when_workers_change_between_reads() {
    let api = TestApi::start(5804, 4).await;
    let list = "/api/v1/workers?sort=updated&order=desc&limit=3";
    let ids = |p: &Value| -> Vec<String> {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let engine = &api.fleet.engine;
    for round in 0..4 {
        // Each round touches another worker: it moves to the top of the `updated` order.
        let store = engine.store().clone();
        let mut w = api.workers().await[round].clone();
        w.tags.insert("round".into(), round.to_string());
        w.updated_at += chrono::Duration::seconds(60 * (round as i64 + 1));
        store.update(&w).await.unwrap();
        let page = api.get(list, VIEWER).await.ok(200);
        let expected: Vec<String> = engine
            .workers(&WorkerFilter {
                sort: ccm_store::WorkerSort::Updated,
                descending: true,
                limit: 3,
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .iter()
            .map(|w| w.id.to_string())
            .collect();
        assert_eq!(ids(&page), expected, "round {round}");
        assert_eq!(page["items"][0]["tags"]["round"], round.to_string());
        assert_eq!(page["total"], 4);
    }
    let running = api
        .get("/api/v1/workers?state=running&limit=2&offset=1", VIEWER)
        .await
        .ok(200);
    assert_eq!(running["total"], 4);
    assert_eq!(running["items"].as_array().unwrap().len(), 2);
    api.fleet.shutdown().await;
}
