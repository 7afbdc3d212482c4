//! [`FleetSessionCache`]: the TLS session store of the fleet's client, sized in workers.
//!
//! *Hand-written, and why:* rustls' `ClientSessionMemoryCache` keeps up to eight single-use
//! TLS 1.3 tickets per server, each with its own copy of the server's certificate chain, and
//! counts its capacity in tickets. At 10,000 workers sized to hold every worker it grew to
//! ~220 MB (BENCHMARKS.md, "TLS"). A sync needs at most one ticket per overlapped call, so this
//! store keeps at most [`TICKETS_PER_WORKER`] per worker (the newest), for at most `workers`
//! workers (the oldest worker entry is dropped first) — and only one per worker until that
//! worker has shown it needs more (see [`TICKETS_PER_WORKER`]).

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;

/// Most tickets kept per worker. A sync opens one connection to a worker that speaks HTTP/2
/// (one ticket), and at most three over HTTP/1.1: the first, whose handshake brings two fresh
/// tickets (a CML nginx, like the simulator, sends two per handshake) before the other two
/// connect, so two kept tickets let every connection of a sync resume. Each ticket holds its
/// own copy of the worker's certificate chain (~1–1.5 KB), so this bounds the store's size.
///
/// A worker starts with one kept ticket, all an HTTP/2 sync needs (at 10,000 workers the
/// second one cost ~13 MB); the first time a connection finds the worker's tickets used up
/// (a second connection at once: HTTP/1.1, or a sync whose first call outlived the pool's
/// idle timeout), that connection pays a full handshake and the worker keeps two from then on.
pub(crate) const TICKETS_PER_WORKER: usize = 2;

/// One worker's sessions: ~10,000 of them, most with one TLS 1.3 ticket, held in the map
/// itself (40 bytes; the TLS 1.2 session, ~140 bytes and rare with CML, is boxed).
#[derive(Default)]
struct Entry {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Box<Tls12ClientSessionValue>>,
    /// Oldest first; at most [`Entry::keep`] (its capacity is exact: no spare slots).
    tls13: Vec<Tls13ClientSessionValue>,
    /// A ticket was stored once (so an empty `tls13` means used up, not never received).
    had_ticket: bool,
    /// A connection found the tickets used up: keep [`TICKETS_PER_WORKER`] from now on.
    wants_more: bool,
}

impl Entry {
    /// Tickets kept for this worker now.
    fn keep(&self) -> usize {
        if self.wants_more {
            TICKETS_PER_WORKER
        } else {
            1
        }
    }
}

#[derive(Default)]
struct Inner {
    entries: HashMap<ServerName<'static>, Entry>,
    /// Workers in the order they were first stored, for eviction.
    order: VecDeque<ServerName<'static>>,
}

/// TLS sessions for up to `workers` workers (see the module docs).
pub(crate) struct FleetSessionCache {
    workers: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for FleetSessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSessionCache")
            .field("workers", &self.workers)
            .field("held", &self.inner.lock().entries.len())
            .finish()
    }
}

impl FleetSessionCache {
    /// A store for `workers` workers (at least one).
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Runs `f` on the entry of `server`, creating it (and evicting the oldest) if needed.
    fn with_entry(&self, server: ServerName<'static>, f: impl FnOnce(&mut Entry)) {
        let mut inner = self.inner.lock();
        if !inner.entries.contains_key(&server) {
            while inner.entries.len() >= self.workers {
                let Some(oldest) = inner.order.pop_front() else {
                    break;
                };
                inner.entries.remove(&oldest);
            }
            inner.order.push_back(server.clone());
        }
        f(inner.entries.entry(server).or_default());
    }
}

impl ClientSessionStore for FleetSessionCache {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with_entry(server_name, |e| e.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        let inner = self.inner.lock();
        inner
            .entries
            .get(&server_name.to_owned())
            .and_then(|e| e.kx_hint)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with_entry(server_name, |e| e.tls12 = Some(Box::new(value)));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        let inner = self.inner.lock();
        inner
            .entries
            .get(&server_name.to_owned())
            .and_then(|e| e.tls12.as_deref().cloned())
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        if let Some(e) = self.inner.lock().entries.get_mut(server_name) {
            e.tls12 = None;
        }
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with_entry(server_name, |e| {
            if e.tls13.len() >= e.keep() {
                e.tls13.remove(0);
            }
            if e.tls13.capacity() == e.tls13.len() {
                e.tls13.reserve_exact(1);
            }
            e.tls13.push(value);
            e.had_ticket = true;
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // The newest first: the oldest are the likeliest to have expired.
        let mut inner = self.inner.lock();
        let entry = inner.entries.get_mut(server_name)?;
        let ticket = entry.tls13.pop();
        if ticket.is_none() && entry.had_ticket {
            entry.wants_more = true;
        }
        ticket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: u8) -> ServerName<'static> {
        ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, i]).into())
    }

    /// The map holds an entry per worker (10,000 and more): its size is paid for each of
    /// them and for the map's spare slots. With the TLS 1.2 session inline it was ~190 bytes.
    #[test]
    fn a_worker_entry_should_stay_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 48,
            "{} bytes",
            std::mem::size_of::<Entry>()
        );
    }

    #[test]
    fn the_oldest_worker_should_be_dropped_when_the_store_is_full() {
        let store = FleetSessionCache::new(2);
        store.set_kx_hint(name(1), NamedGroup::X25519);
        store.set_kx_hint(name(2), NamedGroup::X25519);
        store.set_kx_hint(name(1), NamedGroup::secp256r1);
        store.set_kx_hint(name(3), NamedGroup::X25519);
        assert_eq!(store.kx_hint(&name(1)), None);
        assert_eq!(store.kx_hint(&name(2)), Some(NamedGroup::X25519));
        assert_eq!(store.kx_hint(&name(3)), Some(NamedGroup::X25519));
        assert_eq!(store.inner.lock().entries.len(), 2);
    }
}
