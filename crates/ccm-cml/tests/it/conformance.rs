use ccm_cml::models::{
    self, AuthExtendedResponse, ImportResponse, Lab, LabElementState, LicensingStatus, NodeState,
    SystemHealth, SystemInformation, SystemStats, TelemetryCategory, TelemetryEvent, Udi,
    telemetry_to_domain,
};
use ccm_cml::{CmlError, Endpoint, Secret};
use ccm_domain::activity;
use ccm_domain::cml::{AdmissionState, CmlHealth, CmlInfo, CmlStats};
use ccm_domain::ids::{LabId, WorkerId};
use ccm_domain::lab::LabState;
use ccm_domain::licence::{AuthorizationStatus, Licence, RegistrationStatus};
use chrono::{TimeZone, Utc};

const OWN: &str = "00000000-0000-4000-a000-000000000000";

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
}

#[test]
fn authenticate_example_should_decode_as_a_secret_token() {
    let token: Secret = models::decode(Endpoint::Authenticate, &data("authenticate.json")).unwrap();
    assert!(token.expose().starts_with("eyJ0eXAi"));
    assert_eq!(token.expose().split('.').count(), 3);
    assert_eq!(format!("{token:?}"), "***");
}

#[test]
fn auth_extended_example_should_give_the_own_user_id() {
    let r: AuthExtendedResponse =
        models::decode(Endpoint::AuthExtended, &data("auth_extended.json")).unwrap();
    let info = r.info();
    assert_eq!(info.user_id.as_deref(), Some(OWN));
    assert_eq!(info.username.as_deref(), Some("admin"));
    assert_eq!(info.admin, Some(true));
    assert_eq!(info.error, None);
    assert!(r.token.is_some());
    assert!(!format!("{r:?}").contains("eyJ"), "the token never prints");
}

#[test]
fn system_information_example_should_convert_to_cml_info() {
    let s: SystemInformation = models::decode(
        Endpoint::SystemInformation,
        &data("system_information.json"),
    )
    .unwrap();
    assert_eq!(s.oui.as_deref(), Some("52:54:00:00:00:00"));
    assert_eq!(s.allow_ssh_pubkey_auth, Some(false));
    assert_eq!(
        CmlInfo::from(s),
        CmlInfo {
            version: "2.9.0+build.3".into(),
            ready: true
        }
    );
}

#[test]
fn system_health_example_should_convert_to_cml_health() {
    let h: SystemHealth =
        models::decode(Endpoint::SystemHealth, &data("system_health.json")).unwrap();
    let compute = &h.computes["b8a5f0a4-3f0e-4c2a-9a57-2f6f1c9e7d10"];
    assert_eq!(compute.docker_shim, Some(true));
    let health = CmlHealth::from(h);
    assert_eq!(health.valid, Some(true));
    assert_eq!(health.is_licensed, Some(true));
    assert!(health.is_enterprise && health.controller_valid && health.core_connected);
    assert_eq!(health.computes.len(), 1);
    let c = &health.computes[0];
    assert_eq!(c.id, "b8a5f0a4-3f0e-4c2a-9a57-2f6f1c9e7d10");
    assert_eq!(c.hostname, "cml-controller");
    assert_eq!(c.admission_state, AdmissionState::Ready);
    assert!(c.lld_connected && c.is_controller);
}

#[test]
fn system_stats_example_should_convert_to_cml_stats() {
    let s: SystemStats = models::decode(Endpoint::SystemStats, &data("system_stats.json")).unwrap();
    let compute = &s.computes["b8a5f0a4-3f0e-4c2a-9a57-2f6f1c9e7d10"];
    let cpu = compute.stats.as_ref().unwrap().cpu.as_ref().unwrap();
    assert_eq!(cpu.load.as_deref(), Some(&[6.2, 8.4, 7.9][..]));
    assert_eq!(cpu.predicted, Some(48));
    let stats = CmlStats::from(s);
    assert_eq!(stats.cpu_count, 48);
    assert!((stats.cpu_percent - 7.9).abs() < 1e-9);
    assert_eq!(stats.memory_total, 201_863_462_912.0);
    assert_eq!(stats.memory_used, 21_474_836_480.0);
    assert_eq!(stats.disk_total, 536_870_912_000.0);
    assert_eq!(stats.disk_used, 96_636_764_160.0);
    assert_eq!(stats.running_nodes, Some(3));
    assert_eq!(stats.total_nodes, Some(5));
    assert_eq!(stats.allocated_cpus, 4);
    assert_eq!(stats.allocated_memory_kib, 6_291_456);
    assert_eq!(stats.computes, 1);
}

