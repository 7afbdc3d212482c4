//! HTTPS on the listener itself (`[server] tls_cert`, `tls_key`): the certificate chain and
//! private key are read from PEM files once, when the API state is built, into a rustls
//! server configuration (TLS 1.2 and 1.3, aws-lc-rs, HTTP/1.1 by ALPN). Every problem is a
//! configuration error naming the key and the file — never the key's contents.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, ServerConfig};

fn error(key: &str, path: &Path, message: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        key: format!("server.{key}"),
        message: format!("{}: {message}", path.display()),
    }
}

/// What a PEM read failure means, without echoing file contents.
fn describe(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => format!("cannot read: {io}"),
        E::NoItemsFound => "holds no PEM item of the expected kind".to_owned(),
        _ => "is not valid PEM".to_owned(),
    }
}

/// The acceptor for `server`, or `None` when TLS is off.
pub(crate) fn acceptor(server: &ServerConfig) -> Result<Option<TlsAcceptor>, ConfigError> {
    let (Some(cert_path), Some(key_path)) = (&server.tls_cert, &server.tls_key) else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| error("tls_cert", cert_path, describe(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("tls_cert", cert_path, describe(&e)))?;
    if certs.is_empty() {
        return Err(error("tls_cert", cert_path, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| error("tls_key", key_path, describe(&e)))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error("tls_cert", cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            error(
                "tls_key",
                key_path,
                format!("cannot be used with server.tls_cert: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let c = dir.join("cert.pem");
        let k = dir.join("key.pem");
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_certificate_and_its_key_should_make_an_acceptor() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = files(dir.path());
        let server = ServerConfig {
            tls_cert: Some(c),
            tls_key: Some(k),
            ..ServerConfig::default()
        };
        assert!(acceptor(&server).unwrap().is_some());
        assert!(acceptor(&ServerConfig::default()).unwrap().is_none());
    }

    #[test]
    fn unusable_tls_files_should_be_errors_naming_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = files(dir.path());
        let (_, other_key) = {
            let d2 = dir.path().join("other");
            std::fs::create_dir(&d2).unwrap();
            files(&d2)
        };
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "secret-looking-bytes").unwrap();
        let missing = dir.path().join("missing.pem");
        let cases = [
            (missing.clone(), k.clone(), "server.tls_cert", "cannot read"),
            (garbage.clone(), k.clone(), "server.tls_cert", "no"),
            (c.clone(), missing.clone(), "server.tls_key", "cannot read"),
            (c.clone(), garbage.clone(), "server.tls_key", "no"),
            (c.clone(), other_key, "server.tls_key", "cannot be used"),
        ];
        for (cert, key, want_key, want_text) in cases {
            let server = ServerConfig {
                tls_cert: Some(cert.clone()),
                tls_key: Some(key.clone()),
                ..ServerConfig::default()
            };
            let err = acceptor(&server).err().unwrap();
            assert_eq!(err.key, want_key, "{err}");
            let named = if want_key.ends_with("cert") {
                &cert
            } else {
                &key
            };
            assert!(err.message.contains(&named.display().to_string()), "{err}");
            assert!(err.message.contains(want_text), "{err}");
            assert!(!err.to_string().contains("secret-looking-bytes"));
        }
    }
}
