//! The event schemas in the OpenAPI document: one per catalogue entry, and the events ccm
//! really emits validate against them.

use ccm_domain::{Event, EventKind};
use http::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN, MANAGER, TestApi, VIEWER};

/// A validator for the component `name` of the OpenAPI document `doc` (refs resolve in it).
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

fn assert_valid(v: &jsonschema::Validator, event: &Value) {
    let errors: Vec<String> = v
        .iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{event}\n{}", errors.join("\n"));
}

#[test]
fn every_catalogue_entry_should_have_its_schemas_in_the_openapi_document() {
    let doc = serde_json::to_value(ccm_api::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let mapping = &schemas["CloudEvent"]["discriminator"]["mapping"];
    assert_eq!(
        schemas["CloudEvent"]["oneOf"].as_array().unwrap().len(),
        EventKind::TYPES.len()
    );
    for shape in EventKind::SHAPES {
        let data = ccm_api::event_schema::data_component(shape);
        let event = ccm_api::event_schema::event_component(shape);
        assert!(schemas[&data].is_object(), "{data} missing");
        assert_eq!(
            schemas[&event]["properties"]["type"]["enum"],
            json!([shape.type_name])
        );
        assert_eq!(
            schemas[&event]["properties"]["data"]["$ref"],
            json!(format!("#/components/schemas/{data}"))
        );
        assert_eq!(
            mapping[shape.type_name],
            json!(format!("#/components/schemas/{event}")),
            "{}",
            shape.type_name
        );
        // Every declared field is a property of the payload schema.
        for f in shape.fields {
            assert!(
                schemas[&data]["properties"][f.name].is_object(),
                "{data}.{} missing",
                f.name
            );
        }
    }
    // The event log page refers to it.
    assert_eq!(
        schemas["EventRecord"]["properties"]["event"]["$ref"],
        "#/components/schemas/CloudEvent"
    );
}

#[tokio::test]
async fn the_events_ccm_emits_should_match_their_published_schemas() {
    let api = TestApi::start(78, 2).await;
    api.until_ready().await;
    let doc = api.get("/api/openapi.json", VIEWER).await.ok(200);
    let any = validator(&doc, "CloudEvent");
    let id = api.workers().await[0].id.to_string();

    // Some traffic: tags, idle switch, a stop, a refresh of a stopped worker (skipped).
    api.call(
        Method::PATCH,
        &format!("/api/v1/workers/{id}/tags"),
        Some(MANAGER),
        Some(json!({"set": {"team": "a"}, "remove": ["nope"]})),
    )
    .await
    .ok(200);
    api.call(
        Method::PUT,
        &format!("/api/v1/workers/{id}/idle-detection"),
        Some(MANAGER),
        Some(json!({"enabled": false})),
    )
    .await
    .ok(200);
    api.post(&format!("/api/v1/workers/{id}/stop"), ADMIN, None)
        .await
        .ok(202);

    let page = api
        .get(&format!("/api/v1/workers/{id}/events?limit=100"), VIEWER)
        .await
        .ok(200);
    let items = page["items"].as_array().unwrap();
    let mut types: Vec<&str> = Vec::new();
    for item in items {
        assert_valid(&any, &item["event"]);
        // And against its own type's schema, not only "some" alternative.
        let t = item["event"]["type"].as_str().unwrap();
        let shape = EventKind::SHAPES.iter().find(|s| s.type_name == t).unwrap();
        assert_valid(
            &validator(&doc, &ccm_api::event_schema::event_component(shape)),
            &item["event"],
        );
        types.push(t);
    }
    for t in [
        "ccm.worker.tags_updated",
        "ccm.worker.idle_detection_changed",
        "ccm.worker.action_requested",
    ] {
        assert!(types.contains(&t), "{t} not among {types:?}");
    }

    // A snapshot carries the worker as the API shows it (`WorkerView`).
    let worker = api
        .get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .ok(200);
    let snapshot = Event::new(
        "/ccm/api",
        None,
        EventKind::WorkerSnapshot { worker },
        chrono::Utc::now(),
    );
    let snapshot = serde_json::to_value(&snapshot).unwrap();
    assert_valid(&validator(&doc, "WorkerSnapshotEvent"), &snapshot);
    assert_valid(&any, &snapshot);
    // A payload that breaks its schema is refused (the check can fail).
    let mut bad = items[0]["event"].clone();
    bad["data"] = json!({"unexpected": true, "from": 7});
    assert!(!any.is_valid(&bad), "{bad}");
    api.fleet.shutdown().await;
}
