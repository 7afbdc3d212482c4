//! The transport: one `reqwest::Client` per distinct TLS mode (built once, shared by every
//! worker that uses the mode), body reading with a size cap, and the mapping of transport
//! failures to [`CmlError`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;

use crate::config::{CmlConfig, CmlConfigError};
use crate::endpoint::Endpoint;
use crate::error::{CmlError, scrub};
use crate::target::TlsMode;

/// Connection-pool settings shared by every client.
#[derive(Debug, Clone)]
struct PoolSettings {
    user_agent: String,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    tls_session_cache: usize,
    http2: bool,
}

/// The `reqwest` clients, one per TLS mode. The config's mode is built eagerly (so a bad CA
/// file fails at start); another mode is built on first use and then reused.
#[derive(Debug)]
pub(crate) struct HttpClients {
    settings: PoolSettings,
    default_mode: TlsMode,
    default: reqwest::Client,
    /// For `http://` workers: `[cml] plain_pool_max_idle_per_host` idle connections per
    /// worker (the default client's clone when that equals `pool_max_idle_per_host`). Never
    /// given an `https://` URL; its TLS settings are the default mode's all the same.
    plain: reqwest::Client,
    others: RwLock<HashMap<TlsMode, reqwest::Client>>,
}

impl HttpClients {
    pub(crate) fn new(config: &CmlConfig, user_agent: String) -> Result<Self, CmlConfigError> {
        let settings = PoolSettings {
            user_agent,
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle_per_host: config.pool_max_idle_per_host,
            tls_session_cache: config.tls_session_cache,
            http2: config.http2,
        };
        let default_mode = TlsMode::from(&config.tls);
        let default = build(&settings, &default_mode)?;
        let plain = if config.plain_pool_max_idle_per_host == settings.pool_max_idle_per_host {
            default.clone()
        } else {
            let plain_settings = PoolSettings {
                pool_max_idle_per_host: config.plain_pool_max_idle_per_host,
                ..settings.clone()
            };
            build(&plain_settings, &default_mode)?
        };
        Ok(Self {
            settings,
            default_mode,
            default,
            plain,
            others: RwLock::new(HashMap::new()),
        })
    }

    /// The client for a worker at `base_url` whose TLS mode is `mode`: the plain-HTTP client
    /// for an `http://` URL, the mode's client otherwise.
    pub(crate) fn for_url(
        &self,
        base_url: &str,
        mode: &TlsMode,
    ) -> Result<reqwest::Client, CmlConfigError> {
        if is_plain_http(base_url) {
            return Ok(self.plain.clone());
        }
        self.get(mode)
    }

    /// The client for `mode` (a clone is an `Arc` clone).
    pub(crate) fn get(&self, mode: &TlsMode) -> Result<reqwest::Client, CmlConfigError> {
        if *mode == self.default_mode {
            return Ok(self.default.clone());
        }
        if let Some(c) = self.others.read().get(mode) {
            return Ok(c.clone());
        }
        // Built outside the lock: reading a CA file is blocking I/O, done once per mode.
        let client = build(&self.settings, mode)?;
        Ok(self
            .others
            .write()
            .entry(mode.clone())
            .or_insert(client)
            .clone())
    }

    /// The connect timeout, for errors.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.settings.connect_timeout
    }
}

/// The `reqwest` client that [`CmlClient`](crate::CmlClient) uses for workers at `base_url`
/// under `config`: the same pool (over plain HTTP `plain_pool_max_idle_per_host`), TLS and
/// session-cache settings, with ccm's `User-Agent`. For measuring the transport alone (`ccm
/// bench sync --floor`), never for calling CML beside the client.
pub fn http_client(config: &CmlConfig, base_url: &str) -> Result<reqwest::Client, CmlConfigError> {
    let clients = HttpClients::new(config, user_agent(None))?;
    Ok(if is_plain_http(base_url) {
        clients.plain
    } else {
        clients.default
    })
}