#[test]
fn null_dominfo_counters_should_be_none_not_zero_and_not_an_error() {
    let body = br#"{"all":{"cpu":{"count":4,"percent":1.0},"memory":{"used":1,"free":1,"total":2},
        "disk":{"used":1,"free":1,"total":2}},
      "computes":{
        "a":{"hostname":"a","is_controller":true,"stats":{"cpu":{"model":"x","predicted":4,"load":[]},
          "memory":{"used":1,"free":1,"total":2},"disk":{"used":1,"free":1,"total":2},
          "dominfo":{"allocated_cpus":2,"allocated_memory":1024,"total_nodes":null,
                     "total_orphans":null,"running_nodes":null,"running_orphans":null}}},
        "b":{"hostname":"b","is_controller":false,"extra_key":{"x":1},"stats":{"cpu":{"model":"x","predicted":4,"load":[1]},
          "memory":{"used":1,"free":1,"total":2},"disk":{"used":1,"free":1,"total":2},
          "dominfo":{"allocated_cpus":1,"allocated_memory":2048.0,"running_nodes":2}}}}}"#;
    let s: SystemStats = models::decode(Endpoint::SystemStats, body).unwrap();
    let a = s.computes["a"]
        .stats
        .as_ref()
        .unwrap()
        .dominfo
        .clone()
        .unwrap();
    assert_eq!(a.running_nodes, None);
    assert_eq!(a.total_nodes, None);
    let stats = CmlStats::from(s);
    assert_eq!(
        stats.running_nodes,
        Some(2),
        "only the known counter is summed"
    );
    assert_eq!(stats.total_nodes, None, "no compute gave a total");
    assert_eq!(stats.allocated_cpus, 3);
    assert_eq!(stats.allocated_memory_kib, 3072);
    assert_eq!(stats.computes, 2);

    let all_null: SystemStats = models::decode(
        Endpoint::SystemStats,
        br#"{"computes":{"a":{"hostname":"a","is_controller":true,"stats":{"dominfo":{"running_nodes":null}}}}}"#,
    )
    .unwrap();
    assert_eq!(CmlStats::from(all_null).running_nodes, None);
}

