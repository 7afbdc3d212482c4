use std::io::Write;

use super::*;

fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load(Some(file.path()), env)
}

fn leaf_keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_keys(&key, v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

#[test]
fn the_example_should_parse_to_the_defaults_and_show_every_key() {
    let parsed = load_str(EXAMPLE, &[]).unwrap();
    assert_eq!(parsed, Config::default());
    let example: toml::Table = EXAMPLE.parse().unwrap();
    let mut documented = Vec::new();
    leaf_keys("", &toml::Value::Table(example), &mut documented);
    let mut all = Vec::new();
    leaf_keys(
        "",
        &toml::Value::try_from(Config::default()).unwrap(),
        &mut all,
    );
    for key in all {
        assert!(documented.contains(&key), "config example lacks `{key}`");
    }
}

#[test]
fn a_missing_file_should_name_the_path() {
    let err = Config::load(Some(Path::new("/no/such.toml")), Vec::new()).unwrap_err();
    assert!(
        err.0.starts_with("config file /no/such.toml: "),
        "{}",
        err.0
    );
    assert_eq!(err.0.lines().count(), 1);
}

#[test]
fn an_unknown_key_should_be_named() {
    let err = load_str("[server]\nlisen = \"x\"\n", &[]).unwrap_err();
    assert!(err.0.contains("lisen"), "{}", err.0);
    assert!(err.0.contains("server"), "{}", err.0);
    let err = load_str("[sever]\nlisten = \"x\"\n", &[]).unwrap_err();
    assert!(err.0.contains("sever"), "{}", err.0);
    assert_eq!(err.0.lines().count(), 1);
}

#[test]
fn a_bad_value_should_name_its_key() {
    let err = load_str("[database]\nmax_connections = \"many\"\n", &[]).unwrap_err();
    assert!(err.0.starts_with("database.max_connections: "), "{}", err.0);
    let err = load_str("[idle]\ntimeout = \"soon\"\n", &[]).unwrap_err();
    assert!(err.0.starts_with("idle.timeout: "), "{}", err.0);
    let err = load_str("[database]\nmax_connections = 0\n", &[]).unwrap_err();
    assert!(
        err.0
            .starts_with("database.max_connections: 0 is out of range"),
        "{}",
        err.0
    );
    let err = load_str("[polling]\ncml_interval = \"0s\"\n", &[]).unwrap_err();
    assert!(err.0.starts_with("polling.cml_interval: "), "{}", err.0);
}

#[test]
fn the_runtimes_should_be_configurable_and_bad_values_named_with_their_source() {
    let c = load_str(
        "[server]\nthreads = 3\n[engine]\nthreads = 1\nnice = 5\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        (c.server.threads, c.engine.threads, c.engine.nice),
        (3, 1, 5)
    );
    let c = load_str("", &[]).unwrap();
    assert_eq!(
        (c.server.threads, c.engine.threads, c.engine.nice),
        (0, 0, 10)
    );
    let err = load_str("[engine]\nnice = 20\n", &[]).unwrap_err();
    assert!(
        err.0.starts_with("engine.nice: 20 is out of range"),
        "{}",
        err.0
    );
    let err = load_str("[engine]\nnice = -5\n", &[]).unwrap_err();
    assert!(
        err.0.starts_with("engine.nice: -5 is out of range"),
        "{}",
        err.0
    );
    let err = load_str("", &[("CCM_ENGINE__THREADS", "5000")]).unwrap_err();
    assert!(
        err.0.starts_with("engine.threads: 5000 is out of range")
            && err.0.contains("CCM_ENGINE__THREADS"),
        "{}",
        err.0
    );
    let err = load_str("[server]\nthreads = 2000\n", &[]).unwrap_err();
    assert!(err.0.starts_with("server.threads: "), "{}", err.0);
    let err = load_str("[engine]\npriority = 1\n", &[]).unwrap_err();
    assert!(err.0.contains("priority"), "{}", err.0);
}

#[test]
fn a_syntax_error_should_give_the_line() {
    let err = load_str("[server]\nlisten = \n", &[]).unwrap_err();
    assert!(err.0.contains("at line 2"), "{}", err.0);
}

#[test]
fn environment_variables_should_override_and_be_named_in_errors() {
    let c = load_str(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        &[
            ("CCM_SERVER__LISTEN", "127.0.0.2:9000"),
            ("CCM_DATABASE__MAX_CONNECTIONS", "3"),
            ("CCM_IDLE__DRY_RUN", "true"),
            ("CCM_TOKEN", "ignored"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.2:9000");
    assert_eq!(c.database.max_connections, 3);
    assert!(c.idle.dry_run);

    let err = load_str("", &[("CCM_DATABSE__PATH", "x.db")]).unwrap_err();
    assert!(err.0.contains("CCM_DATABSE__PATH"), "{}", err.0);
    let err = load_str("", &[("CCM_DATABASE__MAX_CONNECTIONS", "lots")]).unwrap_err();
    assert!(
        err.0.contains("database.max_connections")
            && err.0.contains("CCM_DATABASE__MAX_CONNECTIONS"),
        "{}",
        err.0
    );
}

#[test]
fn a_database_url_should_select_postgres_and_never_show_its_password() {
    let c = load_str(
        "[database]\nurl = \"postgres://ccm:s3cret-pw@db.internal:5432/ccm\"\n",
        &[],
    )
    .unwrap();
    match c.database.backend() {
        ccm_store::Backend::Postgres(url) => {
            assert!(url.expose().contains("s3cret-pw"));
            assert_eq!(url.to_string(), "postgres://ccm:***@db.internal:5432/ccm");
        }
        other => panic!("expected PostgreSQL, got {other:?}"),
    }
    let shown = toml::to_string_pretty(&c).unwrap();
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(format!("{c:?}").contains("ccm:***@"));
    assert!(!format!("{c:?}").contains("s3cret-pw"));

    // The environment works too, and the SQLite default stays when nothing is set.
    let c = load_str(
        "",
        &[("CCM_DATABASE__URL", "postgresql://ccm:s3cret-pw@db/ccm")],
    )
    .unwrap();
    assert!(matches!(
        c.database.backend(),
        ccm_store::Backend::Postgres(_)
    ));
    let c = load_str("", &[]).unwrap();
    assert_eq!(
        c.database.backend(),
        ccm_store::Backend::Sqlite(Path::new("ccm.db"))
    );
}

#[test]
fn a_bad_database_url_should_name_the_key_and_not_the_password() {
    for (text, env) in [
        (
            "[database]\nurl = \"mysql://ccm:s3cret-pw@db/ccm\"\n",
            vec![],
        ),
        (
            "",
            vec![("CCM_DATABASE__URL", "postgres://ccm:s3cret-pw@db:99999/ccm")],
        ),
        (
            "[database]\nurl = \"postgres://ccm:s3cret-pw@db\"\n",
            vec![],
        ),
    ] {
        let err = load_str(text, &env).unwrap_err();
        assert!(err.0.starts_with("database.url: "), "{}", err.0);
        assert!(!err.0.contains("s3cret-pw"), "{}", err.0);
        assert_eq!(err.0.lines().count(), 1, "{}", err.0);
        if !env.is_empty() {
            assert!(err.0.contains("CCM_DATABASE__URL"), "{}", err.0);
        }
    }
}

#[test]
fn path_and_url_together_should_be_refused_naming_both() {
    let err = load_str(
        "[database]\npath = \"x.db\"\nurl = \"postgres://ccm:pw@db/ccm\"\n",
        &[],
    )
    .unwrap_err();
    assert!(
        err.0.contains("database.path") && err.0.contains("database.url"),
        "{}",
        err.0
    );
    assert_eq!(err.0.lines().count(), 1);
}

#[test]
fn the_commented_webhooks_example_should_parse_and_validate() {
    let block: String = EXAMPLE
        .lines()
        .skip_while(|l| !l.starts_with("# [[webhooks]]"))
        .take_while(|l| l.starts_with("# "))
        .map(|l| {
            l.trim_start_matches("# ")
                .replace("\"...\"", "\"0123456789abcdef0123456789\"")
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(block.contains("allow_link_local"), "{block}");
    let config = load_str(&block, &[]).unwrap();
    assert_eq!(config.webhooks.len(), 1);
    let hook = &config.webhooks[0];
    assert_eq!(hook.name, "ops-chat");
    assert_eq!(hook.events.len(), 3);
    // Every key of an entry is in the example.
    let all = toml::Value::try_from(hook).unwrap();
    for key in all.as_table().unwrap().keys() {
        assert!(
            block.contains(&format!("{key} =")),
            "example lacks webhooks.{key}"
        );
    }
}

#[test]
fn a_bad_webhook_should_be_named_by_its_key() {
    let err = load_str(
        "[[webhooks]]\nname = \"x\"\nurl = \"http://169.254.169.254/\"\nsecret = \"0123456789abcdef0\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.0.starts_with("webhooks[0].url: "), "{}", err.0);
    let err = load_str(
        "[[webhooks]]\nname = \"x\"\nurl = \"https://h.example.com/\"\nsecret = \"short-secret\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.0.starts_with("webhooks[0].secret: "), "{}", err.0);
    assert!(!err.0.contains("short-secret"), "{}", err.0);
}