/// How the four calls of one sync go out to a worker, so that a sync uses one connection
/// wherever the transport allows it ([`sync_order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOrder {
    /// HTTPS with `[cml] http2` on (HTTP/2 by ALPN) and a pool that keeps the connection
    /// (`pool_max_idle_per_host` ≥ 1): the first call alone, then the other three at once as
    /// streams on its connection (two round trips, one connection and one handshake).
    FirstThenStreams,
    /// HTTP/1.1 with a pool: plain HTTP (`plain_pool_max_idle_per_host` ≥ 1), or HTTPS with
    /// `[cml] http2` off (`pool_max_idle_per_host` ≥ 1). The calls one after another on one
    /// kept-alive connection, the last one closing it (`Connection: close`), so that nothing
    /// idles after the sync (four round trips, one connection and one handshake; the engine
    /// syncs twice as many such workers at once, [`SyncOrder::gate_slots`]).
    OneByOne,
    /// No pool to share a connection through (or HTTPS without HTTP/2): every overlapped call
    /// needs a connection of its own anyway, so all four go at once (one round trip).
    AllAtOnce,
}

impl SyncOrder {
    /// The `cml_poll` call slots the engine's gate reserves for one worker's sync: room for
    /// all four calls at once, and half that one by one (one call in flight), so that twice as
    /// many plain-HTTP workers sync at once and hide the round trips in a row. Not four times
    /// as many: at 10,000 workers that was slower and ~3 MB larger (more tasks and
    /// connections in flight than two cores serve; BENCHMARKS.md, issue 13 round 5).
    pub fn gate_slots(self) -> usize {
        match self {
            Self::OneByOne => 2,
            Self::FirstThenStreams | Self::AllAtOnce => 4,
        }
    }
}

/// The [`SyncOrder`] of a sync of the worker at `base_url` under `config`.
pub fn sync_order(config: &CmlConfig, base_url: &str) -> SyncOrder {
    OrderSettings::of(config).order(base_url)
}

/// What [`sync_order`] needs of the config (kept by the client).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrderSettings {
    /// `http2` on.
    http2: bool,
    /// `pool_max_idle_per_host` ≥ 1 (HTTPS).
    tls_pool: bool,
    /// `plain_pool_max_idle_per_host` ≥ 1.
    plain_pool: bool,
}

impl OrderSettings {
    pub(crate) fn of(config: &CmlConfig) -> Self {
        Self {
            http2: config.http2,
            tls_pool: config.pool_max_idle_per_host > 0,
            plain_pool: config.plain_pool_max_idle_per_host > 0,
        }
    }

    pub(crate) fn order(self, base_url: &str) -> SyncOrder {
        let base_url = base_url.trim_start();
        if is_plain_http(base_url) {
            if self.plain_pool {
                SyncOrder::OneByOne
            } else {
                SyncOrder::AllAtOnce
            }
        } else if self.tls_pool && is_https(base_url) {
            if self.http2 {
                SyncOrder::FirstThenStreams
            } else {
                SyncOrder::OneByOne
            }
        } else {
            SyncOrder::AllAtOnce
        }
    }
}

/// Whether `base_url` starts with `http://` (any case).
fn is_plain_http(base_url: &str) -> bool {
    base_url
        .trim_start()
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

/// Whether `base_url` starts with `https://` (any case).
pub(crate) fn is_https(base_url: &str) -> bool {
    base_url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The `User-Agent` of ccm's CML requests: `ccm/<version>`, and on one replica of several
/// `ccm/<version> (replica <id>)`, so that a CML log (or the simulator's counters) tells which
/// replica polled a worker.
pub fn user_agent(replica: Option<&str>) -> String {
    match replica {
        Some(id) => format!("ccm/{} (replica {id})", env!("CARGO_PKG_VERSION")),
        None => concat!("ccm/", env!("CARGO_PKG_VERSION")).to_owned(),
    }
}

fn build(settings: &PoolSettings, mode: &TlsMode) -> Result<reqwest::Client, CmlConfigError> {
    let builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.as_str())
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(60))
        // CML workers are reached directly; a proxy from the environment would only surprise.
        .no_proxy()
        // Never follow a redirect: a 307/308 on a login would re-send the password to
        // whatever host and scheme it names. A 3xx is `CmlError::Redirect`.
        .redirect(reqwest::redirect::Policy::none());
    // HTTP/2 only by ALPN, never by prior knowledge: a worker that does not offer it (or a
    // plain-HTTP simulator) is spoken to in HTTP/1.1.
    let builder = if settings.http2 {
        builder
    } else {
        builder.http1_only()
    };
    let builder = match mode {
        // Trusts anything: no verifier to configure, reqwest's own config (and its default
        // session cache) is as good as any.
        TlsMode::Insecure => builder.tls_danger_accept_invalid_certs(true),
        _ => builder.tls_backend_preconfigured(tls_config(settings, mode)?),
    };
    builder
        .build()
        .map_err(|e| CmlConfigError::Client(e.to_string()))
}

