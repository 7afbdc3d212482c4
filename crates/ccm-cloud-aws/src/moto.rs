//! A moto server (the AWS emulator) on loopback for tests: the crate's own tests and the
//! binary's end-to-end tests use it. Behind the `moto` feature; not part of ccm's runtime.
//!
//! moto is installed by `scripts/test` into `<repo>/.venv`; `CCM_MOTO_SERVER` points
//! elsewhere. When it cannot be found, [`Moto::start`] fails with the install lines: tests
//! that need it must never pass silently without it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The lines that install moto where the tests look for it.
pub const INSTALL_HINT: &str = "install moto first (./scripts/test does):\n    python3 -m venv <repo>/.venv\n    \
<repo>/.venv/bin/pip install 'moto[server]'\nor set CCM_MOTO_SERVER to a moto_server binary";

/// The AMIs the test moto offers (it then loads only these), as the simulated cloud does: two
/// CML controller releases of moto's own account (123456789012, `self`), a public Ubuntu image
/// of Canonical's, and a squatter — a newer public image of another account named like the
/// controller.
pub const AMIS_JSON: &str = r#"[
  {"ami_id": "ami-0c31c0de00290000a", "name": "cml-controller-2.9.0-1234-x86_64-2025-06-30",
   "description": "Cisco Modeling Labs 2.9.0 controller", "owner_id": "123456789012",
   "state": "available", "public": false, "architecture": "x86_64", "platform": null,
   "root_device_type": "ebs", "root_device_name": "/dev/sda1", "virtualization_type": "hvm",
   "hypervisor": "xen", "sriov": "simple", "image_type": "machine",
   "image_location": "123456789012/cml-controller-2.9.0", "creation_date": "2025-06-30T12:00:00.000Z"},
  {"ami_id": "ami-0c31c0de00281000b", "name": "cml-controller-2.8.1-14-x86_64-2025-01-15",
   "description": "Cisco Modeling Labs 2.8.1 controller", "owner_id": "123456789012",
   "state": "available", "public": false, "architecture": "x86_64", "platform": null,
   "root_device_type": "ebs", "root_device_name": "/dev/sda1", "virtualization_type": "hvm",
   "hypervisor": "xen", "sriov": "simple", "image_type": "machine",
   "image_location": "123456789012/cml-controller-2.8.1", "creation_date": "2025-01-15T12:00:00.000Z"},
  {"ami_id": "ami-0ab1ce0000000000c", "name": "ubuntu/images/hvm-ssd/ubuntu-noble-24.04-amd64-server-20250601",
   "description": "Canonical, Ubuntu, 24.04 LTS", "owner_id": "099720109477",
   "state": "available", "public": true, "architecture": "x86_64", "platform": null,
   "root_device_type": "ebs", "root_device_name": "/dev/sda1", "virtualization_type": "hvm",
   "hypervisor": "xen", "sriov": "simple", "image_type": "machine",
   "image_location": "099720109477/ubuntu", "creation_date": "2025-06-01T12:00:00.000Z"},
  {"ami_id": "ami-0bad5a0a70000000d", "name": "cml-controller-2.9.9-0000-x86_64-2025-12-01",
   "description": "Not Cisco: a public image named like the controller", "owner_id": "666666666666",
   "state": "available", "public": true, "architecture": "x86_64", "platform": null,
   "root_device_type": "ebs", "root_device_name": "/dev/sda1", "virtualization_type": "hvm",
   "hypervisor": "xen", "sriov": "simple", "image_type": "machine",
   "image_location": "666666666666/cml-controller-2.9.9", "creation_date": "2025-12-01T12:00:00.000Z"}
]"#;

/// Where `moto_server` is: `CCM_MOTO_SERVER`, else `<repo>/.venv/bin/moto_server`.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CCM_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server")
}

/// A moto server on 127.0.0.1 with a free port, killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _amis: tempfile::NamedTempFile,
}

impl Moto {
    /// Starts moto (AMI validation on, with [`AMIS_JSON`]) and waits, at most 30 s, until it
    /// answers. The error says how to install moto when it is missing.
    pub async fn start() -> Result<Moto, String> {
        Self::start_with(moto_binary()).await
    }

    /// As [`start`](Self::start), with the `moto_server` binary given (for a caller that must
    /// not look in this crate's source tree, such as `ccm bench`).
    pub async fn start_with(binary: PathBuf) -> Result<Moto, String> {
        if !binary.exists() {
            return Err(format!(
                "moto_server not found at {}; {INSTALL_HINT}",
                binary.display()
            ));
        }
        let mut amis = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
        std::io::Write::write_all(&mut amis, AMIS_JSON.as_bytes())
            .map_err(|e| format!("write amis: {e}"))?;
        // Port 0 cannot be passed to moto; take a free port and hand it over.
        let port = {
            let listener =
                std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
            listener
                .local_addr()
                .map_err(|e| format!("addr: {e}"))?
                .port()
        };
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .env("MOTO_AMIS_PATH", amis.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}; {INSTALL_HINT}", binary.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let moto = Moto {
            child,
            url: url.clone(),
            _amis: amis,
        };
        let client = reqwest::Client::new();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(r) = client.get(format!("{url}/moto-api/")).send().await
                    && r.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if ready.is_err() {
            return Err(format!("moto_server did not answer on {url} within 30 s"));
        }
        Ok(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
