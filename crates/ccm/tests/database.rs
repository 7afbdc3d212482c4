//! The `[database]` section as an operator meets it: `ccm config check` never prints the
//! PostgreSQL password, a bad URL exits 64 naming the key, an unreachable server is one clear
//! line, and `ccm serve` runs on a real PostgreSQL (Debian's package, started by the test).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::{Command, Stdio};
use std::time::Duration;

use ccm_store::testkit::TestPostgres;
use ccm_store::{PgStore, SettingsRepo, StoreConfig};
use serde_json::json;

mod common;
use common::{Api, free_port};

const CCM: &str = env!("CARGO_BIN_EXE_ccm");
const SECRET: &str = "s3cret-db-pw";
const TOKEN: &str = "ccm_db_e2e_admin_token_0123456789";
const VIEWER_TOKEN: &str = "ccm_db_e2e_viewer_token_0123456789";

fn ccm(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(CCM)
        .args(args)
        .env_remove("CCM_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_should_never_print_the_database_password() {
    let url = format!("postgres://ccm:{SECRET}@db.internal:5432/ccm?application_name=ccm");
    let (code, out, err) = ccm(&["config", "check"], &[("CCM_DATABASE__URL", &url)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("url = \"postgres://ccm:***@db.internal:5432/ccm"),
        "{out}"
    );
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
}

#[test]
fn a_bad_database_url_should_exit_64_naming_the_key() {
    let url = format!("postgres://ccm:{SECRET}@db.internal/ccm?sslmod=require");
    let (code, out, err) = ccm(&["config", "check"], &[("CCM_DATABASE__URL", &url)]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("database.url"), "{err}");
    assert!(err.contains("sslmod"), "{err}");
    assert!(!err.contains(SECRET) && !out.contains(SECRET), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn serve_should_say_in_one_line_that_the_database_is_unreachable() {
    // A port nobody listens on: refused at once, reported within acquire_timeout.
    let port = free_port();
    let url = format!("postgres://ccm:{SECRET}@127.0.0.1:{port}/ccm");
    let (code, out, err) = ccm(
        &["serve"],
        &[
            ("CCM_DATABASE__URL", &url),
            ("CCM_DATABASE__ACQUIRE_TIMEOUT", "2s"),
            ("CCM_SERVER__LISTEN", &format!("127.0.0.1:{}", free_port())),
            ("CCM_LOG__LEVEL", "warn"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("database.url") && err.contains("cannot connect to PostgreSQL"),
        "{err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}/ccm")), "{err}");
    assert!(!err.contains(SECRET) && !out.contains(SECRET), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_should_keep_its_state_in_postgres_when_given_a_url() {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let db = pg.create_database().await.unwrap();
    let moto = ccm_cloud_aws::moto::Moto::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[log]
level = "info"
[database]
url = "{url}"
[aws]
regions = ["us-east-1"]
endpoint_url = "{moto}"
access_key_id = "testing"
secret_access_key = "testing"
operation_timeout = "20s"
[auth]
tokens = [{{ name = "e2e", role = "admin", sha256 = "{hash}" }}, {{ name = "e2e-viewer", role = "viewer", sha256 = "{viewer}" }}]
[polling]
ec2_enabled = false
cml_enabled = false
metrics_enabled = false
labs_enabled = false
activity_enabled = false
"#,
        url = db.expose(),
        moto = moto.url,
        hash = ccm_api::hash_token(TOKEN),
        viewer = ccm_api::hash_token(VIEWER_TOKEN),
    );
    let path = dir.path().join("ccm.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(CCM)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("CCM_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let api = Api::new(port, TOKEN);
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = api.http.get(format!("{}/readyz", api.base)).send().await
            && r.status().is_success()
        {
            ready = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ready, "ccm serve never became ready:\n{}", logged());

    // A settings change through the API lands in PostgreSQL, not in a file.
    let resp = api
        .http
        .patch(format!("{}/api/v1/settings", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"idle": {"dry_run": true}}).to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());

    // On PostgreSQL `ccm serve` is a replica of a cluster (of one here): a viewer sees it in
    // `/system/replicas` (live, this one, holding every partition); an anonymous caller is
    // refused.
    let replicas = format!("{}/api/v1/system/replicas", api.base);
    let r = api
        .http
        .get(&replicas)
        .bearer_auth(VIEWER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r: serde_json::Value = r.json().await.unwrap();
    assert_eq!(r["mode"], "cluster", "{r}");
    assert!(r["lease_ttl_seconds"].as_f64().unwrap() > 0.0, "{r}");
    let partitions = r["partitions"].as_u64().unwrap();
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{r}");
    let me = &items[0];
    assert_eq!(
        (me["this"].clone(), me["live"].clone()),
        (json!(true), json!(true)),
        "{r}"
    );
    assert!(me["heartbeat_age_seconds"].as_f64().unwrap() >= 0.0, "{r}");
    assert!(me["id"].as_str().is_some_and(|id| !id.is_empty()), "{r}");
    assert!(me["jobs"].is_array() && me["workers"].is_u64(), "{r}");
    assert!(me["partitions"].as_u64().unwrap() <= partitions, "{r}");
    let anonymous = api.http.get(&replicas).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !dir.path().join("ccm.db").exists(),
        "no SQLite file next to it"
    );
    let store = PgStore::connect(&db, &StoreConfig::default())
        .await
        .unwrap();
    let settings = store.runtime_settings().await.unwrap();
    assert_eq!(settings.version, 1);
    assert!(settings.value.idle.dry_run);
    let text = logged();
    assert!(text.contains("store: PostgreSQL"), "{text}");
    assert!(
        !text.contains(pg.password()),
        "the password leaked:\n{text}"
    );
}