/// The rustls config of a verifying TLS mode: reqwest's own choices (aws-lc-rs, TLS 1.2 and
/// 1.3, ALPN `h2` and `http/1.1`, or `http/1.1` alone without `http2`) with the mode's verifier, plus a session cache sized to the fleet
/// ([`fleet_session_cache`]) so that a worker's next connection resumes its session (no
/// certificate sent, signed or verified) instead of a full handshake.
fn tls_config(
    settings: &PoolSettings,
    mode: &TlsMode,
) -> Result<rustls::ClientConfig, CmlConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_err = |what: &str, e: rustls::Error| CmlConfigError::Client(format!("{what}: {e}"));
    let mut config = match mode {
        TlsMode::Pinned(pin) => crate::pin::client_config(*pin)
            .map_err(|e| client_err("tls for the pinned certificate", e))?,
        TlsMode::CaFile(path) => {
            let bad = |reason: String| CmlConfigError::CaFile {
                path: path.to_path_buf(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not a PEM certificate bundle: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad("holds no certificate".to_owned()));
            }
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| client_err("tls", e))?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        // (`Insecure` is reqwest's own config, see `build`.)
        TlsMode::Verify | TlsMode::Insecure => {
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| client_err("tls with the system's roots", e))?;
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| client_err("tls", e))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = if settings.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.resumption = fleet_session_cache(settings.tls_session_cache);
    Ok(config)
}

/// Session resumption for `workers` controllers ([`FleetSessionCache`]). rustls' default cache
/// holds 256 sessions, so in a fleet of thousands every connection paid a full handshake
/// (certificate chain sent, signed and verified). 0 turns resumption off.
///
/// [`FleetSessionCache`]: crate::sessions::FleetSessionCache
fn fleet_session_cache(workers: usize) -> rustls::client::Resumption {
    if workers == 0 {
        return rustls::client::Resumption::disabled();
    }
    rustls::client::Resumption::store(Arc::new(crate::sessions::FleetSessionCache::new(workers)))
}

/// Reads a response body, refusing more than `limit` bytes. A body that arrives in one chunk
/// (the common case) is returned without a copy.
pub(crate) async fn read_body(
    resp: &mut reqwest::Response,
    endpoint: Endpoint,
    limit: usize,
    connect_timeout: Duration,
) -> Result<Bytes, CmlError> {
    let too_large = || CmlError::BodyTooLarge { endpoint, limit };
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(endpoint, &e, connect_timeout))?
    {
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Err(too_large());
        }
        match (&mut first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(f.len() + chunk.len());
                buf.extend_from_slice(f);
                buf.extend_from_slice(&chunk);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// Maps a `reqwest` failure to a typed error. The detail is the error chain, shortened and
/// scrubbed (URLs here carry no credentials, since `Target` rejects user info).
pub(crate) fn transport_error(
    endpoint: Endpoint,
    error: &reqwest::Error,
    connect_timeout: Duration,
) -> CmlError {
    if let Some(m) = crate::pin::find_mismatch(error) {
        return CmlError::CertificateMismatch {
            endpoint,
            expected: m.expected,
            seen: m.seen,
        };
    }
    let detail = chain_text(error);
    if is_tls(error) {
        CmlError::Tls { endpoint, detail }
    } else if error.is_timeout() {
        CmlError::Timeout {
            endpoint,
            after: connect_timeout,
        }
    } else if error.is_connect() {
        CmlError::Connect { endpoint, detail }
    } else if error.is_builder() {
        CmlError::InvalidArgument { endpoint, detail }
    } else {
        CmlError::Request { endpoint, detail }
    }
}

fn chain_text(error: &reqwest::Error) -> String {
    let mut text = error.without_url_text();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    let short: String = text.chars().take(200).collect();
    scrub(&short)
}

/// Whether a rustls error is somewhere in the chain (directly, or inside an `io::Error`).
fn is_tls(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls handshake") {
            return true;
        }
        source = s.source();
    }
    false
}

