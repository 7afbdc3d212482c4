use ccm_cloud::{CloudProvider as _, RunSpec};
use ccm_domain::{AmiId, CheckStatus, InstanceType, StatusChecks};
use ccm_engine::JobKind;
use ccm_testbed::ec2::{DEFAULT_ACCOUNT, SQUATTER_ACCOUNT};
use serde_json::{Value, json};

use crate::support::{ADMIN, MANAGER, TestApi, VIEWER};

/// The simulated cloud's public image of another account, named like the controller and newer.
const SQUATTER_AMI: &str = "ami-0bad5a0a70000000d";
/// The caller's own CML 2.9 image.
const OWN_AMI: &str = "ami-0c31c0de00290000a";

/// Asserts a guardrail refusal: the status, kind `policy`, the rule and (when given) the field.
fn policy(p: &Value, rule: &str, field: Option<&str>) {
    assert_eq!(p["type"], "urn:ccm:problem:policy", "{p}");
    assert_eq!(p["rule"], rule, "{p}");
    match field {
        Some(f) => assert_eq!(p["field"], f, "{p}"),
        None => assert!(p.get("field").is_none(), "{p}"),
    }
}

#[tokio::test]
async fn an_image_of_an_untrusted_owner_should_be_refused_422_for_every_role_naming_the_owner() {
    let api = TestApi::start(130, 1).await;
    for token in [MANAGER, ADMIN] {
        let p = api
            .post(
                "/api/v1/workers",
                token,
                Some(json!({"name": "squatted", "ami_id": SQUATTER_AMI})),
            )
            .await
            .problem(422);
        policy(&p, "provisioning.ami_owners", Some("ami_id"));
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(SQUATTER_ACCOUNT), "{detail}");
        assert!(detail.contains("ami_owners"), "{detail}");
    }
    // A viewer may not create at all (its role, not the image).
    let p = api
        .post(
            "/api/v1/workers",
            VIEWER,
            Some(json!({"name": "x", "ami_id": SQUATTER_AMI})),
        )
        .await
        .problem(403);
    assert_ne!(p["type"], "urn:ccm:problem:policy");

    // By pattern, the newer squatter is never chosen: the own image is, and its owner shown.
    let w = api
        .post(
            "/api/v1/workers",
            MANAGER,
            Some(json!({"name": "by-pattern", "ami_name_pattern": "cml-controller-2.9*"})),
        )
        .await
        .ok(202);
    assert_eq!(w["ami"]["id"], OWN_AMI, "{w}");
    assert_eq!(w["ami"]["owner"], DEFAULT_ACCOUNT, "{w}");
    let id = w["id"].as_str().unwrap();
    let shown = api
        .get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .ok(200);
    assert_eq!(shown["ami"]["owner"], DEFAULT_ACCOUNT);
    // The own image by id is fine.
    api.post(
        "/api/v1/workers",
        MANAGER,
        Some(json!({"name": "by-id", "ami_id": OWN_AMI})),
    )
    .await
    .ok(202);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn an_instance_type_outside_the_allowed_list_should_be_refused_422_naming_the_rule() {
    let api = TestApi::start_with(131, 1, |o, _, _| {
        o.engine.provisioning.instance_type = "m5zn.metal".into();
        o.engine.provisioning.allowed_instance_types = vec!["m5zn.metal".into(), "c5.metal".into()];
    })
    .await;
    for token in [MANAGER, ADMIN] {
        let p = api
            .post(
                "/api/v1/workers",
                token,
                Some(json!({"name": "big", "instance_type": "p4d.24xlarge"})),
            )
            .await
            .problem(422);
        policy(
            &p,
            "provisioning.allowed_instance_types",
            Some("instance_type"),
        );
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("p4d.24xlarge") && detail.contains("c5.metal"),
            "{detail}"
        );
    }
    let w = api
        .post(
            "/api/v1/workers",
            MANAGER,
            Some(json!({"name": "listed", "instance_type": "c5.metal"})),
        )
        .await
        .ok(202);
    assert_eq!(w["instance_type"], "c5.metal");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn creates_racing_at_the_fleet_cap_should_get_409_naming_the_rule() {
    let api = TestApi::start_with(132, 1, |o, _, _| {
        o.engine.provisioning.max_workers = Some(3);
    })
    .await;
    assert_eq!(api.workers().await.len(), 1);
    let creates = (0..6).map(|n| {
        api.post(
            "/api/v1/workers",
            MANAGER,
            Some(json!({"name": format!("race-{n}")})),
        )
    });
    let answers = futures::future::join_all(creates).await;
    let mut accepted = 0;
    for res in &answers {
        if res.status.as_u16() == 202 {
            accepted += 1;
        } else {
            let p = res.problem(409);
            policy(&p, "provisioning.max_workers", None);
            assert!(p["detail"].as_str().unwrap().contains("at most 3"), "{p}");
        }
    }
    assert_eq!(accepted, 2, "one existing worker, a cap of 3");
    assert_eq!(api.workers().await.len(), 3);
    // An admin is held to the cap too.
    let p = api
        .post("/api/v1/workers", ADMIN, Some(json!({"name": "admin"})))
        .await
        .problem(409);
    policy(&p, "provisioning.max_workers", None);
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn below_admin_an_import_of_an_instance_outside_the_import_filter_should_be_refused_403() {
    let api = TestApi::start_with(133, 1, |o, _, _| o.import = false).await;
    let region = api.fleet.cloud.regions()[0].clone();
    let foreign = api
        .fleet
        .cloud
        .run_instance(
            &region,
            &RunSpec::new(
                AmiId::parse(SQUATTER_AMI).unwrap(),
                InstanceType::parse("m5zn.metal").unwrap(),
                "foreign",
            ),
        )
        .await
        .unwrap()
        .id;
    let body = json!({"instance_ids": [foreign.to_string()]});
    let p = api
        .post("/api/v1/workers/import", MANAGER, Some(body.clone()))
        .await
        .problem(403);
    policy(&p, "import", Some("instance_ids"));
    assert!(
        p["detail"].as_str().unwrap().contains(foreign.as_str()),
        "{p}"
    );
    assert!(api.workers().await.is_empty(), "nothing was imported");
    let p = api
        .post("/api/v1/workers/import", VIEWER, Some(body.clone()))
        .await
        .problem(403);
    assert_ne!(
        p["type"], "urn:ccm:problem:policy",
        "a viewer is refused by role"
    );

    // The fleet's own instances match the [import] filter: a manager may import them.
    let r = api
        .post(
            "/api/v1/workers/import",
            MANAGER,
            Some(json!({"configured": true, "all": true})),
        )
        .await
        .ok(200);
    assert_eq!(r["imported"].as_array().unwrap().len(), 1, "{r}");
    // An admin may import the outsider; its image's owner is shown.
    let r = api
        .post("/api/v1/workers/import", ADMIN, Some(body))
        .await
        .ok(200);
    let id = r["imported"][0].as_str().unwrap();
    let w = api
        .get(&format!("/api/v1/workers/{id}"), VIEWER)
        .await
        .ok(200);
    assert_eq!(w["ami"]["owner"], SQUATTER_ACCOUNT, "{w}");
    api.fleet.shutdown().await;
}

#[tokio::test]
async fn an_impaired_status_check_should_show_on_the_worker_and_degrade_it() {
    let api = TestApi::start(134, 1).await;
    api.until_ready().await;
    api.fleet
        .engine
        .trigger_job(JobKind::Ec2Sync)
        .await
        .unwrap();
    let w = &api.workers().await[0];
    let path = format!("/api/v1/workers/{}", w.id);
    let shown = api.get(&path, VIEWER).await.ok(200);
    let checks = &shown["sources"]["ec2_status"];
    assert_eq!(checks["freshness"], "fresh", "{checks}");
    // Just started: the simulated cloud's checks may still be initializing.
    for which in ["system", "instance"] {
        let status = checks["value"][which].as_str().unwrap();
        assert!(["ok", "initializing"].contains(&status), "{checks}");
    }
    assert_eq!(checks["value"]["impaired"], false);
    assert_eq!(shown["service"]["status"], "ready");

    api.fleet.cloud.set_status_checks(
        w.instance_id.as_ref().unwrap(),
        Some(StatusChecks {
            system: CheckStatus::Ok,
            instance: CheckStatus::Impaired,
        }),
    );
    api.fleet
        .engine
        .trigger_job(JobKind::Ec2Sync)
        .await
        .unwrap();
    let shown = api.get(&path, VIEWER).await.ok(200);
    assert_eq!(
        shown["sources"]["ec2_status"]["value"],
        json!({"system": "ok", "instance": "impaired", "impaired": true})
    );
    assert_eq!(shown["service"]["status"], "degraded", "{shown}");
    let reasons = shown["service"]["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r["call"] == "ec2_status" && r["code"] == "ec2_status_impaired"),
        "{reasons:?}"
    );
    api.fleet.shutdown().await;
}
