//! Where webhooks may not connect (SSRF guard) and the HTTP client that enforces it at every
//! connection: a DNS resolver that drops refused addresses, no redirects, no proxies.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// AWS's instance metadata service over IPv6 (IMDS).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Why ccm never connects a webhook to `ip`, or `None` when it may. Loopback and private
/// ranges are allowed (receivers are often internal); link-local is allowed only with
/// `allow_link_local`.
pub(crate) fn refused_address(ip: IpAddr, allow_link_local: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() || v4.octets()[0] == 0 {
                Some("unspecified")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_link_local() && !allow_link_local {
                Some("link-local (the cloud metadata service lives there)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6 == AWS_METADATA_V6 && !allow_link_local {
                Some("the cloud metadata service")
            } else if (v6.segments()[0] & 0xffc0) == 0xfe80 && !allow_link_local {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

/// Resolves with the system resolver, then drops every refused address; none left is an
/// error naming the host (so a name that resolves to the metadata service never connects).
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    allow_link_local: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_link_local;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| refused_address(a.ip(), allow).is_none())
                .collect();
            if kept.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| refused_address(a.ip(), allow))
                    .unwrap_or("unresolvable");
                return Err(format!("{host} resolves only to refused addresses ({why})").into());
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client of one webhook.
pub(crate) fn client(
    timeout: Duration,
    allow_link_local: bool,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow_link_local }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout)
        .pool_max_idle_per_host(2)
        .user_agent(concat!("ccm/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_addresses_should_be_refused_unless_allowed() {
        for ip in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(refused_address(ip, false).is_some(), "{ip}");
            assert!(refused_address(ip, true).is_none(), "{ip} allowed");
        }
        for ip in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.5", "ff02::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(refused_address(ip, true).is_some(), "{ip} always refused");
        }
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "192.168.1.2",
            "93.184.216.34",
            "::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(refused_address(ip, false).is_none(), "{ip}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_should_not_connect() {
        // `localhost` resolves to loopback (allowed); a literal that resolves to itself shows
        // the guard on the resolver path, which IP literals in URLs bypass (checked at config).
        let r = GuardedResolver {
            allow_link_local: false,
        };
        let ok = r.resolve("localhost".parse().unwrap()).await;
        assert!(ok.is_ok());
        let refused = r.resolve("169.254.169.254".parse().unwrap()).await;
        let err = refused.err().expect("refused").to_string();
        assert!(err.contains("refused"), "{err}");
    }
}
