//! TLS for `--tls`: a generated CA (rcgen) and server certificates that cover the worker IPs,
//! served with tokio-rustls (aws-lc-rs).
//!
//! One certificate covers a block of 16 consecutive worker addresses (16 IP SANs), so a fleet
//! of 10,000 workers needs 625 certificates, each made on the first handshake of its block. The
//! certificate stays about the size of a CML controller's own (~1 KB; 256 SANs made it ~4 KB,
//! which a client keeping TLS sessions for the whole fleet holds once per session).
//! Shard processes rebuild the same issuer from the CA key and the fixed CA parameters, so
//! every shard signs with the one CA that the client trusts.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use parking_lot::Mutex;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use tokio_rustls::TlsAcceptor;

use crate::SimError;

/// Workers per certificate.
const BLOCK: usize = 16;

/// The CA certificate and key, as passed from the parent to shard processes.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct CaMaterial {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial").finish_non_exhaustive()
    }
}

fn tls_err(e: impl fmt::Display) -> SimError {
    SimError::Tls(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ccm-sim CA");
    dn.push(DnType::OrganizationName, "ccm CML simulator");
    p.distinguished_name = dn;
    p
}

impl CaMaterial {
    /// A fresh CA.
    pub(crate) fn generate() -> Result<CaMaterial, SimError> {
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = ca_params().self_signed(&key).map_err(tls_err)?;
        Ok(CaMaterial {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Everything a fleet needs to serve TLS.
pub(crate) struct TlsMaterial {
    ca: CaMaterial,
    issuer: Issuer<'static, KeyPair>,
    server_key: KeyPair,
    listen_base: Ipv4Addr,
    http2: bool,
    provider: Arc<CryptoProvider>,
    blocks: Mutex<HashMap<usize, TlsAcceptor>>,
}

impl TlsMaterial {
    /// `http2`: offer `h2` by ALPN before `http/1.1`.
    pub(crate) fn new(
        ca: CaMaterial,
        listen_base: Ipv4Addr,
        http2: bool,
    ) -> Result<TlsMaterial, SimError> {
        let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(tls_err)?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let server_key = KeyPair::generate().map_err(tls_err)?;
        Ok(TlsMaterial {
            ca,
            issuer,
            server_key,
            listen_base,
            http2,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            blocks: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The acceptor for the worker with this fleet-wide index.
    pub(crate) fn acceptor(&self, index: usize) -> Result<TlsAcceptor, SimError> {
        let block = index / BLOCK;
        if let Some(a) = self.blocks.lock().get(&block) {
            return Ok(a.clone());
        }
        let acceptor = self.make_block(block)?;
        Ok(self.blocks.lock().entry(block).or_insert(acceptor).clone())
    }

    fn make_block(&self, block: usize) -> Result<TlsAcceptor, SimError> {
        let base = u32::from(self.listen_base);
        let sans: Vec<SanType> = (block * BLOCK..(block + 1) * BLOCK)
            .filter_map(|i| u32::try_from(i).ok().and_then(|i| base.checked_add(i)))
            .map(|ip| SanType::IpAddress(IpAddr::V4(Ipv4Addr::from(ip))))
            .collect();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "cml-controller");
        params.distinguished_name = dn;
        let cert = params
            .signed_by(&self.server_key, &self.issuer)
            .map_err(tls_err)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.serialize_der()));
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        // Stateless session tickets (RFC 5077 construction), as CML's nginx issues them by
        // default (`ssl_session_tickets on`): a client that keeps them resumes without the
        // certificate, and the server keeps no per-session state (rustls' default stateful
        // cache holds 256 sessions, far fewer than a shard's workers). TLS 1.3 sends two
        // tickets per full handshake, like OpenSSL.
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(tls_err)?;
        // Without `http2` no ALPN is configured, so a client that offers h2 falls back to
        // HTTP/1.1 (a server that knows no ALPN at all, the strictest fallback case).
        if self.http2 {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}