#[test]
fn negative_counters_should_be_a_decode_error_naming_the_field() {
    let err = models::decode::<SystemStats>(
        Endpoint::SystemStats,
        br#"{"computes":{"a":{"stats":{"dominfo":{"running_nodes":-1}}}}}"#,
    )
    .unwrap_err();
    match err {
        CmlError::Decode { detail, .. } => {
            assert!(detail.contains("running_nodes"), "{detail}")
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn licensing_example_should_convert_to_a_licence() {
    let l: LicensingStatus = models::decode(Endpoint::Licensing, &data("licensing.json")).unwrap();
    match &l.udi {
        Some(Udi::Info(u)) => assert_eq!(u.hostname.as_deref(), Some("cml-controller")),
        other => panic!("udi should be an object in 2.9: {other:?}"),
    }
    let reg = l.registration.as_ref().unwrap();
    let register_time = reg.register_time.as_ref().unwrap();
    assert_eq!(register_time.succeeded, Some(utc(2025, 11, 20, 10, 2, 11)));
    assert_eq!(register_time.scheduled, None);
    assert_eq!(
        reg.renew_time.as_ref().unwrap().scheduled,
        Some(utc(2026, 5, 19, 10, 2, 11))
    );
    assert_eq!(
        l.transport.as_ref().unwrap().proxy.as_ref().unwrap().port,
        None
    );
    assert_eq!(l.reservation_mode, Some(false));
    let licence = Licence::from(l);
    assert_eq!(licence.registration, RegistrationStatus::Completed);
    assert_eq!(
        licence.authorization,
        Some(AuthorizationStatus::InCompliance)
    );
    assert_eq!(licence.smart_account.as_deref(), Some("ACME Corp"));
    assert_eq!(licence.virtual_account.as_deref(), Some("CML-Workers"));
    assert_eq!(licence.expires, Some(utc(2026, 11, 20, 10, 2, 11)));
    assert_eq!(licence.product.as_deref(), Some("CML_Enterprise"));
    assert_eq!(licence.is_enterprise, Some(true));
    assert_eq!(licence.last_failure, None);
    assert_eq!(licence.features.len(), 1);
    assert_eq!(licence.features[0].in_use, Some(1));
    assert_eq!(licence.features[0].status.as_deref(), Some("IN_COMPLIANCE"));
}

#[test]
fn licensing_udi_as_a_string_and_unknown_statuses_should_still_decode() {
    let body = br#"{"udi":"PID:CML,SN:ABC","registration":{"status":"SOMETHING_NEW",
        "register_time":{"succeeded":null,"attempted":"2025-11-20T10:02:05","scheduled":null,
          "status":"FAILED","failure":"Registration failed: the ID token 'SeCrEt123' is not valid",
          "success":"FAILED"},"expires":"not a date"},
      "authorization":{"status":"EVAL_PLUS"},"features":[{"id":"f1"}]}"#;
    let l: LicensingStatus = models::decode(Endpoint::Licensing, body).unwrap();
    assert_eq!(l.udi, Some(Udi::Text("PID:CML,SN:ABC".into())));
    assert_eq!(
        l.registration_status(),
        Some(&RegistrationStatus::Other("SOMETHING_NEW".into()))
    );
    let reg = l.registration.as_ref().unwrap();
    assert_eq!(
        reg.expires, None,
        "an unreadable date is None, not an error"
    );
    assert_eq!(
        reg.register_time.as_ref().unwrap().attempted,
        Some(utc(2025, 11, 20, 10, 2, 5)),
        "a naive timestamp is UTC"
    );
    let licence = Licence::from(l);
    assert_eq!(
        licence.authorization,
        Some(AuthorizationStatus::Other("EVAL_PLUS".into()))
    );
    let failure = licence.last_failure.unwrap();
    assert!(failure.contains("is not valid"), "{failure}");
    assert!(
        !failure.contains("SeCrEt123"),
        "the licence token is scrubbed: {failure}"
    );
}

#[test]
fn an_empty_licensing_answer_should_give_an_unknown_registration() {
    let l: LicensingStatus = models::decode(Endpoint::Licensing, b"{}").unwrap();
    let licence = Licence::from(l);
    assert_eq!(
        licence.registration,
        RegistrationStatus::Other("UNKNOWN".into())
    );
    assert!(licence.features.is_empty());
}

#[test]
fn labs_example_should_decode_as_ids() {
    let ids: Vec<String> = models::decode(Endpoint::Labs, &data("labs.json")).unwrap();
    assert_eq!(
        ids,
        [
            "4e6a1b2c-7d8e-4f90-a1b2-c3d4e5f60718",
            "9c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"
        ]
    );
}

#[test]
fn lab_example_should_convert_to_a_lab_record() {
    let lab: Lab = models::decode(Endpoint::Lab, &data("lab.json")).unwrap();
    assert_eq!(
        lab.effective_permissions.as_deref().map(<[String]>::len),
        Some(4)
    );
    let worker = WorkerId::new();
    let requested = LabId::parse("4e6a1b2c-7d8e-4f90-a1b2-c3d4e5f60718").unwrap();
    let now = utc(2025, 11, 27, 0, 0, 0);
    let rec = lab.to_record(worker, &requested, now).unwrap();
    assert_eq!(rec.worker_id, worker);
    assert_eq!(rec.lab_id, requested);
    assert_eq!(rec.title, "CCNA Lablet 3.2");
    assert_eq!(rec.description.as_deref(), Some("OSPF multi-area"));
    assert_eq!(rec.state, LabState::Started);
    assert_eq!(
        rec.owner.as_deref(),
        Some("2f0c8e43-6a1d-4b7e-9c55-0e3d1a9b8f21")
    );
    assert_eq!(rec.owner_username.as_deref(), Some("sme1"));
    assert_eq!((rec.node_count, rec.link_count), (4, 3));
    assert_eq!(rec.created, Some(utc(2025, 11, 24, 9, 15, 2)));
    assert_eq!(rec.modified, Some(utc(2025, 11, 26, 14, 30, 41)));
    assert_eq!(rec.observed_at, now);
}

#[test]
fn unknown_lab_and_node_states_should_be_kept() {
    let lab: Lab = models::decode(
        Endpoint::Lab,
        br#"{"lab_title":"x","state":"PAUSED","effective_permissions":[]}"#,
    )
    .unwrap();
    assert_eq!(lab.state, LabState::Other("PAUSED".into()));
    let es: LabElementState = models::decode(
        Endpoint::LabElementState,
        br#"{"nodes":{"n1":"BOOTED","n2":"HIBERNATING"},"links":{},"interfaces":null}"#,
    )
    .unwrap();
    assert_eq!(es.nodes["n1"], NodeState::Booted);
    assert_eq!(es.nodes["n2"], NodeState::Other("HIBERNATING".into()));
    assert!(!es.all_nodes_booted());
}

#[test]
fn download_example_should_be_used_raw_and_quoted_answers_decoded() {
    let raw = data("download.yaml");
    let yaml = models::decode_download(&raw).unwrap();
    assert!(yaml.starts_with("lab:\n  title: CCNA Lablet 3.2"), "{yaml}");
    let quoted = serde_json::to_vec(&yaml).unwrap();
    assert_eq!(models::decode_download(&quoted).unwrap(), yaml);
    assert!(matches!(
        models::decode_download(b"\"unterminated"),
        Err(CmlError::Decode { .. })
    ));
    assert!(matches!(
        models::decode_download(&[0xff, 0xfe, b'a']),
        Err(CmlError::Decode { .. })
    ));
}

#[test]
fn import_example_should_decode() {
    let r: ImportResponse = models::decode(Endpoint::Import, &data("import.json")).unwrap();
    assert_eq!(r.id, "9c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5");
    assert!(r.warnings.is_empty());
    let r: ImportResponse =
        models::decode(Endpoint::Import, br#"{"id":"x","warnings":null}"#).unwrap();
    assert!(r.warnings.is_empty());
}

#[test]
fn telemetry_example_should_convert_to_activity_events() {
    let events: Vec<TelemetryEvent> =
        models::decode(Endpoint::TelemetryEvents, &data("telemetry_events.json")).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].category, TelemetryCategory::UserActivity);
    assert_eq!(
        events[1].data.lab_id.as_deref(),
        Some("4e6a1b2c-7d8e-4f90-a1b2-c3d4e5f60718")
    );
    let domain = telemetry_to_domain(events);
    assert_eq!(domain.len(), 3);
    assert_eq!(domain[1].category, "start_lab");
    assert_eq!(
        domain[1].timestamp,
        utc(2025, 11, 26, 14, 30, 40) + chrono::Duration::milliseconds(501)
    );
    assert_eq!(
        domain[0].user_id.as_deref(),
        Some("2f0c8e43-6a1d-4b7e-9c55-0e3d1a9b8f21")
    );
    assert_eq!(domain[2].user_id, None);
    let latest = activity::latest_activity(&domain, Some(OWN), utc(2025, 11, 27, 0, 0, 0));
    assert_eq!(
        latest,
        Some(utc(2025, 11, 26, 14, 33, 2) + chrono::Duration::milliseconds(4))
    );
}

#[test]
fn odd_telemetry_events_should_be_kept_or_skipped_not_fail_the_log() {
    let body = br#"[
      {"category":"wipe_lab","timestamp":"2025-11-26T14:29:58Z","data":{"user_id":42}},
      {"category":"boot_node","timestamp":"garbage","data":"text"},
      {"category":"start_lab","timestamp":"2025-11-26T14:29:59.5","data":null},
      {"category":"user_activity","timestamp":"2025-11-26 14:30:00","data":[1,2],"extra":true}
    ]"#;
    let events: Vec<TelemetryEvent> = models::decode(Endpoint::TelemetryEvents, body).unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0].category,
        TelemetryCategory::Other("wipe_lab".into())
    );
    assert_eq!(
        events[0].data.user_id, None,
        "a non-string user id is ignored"
    );
    assert_eq!(events[1].timestamp, None);
    let domain = telemetry_to_domain(events);
    assert_eq!(
        domain.len(),
        3,
        "the event without a readable time is skipped"
    );
    assert_eq!(domain[0].category, "wipe_lab");
}