/// `reqwest::Error`'s message without the URL (the URL is in the error's context already).
trait WithoutUrlText {
    fn without_url_text(&self) -> String;
}

impl WithoutUrlText for reqwest::Error {
    fn without_url_text(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            let u = url.as_str();
            text = text.replace(&format!(" for url ({u})"), "");
            text = text.replace(u, "");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::{SyncOrder, sync_order, user_agent};
    use crate::CmlConfig;

    #[test]
    fn a_syncs_order_should_follow_the_scheme_http2_and_the_pools() {
        let default = CmlConfig::default();
        assert!(
            !default.http2
                && default.pool_max_idle_per_host > 0
                && default.plain_pool_max_idle_per_host > 0,
            "the defaults share one HTTP/1.1 connection per sync on either scheme"
        );
        assert_eq!(
            sync_order(&default, "https://10.0.0.5"),
            SyncOrder::OneByOne
        );
        assert_eq!(sync_order(&default, "http://10.0.0.5"), SyncOrder::OneByOne);
        let on = CmlConfig {
            http2: true,
            ..CmlConfig::default()
        };
        assert_eq!(
            sync_order(&on, "https://10.0.0.5"),
            SyncOrder::FirstThenStreams
        );
        assert_eq!(
            sync_order(&on, "HTTPS://10.0.0.5:8443"),
            SyncOrder::FirstThenStreams
        );
        assert_eq!(sync_order(&on, "http://10.0.0.5"), SyncOrder::OneByOne);
        assert_eq!(sync_order(&on, " HTTP://10.0.0.5"), SyncOrder::OneByOne);
        assert_eq!(sync_order(&on, "https:/"), SyncOrder::AllAtOnce);
        let no_h2 = CmlConfig {
            http2: false,
            ..CmlConfig::default()
        };
        assert_eq!(sync_order(&no_h2, "https://10.0.0.5"), SyncOrder::OneByOne);
        let no_h2_no_pool = CmlConfig {
            http2: false,
            pool_max_idle_per_host: 0,
            ..CmlConfig::default()
        };
        assert_eq!(
            sync_order(&no_h2_no_pool, "https://10.0.0.5"),
            SyncOrder::AllAtOnce
        );
        assert_eq!(sync_order(&no_h2, "http://10.0.0.5"), SyncOrder::OneByOne);
        let no_pool = CmlConfig {
            pool_max_idle_per_host: 0,
            ..CmlConfig::default()
        };
        assert_eq!(
            sync_order(&no_pool, "https://10.0.0.5"),
            SyncOrder::AllAtOnce
        );
        assert_eq!(sync_order(&no_pool, "http://10.0.0.5"), SyncOrder::OneByOne);
        let no_plain_pool = CmlConfig {
            plain_pool_max_idle_per_host: 0,
            ..on.clone()
        };
        assert_eq!(
            sync_order(&no_plain_pool, "http://10.0.0.5"),
            SyncOrder::AllAtOnce
        );
        assert_eq!(
            sync_order(&no_plain_pool, "https://10.0.0.5"),
            SyncOrder::FirstThenStreams
        );
        assert_eq!(SyncOrder::OneByOne.gate_slots(), 2);
        assert_eq!(SyncOrder::FirstThenStreams.gate_slots(), 4);
    }

    #[test]
    fn the_user_agent_should_name_the_replica_only_on_a_replica() {
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(user_agent(None), format!("ccm/{version}"));
        assert_eq!(
            user_agent(Some("ccm-a")),
            format!("ccm/{version} (replica ccm-a)")
        );
        // A valid header value (reqwest refuses others when the client is built).
        assert!(reqwest::header::HeaderValue::from_str(&user_agent(Some("r-1.a_b"))).is_ok());
    }
}
