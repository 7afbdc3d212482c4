use std::time::Duration;

use ccm_cml::models::{NodeState, TelemetryCategory, telemetry_to_domain};
use ccm_cml::{
    CmlClient, CmlConfig, CmlError, Credentials, Deregistration, Secret, Target, TlsConfig,
};
use ccm_cml_sim::{ADMIN_USER_ID, Endpoint as SimEndpoint, FaultSpec, SAMPLE_LAB_YAML};
use ccm_domain::activity;
use ccm_domain::cml::{AdmissionState, CmlHealth, CmlInfo, CmlStats};
use ccm_domain::ids::{LabId, WorkerId};
use ccm_domain::lab::LabState;
use ccm_domain::licence::{AuthorizationStatus, Licence, RegistrationStatus};
use ccm_domain::service::{CallOutcome, CmlCall, ReasonCode};
use ccm_resilience::Resilience;

use crate::support::{client, client_with, eventually, fleet, resilience_config, target};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn system_endpoints_should_decode_and_convert_from_the_simulator() {
    let f = fleet(1, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);

    let info = CmlInfo::from(c.system_information(&t).await.unwrap());
    assert_eq!(info.version, "2.9.0+build.3");
    assert!(info.ready);

    let health = CmlHealth::from(c.system_health(&t).await.unwrap());
    assert_eq!(health.valid, Some(true));
    assert_eq!(health.computes.len(), 1);
    assert_eq!(health.computes[0].admission_state, AdmissionState::Ready);

    let stats = CmlStats::from(c.system_stats(&t).await.unwrap());
    assert_eq!(stats.cpu_count, 32);
    assert!(stats.memory_total > 0.0);
    assert_eq!(stats.running_nodes, Some(0));

    let counters = f.worker(0).unwrap().counters();
    assert_eq!(counters.logins, 1, "one login served both bearer calls");
    assert_eq!(counters.get(SimEndpoint::SystemInformation), 1);
    assert_eq!(counters.get(SimEndpoint::SystemHealth), 1);
    assert_eq!(counters.get(SimEndpoint::SystemStats), 1);
    f.shutdown().await;
}

