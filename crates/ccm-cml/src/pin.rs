//! Certificate pinning: `tls = { fingerprint = "sha256:…" }` trusts exactly the CML controller
//! whose leaf certificate hashes to the configured SHA-256, whatever its issuer or names.
//!
//! This is the way for self-signed controllers (every real CML ships one) when no CA file can
//! be handed out: the pin replaces the CA and hostname checks, the handshake signatures are
//! still verified with the crypto provider's algorithms (so the server must hold the private
//! key of the pinned certificate), and validity dates are not checked (a self-signed CML
//! certificate is pinned, not trusted for its dates; re-pin when the controller gets a new
//! one).
//!
//! *Hand-written, and why:* rustls has no pinning verifier and reqwest none either; the
//! verifier is the four methods of rustls' `ServerCertVerifier`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The SHA-256 fingerprint of a DER certificate: `sha256:` and 32 bytes of hex, colons
/// between bytes optional (`sha256:AB:CD:…` or `sha256:abcd…`; the line
/// `openssl x509 -noout -fingerprint -sha256` prints, `sha256 Fingerprint=AB:CD:…`, is taken
/// as it is). Prints as `sha256:AB:CD:…`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

/// A fingerprint that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be \"sha256:\" and 64 hex digits (colons between bytes optional), e.g. \"sha256:AB:CD:…\"; {0}"
)]
pub struct InvalidFingerprint(&'static str);

impl CertFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// The 32 bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for CertFingerprint {
    type Err = InvalidFingerprint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        // `sha256:…`, or openssl's own line `sha256 Fingerprint=…` pasted as it is.
        let hex_part = ["sha256:", "sha256 fingerprint="]
            .iter()
            .find_map(|prefix| {
                s.get(..prefix.len())
                    .filter(|p| p.eq_ignore_ascii_case(prefix))
                    .map(|_| &s[prefix.len()..])
            })
            .ok_or(InvalidFingerprint("the \"sha256:\" prefix is missing"))?;
        let digits: String = if hex_part.contains(':') {
            let groups: Vec<&str> = hex_part.split(':').collect();
            if groups.iter().any(|g| g.len() != 2) {
                return Err(InvalidFingerprint(
                    "with colons, every byte must be two hex digits",
                ));
            }
            groups.concat()
        } else {
            hex_part.to_owned()
        };
        if digits.len() != 64 {
            return Err(InvalidFingerprint("a SHA-256 has 64 hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&digits, &mut out)
            .map_err(|_| InvalidFingerprint("not hex digits"))?;
        Ok(Self(out))
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for CertFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CertFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The server's certificate is not the pinned one. Carried inside the rustls error (as
/// `CertificateError::Other`) so that the transport can turn it into
/// [`CmlError::CertificateMismatch`](crate::CmlError::CertificateMismatch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the certificate is not the pinned one: expected {expected}, the server sent {seen}")]
pub(crate) struct PinMismatch {
    pub(crate) expected: CertFingerprint,
    pub(crate) seen: CertFingerprint,
}

/// Accepts exactly the leaf certificate with the pinned fingerprint; verifies the handshake
/// signatures with the provider's algorithms.
#[derive(Debug)]
pub(crate) struct PinnedCertVerifier {
    expected: CertFingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    pub(crate) fn new(expected: CertFingerprint, provider: Arc<CryptoProvider>) -> Self {
        Self { expected, provider }
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = CertFingerprint::of(end_entity);
        if seen == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(PinMismatch {
                    expected: self.expected,
                    seen,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client config that trusts exactly `pin` (TLS 1.2 and 1.3, HTTP/1.1 only).
pub(crate) fn client_config(pin: CertFingerprint) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier::new(pin, provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The pin mismatch somewhere in an error chain, if that is why it failed. Looks inside
/// nested `io::Error`s too: tokio-rustls wraps the rustls error in one, hyper in another, and
/// `io::Error::source` skips the error it wraps.
pub(crate) fn find_mismatch(error: &(dyn std::error::Error + 'static)) -> Option<PinMismatch> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    // Bounded: error chains are short; a cycle cannot be built from owned errors anyway.
    for _ in 0..32 {
        let mut node = source?;
        while let Some(inner) = node
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            node = inner;
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            node.downcast_ref::<rustls::Error>()
            && let Some(m) = other.0.downcast_ref::<PinMismatch>()
        {
            return Some(m.clone());
        }
        source = node.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";

    #[test]
    fn fingerprints_should_parse_with_or_without_colons_and_print_with_them() {
        let plain: CertFingerprint = format!("sha256:{HEX}").parse().unwrap();
        let with_colons = plain.to_string();
        assert!(with_colons.starts_with("sha256:00:11:22:"), "{with_colons}");
        assert_eq!(with_colons.len(), 7 + 32 * 3 - 1);
        assert_eq!(with_colons.parse::<CertFingerprint>().unwrap(), plain);
        assert_eq!(
            format!("SHA256:{}", HEX.to_lowercase())
                .parse::<CertFingerprint>()
                .unwrap(),
            plain
        );
        // What `openssl x509 -noout -fingerprint -sha256` prints (OpenSSL 3 and 1.1).
        for label in ["sha256 Fingerprint=", "SHA256 Fingerprint="] {
            let line = format!("{label}{}", &with_colons["sha256:".len()..]);
            assert_eq!(line.parse::<CertFingerprint>().unwrap(), plain);
        }
    }

    #[test]
    fn malformed_fingerprints_should_be_refused_saying_what_is_wanted() {
        for bad in [
            HEX.to_owned(),
            format!("md5:{HEX}"),
            format!("sha256:{}", &HEX[..62]),
            format!("sha256:{}zz", &HEX[..62]),
            "sha256:0:11:22".to_owned(),
            String::new(),
        ] {
            let err = bad.parse::<CertFingerprint>().unwrap_err();
            assert!(err.to_string().contains("sha256:"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_fingerprint_of_a_certificate_should_be_its_sha256() {
        // SHA-256 of the empty string, a known vector.
        let text = CertFingerprint::of(b"").to_string();
        assert_eq!(
            text["sha256:".len()..].replace(':', ""),
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        );
    }

    #[test]
    fn a_mismatch_should_be_found_inside_an_io_error() {
        let m = PinMismatch {
            expected: CertFingerprint::of(b"a"),
            seen: CertFingerprint::of(b"b"),
        };
        let rustls_error = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(m.clone()),
        )));
        // As reqwest hands it over: io::Error(Other) around io::Error(InvalidData) around it.
        let io = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls_error,
        ));
        assert_eq!(find_mismatch(&io), Some(m));
        assert_eq!(find_mismatch(&std::io::Error::other("no")), None);
    }
}
