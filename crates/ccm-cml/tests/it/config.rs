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
    assert_eq!(cfg.pool_idle_timeout, Duration::from_millis(250));
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
    // Written out, everything survives but the password, which is masked.
    let written = toml::to_string(&cfg).unwrap();
    assert!(!written.contains("s3cret"), "{written}");
    let back: CmlConfig = toml::from_str(&written).unwrap();
    assert_eq!(back.password.expose(), "***");
    assert_eq!(
        CmlConfig {
            password: cfg.password.clone(),
            ..back
        },
        cfg
    );

    let pin = format!("sha256:{}", "ab".repeat(32));
    for (text, want) in [
        (r#"tls = "insecure""#.to_owned(), TlsConfig::Insecure),
        (r#"tls = "verify""#.to_owned(), TlsConfig::Verify),
        (
            format!(r#"tls = {{ fingerprint = "{pin}" }}"#),
            TlsConfig::Fingerprint(pin.parse().unwrap()),
        ),
    ] {
        let cfg: CmlConfig = toml::from_str(&text).unwrap();
        assert_eq!(cfg.tls, want);
        let back: CmlConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back.tls, want);
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
fn a_malformed_fingerprint_should_be_refused_naming_the_key() {
    for bad in [
        "ab".repeat(32),
        format!("sha256:{}", "ab".repeat(31)),
        format!("sha256:{}", "zz".repeat(32)),
        "sha1:00:11".to_owned(),
    ] {
        let text = format!("tls = {{ fingerprint = \"{bad}\" }}");
        let value: toml::Value = toml::from_str(&text).unwrap();
        let err = serde_path_to_error::deserialize::<_, CmlConfig>(value).unwrap_err();
        assert_eq!(err.path().to_string(), "tls.fingerprint", "{bad}");
        let err = err.into_inner().to_string();
        assert!(err.contains("64 hex digits"), "{bad}: {err}");
    }
}

#[test]
fn insecure_tls_and_plain_http_should_be_named_in_the_warnings() {
    assert!(CmlConfig::default().warnings().is_empty());
    let mut cfg = CmlConfig {
        tls: TlsConfig::Insecure,
        ..CmlConfig::default()
    };
    let w = cfg.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("cml.tls = \"insecure\""), "{w:?}");
    cfg.endpoint.scheme = "http".into();
    let w = cfg.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[1].starts_with("cml.endpoint.scheme = \"http\""), "{w:?}");
    for safe in [
        TlsConfig::CaFile("/etc/ccm/ca.pem".into()),
        TlsConfig::Fingerprint(format!("sha256:{}", "00".repeat(32)).parse().unwrap()),
    ] {
        let cfg = CmlConfig {
            tls: safe,
            ..CmlConfig::default()
        };
        assert!(cfg.warnings().is_empty());
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
