//! `ccm config check` with every secret set — from a config file and from `CCM_*` environment
//! variables — prints the configuration with each secret masked, and never a secret's text,
//! on stdout or stderr. A secret of the wrong type is refused naming its key, not its value.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::{Command, Output};

const CCM: &str = env!("CARGO_BIN_EXE_ccm");

/// Every secret the configuration holds, with a value that appears nowhere else.
const SECRETS: [(&str, &str, &str); 4] = [
    // (section, key, value)
    ("cml", "password", "CmlPassw0rd-7f3a"),
    ("aws", "secret_access_key", "AwsSecretAccessKey-91c2"),
    ("aws", "session_token", "AwsSessionToken-5be8"),
    ("auth.oidc", "client_secret", "OidcClientSecret-0d44"),
];

/// What the secrets need beside them to be a valid configuration.
const OTHERS: [(&str, &str, &str); 3] = [
    ("aws", "access_key_id", "AKIDCONFIGCHECK"),
    ("auth.oidc", "issuer", "https://sso.example.com/realms/labs"),
    ("auth.oidc", "audience", "ccm"),
];

fn run(args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(CCM);
    cmd.args(args);
    // Nothing from the test runner's environment may leak into the config.
    for (name, _) in std::env::vars() {
        if name.starts_with("CCM_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().unwrap()
}

fn env_name(section: &str, key: &str) -> String {
    format!(
        "CCM_{}__{}",
        section.replace('.', "__").to_uppercase(),
        key.to_uppercase()
    )
}

fn assert_masked(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    for (_, key, value) in SECRETS {
        assert!(!stdout.contains(value), "{key} in stdout:\n{stdout}");
        assert!(!stderr.contains(value), "{key} in stderr:\n{stderr}");
        // The key is there, masked: the secret was read, not left out.
        assert!(
            stdout.contains(&format!("{key} = \"***\"")),
            "{key} not masked in:\n{stdout}"
        );
    }
    // What is not secret is shown.
    assert!(stdout.contains("AKIDCONFIGCHECK"), "{stdout}");
}

#[test]
fn config_check_should_mask_every_secret_set_in_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ccm.toml");
    let mut text = String::new();
    for section in ["cml", "aws", "auth.oidc"] {
        text.push_str(&format!("[{section}]\n"));
        for (s, key, value) in SECRETS.iter().chain(OTHERS.iter()) {
            if *s == section {
                text.push_str(&format!("{key} = \"{value}\"\n"));
            }
        }
    }
    std::fs::write(&path, text).unwrap();
    let out = run(
        &["--config", path.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_masked(&out);
}

#[test]
fn config_check_should_mask_every_secret_set_in_the_environment() {
    let env: Vec<(String, String)> = SECRETS
        .iter()
        .chain(OTHERS.iter())
        .map(|(section, key, value)| (env_name(section, key), (*value).to_owned()))
        .collect();
    let out = run(&["config", "check"], &env);
    assert_masked(&out);
}

#[test]
fn a_numeric_password_in_the_environment_should_be_refused_without_echoing_it() {
    let out = run(
        &["config", "check"],
        &[("CCM_CML__PASSWORD".to_owned(), "73914682".to_owned())],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        !stdout.contains("73914682") && !stderr.contains("73914682"),
        "{stderr}"
    );
    assert!(stderr.contains("cml.password"), "{stderr}");
    assert!(stderr.contains("CCM_CML__PASSWORD"), "{stderr}");
}