#[tokio::test]
async fn login_should_learn_the_own_user_id_and_auth_calls_should_work() {
    let f = fleet(2, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    assert_eq!(c.own_user_id(&t), None);

    let info = c.auth_extended(&t).await.unwrap();
    let admin = ADMIN_USER_ID.to_string();
    assert_eq!(info.user_id.as_deref(), Some(admin.as_str()));
    assert_eq!(info.admin, Some(true));
    assert_eq!(c.own_user_id(&t).as_deref(), Some(admin.as_str()));
    assert!(c.authok(&t).await.unwrap());

    c.authenticate(&t).await.unwrap();
    assert_eq!(c.own_user_id(&t).as_deref(), Some(admin.as_str()));
    assert!(c.authok(&t).await.unwrap());

    f.worker(0).unwrap().expire_tokens_now();
    assert!(
        !c.authok(&t).await.unwrap(),
        "authok reports, it does not log in"
    );

    c.auth_extended(&t).await.unwrap();
    c.logout(&t, false).await.unwrap();
    assert!(!c.has_token(&t));
    assert_eq!(f.worker(0).unwrap().counters().get(SimEndpoint::Logout), 1);
    // Logging out again sends nothing.
    c.logout(&t, true).await.unwrap();
    assert_eq!(f.worker(0).unwrap().counters().get(SimEndpoint::Logout), 1);
    f.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_should_be_a_credentials_error_sent_once() {
    let f = fleet(3, 1, |_| {}).await;
    let c = client();
    let bad = Target::new(
        &f.endpoints()[0],
        std::sync::Arc::new(Credentials::new("admin", "wrong")),
        ccm_cml::TlsMode::Verify,
    )
    .unwrap();
    let err = c.system_health(&bad).await.unwrap_err();
    assert!(matches!(err, CmlError::Credentials { .. }), "{err:?}");
    assert_eq!(
        err.reason(CmlCall::SystemHealth).code,
        ReasonCode::Credentials
    );
    assert!(!format!("{err} {err:?}").contains("wrong"));
    let counters = f.worker(0).unwrap().counters();
    assert_eq!(
        counters.get(SimEndpoint::AuthExtended),
        1,
        "a 403 login is not retried"
    );
    assert_eq!(counters.get(SimEndpoint::SystemHealth), 0);
    f.shutdown().await;
}

#[tokio::test]
async fn a_401_should_cost_one_relogin_and_then_succeed() {
    let f = fleet(4, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    let w = f.worker(0).unwrap();
    c.system_health(&t).await.unwrap();
    w.reset_counters();

    w.fail_next_requests_with_401(1);
    c.system_health(&t).await.unwrap();
    let counters = w.counters();
    assert_eq!(counters.logins, 1);
    assert_eq!(
        counters.get(SimEndpoint::SystemHealth),
        2,
        "the request was repeated once"
    );

    // Two 401s in a row: one re-login, one repeat, then a typed error.
    w.reset_counters();
    w.fail_next_requests_with_401(2);
    let err = c.system_stats(&t).await.unwrap_err();
    assert!(matches!(err, CmlError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        err.reason(CmlCall::SystemStats).code,
        ReasonCode::Unauthorized
    );
    let counters = w.counters();
    assert_eq!(counters.logins, 1);
    assert_eq!(counters.get(SimEndpoint::SystemStats), 2);
    f.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_calls_with_an_expired_token_should_cause_exactly_one_login() {
    let f = fleet(5, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    let w = f.worker(0).unwrap();
    c.system_health(&t).await.unwrap();
    w.expire_tokens_now();
    w.reset_counters();

    let calls = (0..50).map(|i| {
        let c = c.clone();
        let t = t.clone();
        tokio::spawn(async move {
            if i % 2 == 0 {
                c.system_stats(&t).await.map(|_| ())
            } else {
                c.licensing(&t).await.map(|_| ())
            }
        })
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap().unwrap();
    }
    let counters = w.counters();
    assert_eq!(counters.logins, 1, "{counters:?}");
    assert_eq!(
        counters.get(SimEndpoint::AuthExtended),
        1,
        "exactly one login request: {counters:?}"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_first_calls_should_share_one_login() {
    let f = fleet(6, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    let calls = (0..50).map(|_| {
        let c = c.clone();
        let t = t.clone();
        tokio::spawn(async move { c.labs(&t, true).await })
    });
    for r in futures::future::join_all(calls).await {
        assert!(r.unwrap().unwrap().is_empty());
    }
    assert_eq!(f.worker(0).unwrap().counters().logins, 1);
    f.shutdown().await;
}

#[tokio::test]
async fn lab_lifecycle_should_go_from_import_to_booted_and_back_to_deleted() {
    let f = fleet(7, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    let title = "Lab & Co / 50% \"quoted\"";

    let imported = c
        .import_lab(&t, SAMPLE_LAB_YAML, Some(title))
        .await
        .unwrap();
    assert!(imported.warnings.is_empty());
    let id = LabId::parse(&imported.id).unwrap();
    assert_eq!(c.labs(&t, true).await.unwrap(), vec![imported.id.clone()]);

    let lab = c.lab(&t, &id).await.unwrap();
    assert_eq!(
        lab.lab_title.as_deref(),
        Some(title),
        "the title was URL-encoded"
    );
    assert_eq!(lab.state, LabState::DefinedOnCore);
    let worker = WorkerId::new();
    let now = chrono::Utc::now();
    let record = lab.to_record(worker, &id, now).unwrap();
    assert_eq!((record.node_count, record.link_count), (2, 1));
    assert_eq!(record.lab_id, id);

    c.start_lab(&t, &id).await.unwrap();
    let elements = eventually(WAIT, "every node BOOTED", || async {
        let es = c.lab_element_state(&t, &id).await.unwrap();
        es.all_nodes_booted().then_some(es)
    })
    .await;
    assert_eq!(elements.nodes.len(), 2);
    assert_eq!(c.lab(&t, &id).await.unwrap().state, LabState::Started);
    let stats = CmlStats::from(c.system_stats(&t).await.unwrap());
    assert_eq!(stats.running_nodes, Some(2));

    // Wiping a running lab is refused by CML: a benign 400.
    let err = c.wipe_lab(&t, &id).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");

    c.stop_lab(&t, &id).await.unwrap();
    assert_eq!(c.lab(&t, &id).await.unwrap().state, LabState::Stopped);
    let es = c.lab_element_state(&t, &id).await.unwrap();
    assert!(
        es.nodes.values().all(|s| *s == NodeState::Stopped),
        "{es:?}"
    );

    let yaml = c.download_lab(&t, &id).await.unwrap();
    assert!(yaml.contains("nodes:"), "{yaml}");

    c.wipe_lab(&t, &id).await.unwrap();
    assert_eq!(c.lab(&t, &id).await.unwrap().state, LabState::DefinedOnCore);
    c.delete_lab(&t, &id).await.unwrap();
    let err = c.lab(&t, &id).await.unwrap_err();
    assert!(matches!(err, CmlError::NotFound { .. }), "{err:?}");
    assert!(c.labs(&t, true).await.unwrap().is_empty());
    let err = c.delete_lab(&t, &id).await.unwrap_err();
    assert!(matches!(err, CmlError::NotFound { .. }), "{err:?}");

    // Every lab action is in the telemetry, and ccm's own login is not activity.
    let events = c.telemetry_events(&t).await.unwrap();
    for cat in [
        TelemetryCategory::ImportLab,
        TelemetryCategory::StartLab,
        TelemetryCategory::BootNode,
        TelemetryCategory::StopLab,
        TelemetryCategory::ExportLab,
        TelemetryCategory::UserActivity,
    ] {
        assert!(events.iter().any(|e| e.category == cat), "{cat} missing");
    }
    let own = c.own_user_id(&t).unwrap();
    let domain = telemetry_to_domain(events);
    let logins: Vec<_> = domain
        .iter()
        .filter(|e| e.category == "user_activity")
        .collect();
    assert!(!logins.is_empty());
    assert!(logins.iter().all(|e| !activity::is_activity(e, Some(&own))));
    f.shutdown().await;
}

#[tokio::test]
async fn import_should_refuse_a_title_too_long_without_a_request() {
    let f = fleet(8, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    let err = c
        .import_lab(&t, SAMPLE_LAB_YAML, Some(&"x".repeat(65)))
        .await
        .unwrap_err();
    assert!(matches!(err, CmlError::InvalidArgument { .. }), "{err:?}");
    assert_eq!(f.worker(0).unwrap().counters().requests, 0);
    let err = c
        .import_lab(&t, "not: [a topology", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    f.shutdown().await;
}

async fn settled_licence(c: &CmlClient, t: &Target) -> Licence {
    eventually(WAIT, "the registration to settle", || async {
        let l = c.licensing(t).await.unwrap();
        let status = l.registration_status().cloned();
        status
            .filter(RegistrationStatus::is_settled)
            .map(|_| Licence::from(l))
    })
    .await
}

#[tokio::test]
async fn licence_registration_should_complete_with_a_good_token_and_fail_with_a_bad_one() {
    let f = fleet(9, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);

    let initial = Licence::from(c.licensing(&t).await.unwrap());
    assert_eq!(initial.registration, RegistrationStatus::NotRegistered);

    c.register_licence(&t, &Secret::from("GoodToken123"), false)
        .await
        .unwrap();
    let licence = settled_licence(&c, &t).await;
    assert_eq!(licence.registration, RegistrationStatus::Completed);
    assert_eq!(
        licence.authorization,
        Some(AuthorizationStatus::InCompliance)
    );
    assert!(licence.expires.is_some());
    let health = CmlHealth::from(c.system_health(&t).await.unwrap());
    assert_eq!(health.is_licensed, Some(true));

    // Registering again without reregister is a benign 409.
    let err = c
        .register_licence(&t, &Secret::from("GoodToken123"), false)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err:?}");

    assert_eq!(
        c.deregister_licence(&t).await.unwrap(),
        Deregistration::Deregistered
    );
    let err = c.deregister_licence(&t).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "already deregistered: {err:?}");

    let bad = "invalidTokenXYZ";
    c.register_licence(&t, &Secret::from(bad), false)
        .await
        .unwrap();
    let licence = settled_licence(&c, &t).await;
    assert_eq!(licence.registration, RegistrationStatus::Failed);
    let failure = licence.last_failure.unwrap();
    assert!(failure.contains("not valid"), "{failure}");
    assert!(!failure.contains(bad), "the token is scrubbed: {failure}");

    let before = f.worker(0).unwrap().counters().requests;
    let err = c
        .register_licence(&t, &Secret::from("has spaces"), false)
        .await
        .unwrap_err();
    assert!(matches!(err, CmlError::InvalidArgument { .. }), "{err:?}");
    assert_eq!(
        f.worker(0).unwrap().counters().requests,
        before,
        "nothing was sent"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn deregistration_with_the_licensing_service_unreachable_should_be_local_only() {
    let f = fleet(10, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    c.register_licence(&t, &Secret::from("GoodToken"), false)
        .await
        .unwrap();
    settled_licence(&c, &t).await;
    f.worker(0)
        .unwrap()
        .apply_faults(&FaultSpec::parse("*:ssms-unreachable").unwrap());
    assert_eq!(
        c.deregister_licence(&t).await.unwrap(),
        Deregistration::LocalOnly
    );
    f.shutdown().await;
}

#[tokio::test]
async fn a_non_admin_should_get_forbidden_on_licensing() {
    let f = fleet(11, 1, |_| {}).await;
    let c = client();
    let student = Target::new(
        &f.endpoints()[0],
        std::sync::Arc::new(Credentials::new("student", "student")),
        ccm_cml::TlsMode::Verify,
    )
    .unwrap();
    let err = c.licensing(&student).await.unwrap_err();
    assert!(matches!(err, CmlError::Forbidden { .. }), "{err:?}");
    let reason = err.reason(CmlCall::Licensing);
    assert_eq!(
        (reason.code, reason.status),
        (ReasonCode::Forbidden, Some(403))
    );
    let student_id = f.worker(0).unwrap().user_id().to_string();
    assert_eq!(
        c.own_user_id(&student).as_deref(),
        Some(student_id.as_str())
    );
    f.shutdown().await;
}

#[tokio::test]
async fn malformed_json_should_be_a_decode_error_not_a_panic() {
    let f = fleet(12, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    f.worker(0)
        .unwrap()
        .apply_faults(&FaultSpec::parse("*/system_stats+telemetry_events:malformed").unwrap());
    for call in [CmlCall::SystemStats, CmlCall::Telemetry] {
        let err = match call {
            CmlCall::SystemStats => c.system_stats(&t).await.map(|_| ()).unwrap_err(),
            _ => c.telemetry_events(&t).await.map(|_| ()).unwrap_err(),
        };
        match &err {
            CmlError::Decode { snippet, .. } => assert!(!snippet.is_empty()),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert_eq!(err.reason(call).code, ReasonCode::Decode);
    }
    // A decode error is a failure, not retried.
    assert_eq!(
        f.worker(0)
            .unwrap()
            .counters()
            .get(SimEndpoint::SystemStats),
        1
    );
    // Other endpoints are unaffected.
    c.system_health(&t).await.unwrap();
    f.shutdown().await;
}

#[tokio::test]
async fn an_older_cml_should_be_not_supported_and_login_should_fall_back() {
    let f = fleet(13, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    let w = f.worker(0).unwrap();
    w.apply_faults(&FaultSpec::parse("*/licensing+auth_extended+telemetry_events:older").unwrap());

    let result = c.licensing(&t).await;
    assert!(
        matches!(result, Err(CmlError::NotSupported { .. })),
        "{result:?}"
    );
    assert_eq!(
        ccm_cml::call_outcome(&result, CmlCall::Licensing),
        CallOutcome::NotSupported
    );
    let result = c.telemetry_events(&t).await;
    assert!(
        matches!(result, Err(CmlError::NotSupported { .. })),
        "{result:?}"
    );

    // The login fell back to /authenticate and read the user id from the token.
    let admin = ADMIN_USER_ID.to_string();
    assert_eq!(c.own_user_id(&t).as_deref(), Some(admin.as_str()));
    let counters = w.counters();
    assert_eq!(counters.get(SimEndpoint::AuthExtended), 1);
    assert_eq!(counters.get(SimEndpoint::Authenticate), 1);
    assert_eq!(
        counters.get(SimEndpoint::Licensing),
        1,
        "404 is not retried"
    );

    // A "not supported" answer never opens the breaker.
    for _ in 0..10 {
        assert!(c.licensing(&t).await.unwrap_err().is_not_supported());
    }
    // A lab that does not exist is "not found", not "not supported".
    let err = c
        .lab(
            &t,
            &LabId::parse("4e6a1b2c-7d8e-4f90-a1b2-c3d4e5f60718").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CmlError::NotFound { .. }), "{err:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn transient_errors_on_idempotent_calls_should_be_retried_and_posts_should_not() {
    let f = fleet(14, 1, |_| {}).await;
    let c = client();
    let t = target(&c, &f, 0);
    let w = f.worker(0).unwrap();
    c.auth_extended(&t).await.unwrap();
    w.apply_faults(&FaultSpec::parse("*/system_health+import:error=503").unwrap());
    w.reset_counters();

    let err = c.system_health(&t).await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert_eq!(
        w.counters().get(SimEndpoint::SystemHealth),
        3,
        "max_attempts = 3 for an idempotent GET"
    );
    let err = c.import_lab(&t, SAMPLE_LAB_YAML, None).await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert_eq!(
        w.counters().get(SimEndpoint::Import),
        1,
        "import is never retried"
    );
    f.shutdown().await;
}

#[tokio::test]
async fn a_powered_off_worker_should_give_connect_errors() {
    let f = fleet(15, 1, |_| {}).await;
    // No breaker: this test is about the error, and polls until the worker is back.
    let mut cfg = resilience_config();
    cfg.breaker.enabled = false;
    let c = client_with(&cfg);
    let t = target(&c, &f, 0);
    c.system_information(&t).await.unwrap();
    let w = f.worker(0).unwrap();
    w.power_off();
    let err = c.system_information(&t).await.unwrap_err();
    match &err {
        CmlError::Connect { .. } | CmlError::Request { .. } => {}
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert_eq!(
        err.reason(CmlCall::SystemInformation).code,
        ReasonCode::Connect
    );
    w.power_on(Duration::ZERO);
    eventually(WAIT, "the worker answers again", || async {
        c.system_information(&t).await.ok()
    })
    .await;
    f.shutdown().await;
}

#[tokio::test]
async fn tls_should_verify_with_the_simulators_ca_and_work_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let ca_out = ca.clone();
    let f = fleet(16, 2, move |cfg| {
        cfg.tls = true;
        cfg.ca_out = Some(ca_out);
    })
    .await;
    let url = &f.endpoints()[1];
    assert!(url.starts_with("https://"), "{url}");

    let with = |tls: TlsConfig| {
        let cfg = CmlConfig {
            tls,
            ..CmlConfig::default()
        };
        CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap()
    };

    let verified = with(TlsConfig::CaFile(ca.clone()));
    let t = verified.target(url).unwrap();
    assert!(verified.system_information(&t).await.unwrap().ready);
    verified.system_health(&t).await.unwrap();

    let insecure = with(TlsConfig::Insecure);
    let t = insecure.target(url).unwrap();
    insecure.system_health(&t).await.unwrap();

    let system_roots = with(TlsConfig::Verify);
    let t = system_roots.target(url).unwrap();
    let err = system_roots.system_information(&t).await.unwrap_err();
    assert!(matches!(err, CmlError::Tls { .. }), "{err:?}");
    assert_eq!(err.reason(CmlCall::SystemInformation).code, ReasonCode::Tls);
    f.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_should_be_refused() {
    let f = fleet(17, 1, |_| {}).await;
    let cfg = CmlConfig {
        max_body_bytes: 64 << 10,
        ..CmlConfig::default()
    };
    let c = CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap();
    let t = c.target(&f.endpoints()[0]).unwrap();
    // Fill the telemetry log past 64 KiB with logins (each adds a user_activity event).
    let w = f.worker(0).unwrap();
    for _ in 0..1_000 {
        w.simulate_user_login();
    }
    let err = c.telemetry_events(&t).await.unwrap_err();
    assert!(matches!(err, CmlError::BodyTooLarge { .. }), "{err:?}");
    // The default limit reads it.
    let big = client_with(&resilience_config());
    let t = big.target(&f.endpoints()[0]).unwrap();
    assert!(big.telemetry_events(&t).await.unwrap().len() >= 1_000);
    f.shutdown().await;
}

#[tokio::test]
async fn sessions_should_be_kept_per_worker_and_forgotten_on_request() {
    let f = fleet(18, 3, |_| {}).await;
    let c = client();
    let targets: Vec<_> = (0..3).map(|i| target(&c, &f, i)).collect();
    let tasks = targets.iter().cloned().map(|t| {
        let c = c.clone();
        tokio::spawn(async move { c.system_health(&t).await.map(|_| ()) })
    });
    for r in futures::future::join_all(tasks).await {
        r.unwrap().unwrap();
    }
    assert_eq!(c.session_count(), 3);
    for (i, w) in f.workers().enumerate() {
        assert_eq!(w.counters().logins, 1, "worker {i}");
    }
    c.forget(&targets[1]);
    assert_eq!(c.session_count(), 2);
    assert_eq!(c.own_user_id(&targets[1]), None);
    f.shutdown().await;
}

/// A plain-HTTP sync in the product's order (`SyncOrder::OneByOne`): the four calls one after
/// another, the last one closing the connection.
async fn one_by_one(c: &CmlClient, t: &Target) {
    assert_eq!(c.sync_order(t.base_url()), ccm_cml::SyncOrder::OneByOne);
    c.system_information(t).await.unwrap();
    c.system_health(t).await.unwrap();
    c.system_stats(t).await.unwrap();
    c.licensing_closing(t).await.unwrap();
}

#[tokio::test]
async fn a_plain_http_sync_should_use_one_connection_and_keep_none_after_it() {
    let f = fleet(50, 1, |_| {}).await;
    let w = f.worker(0).unwrap();
    let c = client();
    let t = target(&c, &f, 0);
    // The first sync logs in on the same connection.
    for sync in 1..=20u64 {
        one_by_one(&c, &t).await;
        let seen = w.counters();
        assert_eq!(
            (seen.requests - seen.logins, seen.connections),
            (4 * sync, sync),
            "sync {sync}: one connection per sync, none reused from the last: {seen:?}"
        );
    }
    assert_eq!(w.counters().logins, 1);
    f.shutdown().await;
}

#[tokio::test]
async fn a_plain_http_sync_should_go_on_after_the_worker_closes_its_connection() {
    let f = fleet(51, 1, |_| {}).await;
    let w = f.worker(0).unwrap();
    let c = client();
    let t = target(&c, &f, 0);
    one_by_one(&c, &t).await;
    // The worker closes the connection after system_health (as a server's keep-alive limit
    // would): the next call opens a new one and the sync completes.
    w.apply_faults(&FaultSpec::parse("0/system_health:close").unwrap());
    let before = w.counters();
    one_by_one(&c, &t).await;
    let after = w.counters();
    assert_eq!(after.requests - before.requests, 4, "{after:?}");
    assert_eq!(after.connections - before.connections, 2, "{after:?}");
    f.shutdown().await;
}

#[tokio::test]
async fn a_plain_http_worker_should_keep_no_idle_connection_without_a_pool() {
    let f = fleet(52, 1, |_| {}).await;
    let w = f.worker(0).unwrap();
    // `plain_pool_max_idle_per_host = 0`: every call connects anew, even though
    // `pool_max_idle_per_host` (for HTTPS) is 1, and a sync's calls go at once.
    let cfg = ccm_cml::CmlConfig {
        plain_pool_max_idle_per_host: 0,
        ..crate::support::cml_config()
    };
    let c =
        ccm_cml::CmlClient::new(&cfg, Resilience::builder(&resilience_config()).build()).unwrap();
    let t = target(&c, &f, 0);
    assert_eq!(c.sync_order(t.base_url()), ccm_cml::SyncOrder::AllAtOnce);
    let before = w.counters().connections;
    for _ in 0..4 {
        c.system_information(&t).await.unwrap();
    }
    assert_eq!(
        w.counters().connections - before,
        4,
        "no connection was kept"
    );
    f.shutdown().await;
}
