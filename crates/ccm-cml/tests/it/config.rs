use std::time::Duration;

use ccm_cml::{CmlClient, CmlConfig, CmlConfigError, TlsConfig};
use ccm_resilience::Resilience;

#[test]
fn an_empty_section_should_give_the_documented_defaults() {
    let cfg: CmlConfig = toml::from_str("").unwrap();
    assert_eq!(cfg, CmlConfig::default());
    assert_eq!(cfg.username, "admin");
    assert_eq!(cfg.password.expose(), "admin");
    assert_eq!(cfg.tls, TlsConfig::Verify);
    assert_eq!(cfg.connect_timeout, Duration::from_secs(5));
    assert_eq!(cfg.pool_idle_timeout, Duration::from_secs(2));
    assert_eq!(cfg.pool_max_idle_per_host, 1);
    assert_eq!(cfg.max_body_bytes, 8 << 20);
    assert_eq!(cfg.endpoint.scheme, "https");
    cfg.validate().unwrap();
}

#[test]
fn every_key_should_be_read_from_toml_and_survive_a_round_trip() {
    let text = r#"
        username = "ccm"
        password = "s3cret"
        tls = { ca_file = "/etc/ccm/cml-ca.pem" }
        connect_timeout = "2s"
        pool_idle_timeout = "30s"
        pool_max_idle_per_host = 2
        max_body_bytes = 1048576
        [endpoint]
        scheme = "http"
        port = 9443
        address = "private"
    "#;
    let cfg: CmlConfig = toml::from_str(text).unwrap();
    assert_eq!(cfg.username, "ccm");
    assert_eq!(cfg.password.expose(), "s3cret");
    assert_eq!(cfg.tls, TlsConfig::CaFile("/etc/ccm/cml-ca.pem".into()));
    assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
    assert_eq!(cfg.pool_idle_timeout, Duration::from_secs(30));
    assert_eq!(cfg.pool_max_idle_per_host, 2);
    assert_eq!(cfg.max_body_bytes, 1 << 20);
    assert_eq!(cfg.endpoint.port, Some(9443));
    cfg.validate().unwrap();
    let back: CmlConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);

    for (text, want) in [
        (r#"tls = "insecure""#, TlsConfig::Insecure),
        (r#"tls = "verify""#, TlsConfig::Verify),
    ] {
        let cfg: CmlConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.tls, want);
    }
}

#[test]
fn debug_output_of_the_config_should_hide_the_password() {
    let cfg: CmlConfig = toml::from_str(r#"password = "hunter2""#).unwrap();
    let text = format!("{cfg:?}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn typos_and_bad_values_should_be_rejected_naming_the_key() {
    assert!(toml::from_str::<CmlConfig>("usrname = \"x\"").is_err());
    assert!(toml::from_str::<CmlConfig>("tls = \"maybe\"").is_err());
    assert!(toml::from_str::<CmlConfig>("connect_timeout = \"soon\"").is_err());

    type Breaker = fn(&mut CmlConfig);
    let cases: [(&str, Breaker); 8] = [
        ("cml.username", |c| c.username.clear()),
        ("cml.password", |c| c.password = "".into()),
        ("cml.connect_timeout", |c| {
            c.connect_timeout = Duration::ZERO
        }),
        ("cml.pool_idle_timeout", |c| {
            c.pool_idle_timeout = Duration::from_secs(7200)
        }),
        ("cml.pool_max_idle_per_host", |c| {
            c.pool_max_idle_per_host = 1000
        }),
        ("cml.max_body_bytes", |c| c.max_body_bytes = 10),
        ("cml.endpoint.scheme", |c| c.endpoint.scheme = "ftp".into()),
        ("cml.tls.ca_file", |c| c.tls = TlsConfig::CaFile("".into())),
    ];
    for (key, break_it) in cases {
        let mut cfg = CmlConfig::default();
        break_it(&mut cfg);
        match cfg.validate() {
            Err(CmlConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: expected invalid, got {other:?}"),
        }
    }
}

#[test]
fn a_missing_or_bad_ca_file_should_fail_at_build_time_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate").unwrap();
    for path in [missing, garbage] {
        let cfg = CmlConfig {
            tls: TlsConfig::CaFile(path.clone()),
            ..CmlConfig::default()
        };
        match CmlClient::new(&cfg, Resilience::disabled()) {
            Err(e @ CmlConfigError::CaFile { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}")
            }
            other => panic!(
                "{}: expected a ca file error, got {other:?}",
                path.display()
            ),
        }
    }
}
