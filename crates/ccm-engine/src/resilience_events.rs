//! Resilience state changes (breaker opened, budget exhausted, bulkhead full) as domain
//! events: [`resilience_with_bus`] builds the policies with an observer that queues their
//! events; [`forward`] (supervised, `resilience_events`) publishes them on the bus, with the
//! worker whose endpoint a breaker guards as the subject.

use std::sync::Arc;

use ccm_domain::EventKind;
use ccm_resilience::{Resilience, ResilienceEvent};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::state::State;

/// Resilience events waiting to be published on an engine's bus (see
/// [`resilience_with_bus`]).
pub struct ResilienceEvents(mpsc::UnboundedReceiver<ResilienceEvent>);

impl std::fmt::Debug for ResilienceEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilienceEvents").finish_non_exhaustive()
    }
}

impl ResilienceEvents {
    /// The queue, shared by every run of the forwarder (a restart keeps what is queued).
    pub(crate) fn into_shared(self) -> Arc<Mutex<mpsc::UnboundedReceiver<ResilienceEvent>>> {
        Arc::new(Mutex::new(self.0))
    }
}

/// Builds the resilience policies so that their state changes (breaker opened, budget
/// exhausted, bulkhead full) become domain events: pass the returned events to
/// [`crate::Engine::forward_resilience_events`] once the engine runs. `extra` also receives
/// them.
pub fn resilience_with_bus(
    config: &ccm_resilience::ResilienceConfig,
    extra: Option<Arc<dyn ccm_resilience::Observer>>,
) -> (ResilienceEvents, Resilience) {
    let (tx, rx) = mpsc::unbounded_channel();
    let bus = Arc::new(ForwardObserver { tx, extra });
    (ResilienceEvents(rx), Resilience::new(config, bus))
}

struct ForwardObserver {
    tx: mpsc::UnboundedSender<ResilienceEvent>,
    extra: Option<Arc<dyn ccm_resilience::Observer>>,
}

impl ccm_resilience::Observer for ForwardObserver {
    fn on_event(&self, event: &ResilienceEvent) {
        let _ = self.tx.send(event.clone());
        if let Some(extra) = &self.extra {
            extra.on_event(event);
        }
    }
}

/// Publishes queued resilience events until `cancel` (or until every sender is gone).
pub(crate) async fn forward(
    queue: Arc<Mutex<mpsc::UnboundedReceiver<ResilienceEvent>>>,
    state: Arc<State>,
    cancel: CancellationToken,
) {
    let mut rx = queue.lock().await;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let (key, kind) = domain_event(event);
        let subject = key.and_then(|k| state.fleet().by_endpoint(&k));
        state.emit(subject, [kind]).await;
    }
}

/// The domain event of a resilience event, with the breaker key it concerns (if any).
fn domain_event(event: ResilienceEvent) -> (Option<String>, EventKind) {
    use ResilienceEvent as R;
    match event {
        R::BreakerOpened {
            key,
            consecutive_failures,
            reason,
        } => (
            Some(key.clone()),
            EventKind::BreakerOpened {
                key,
                consecutive_failures,
                reason,
            },
        ),
        R::BreakerHalfOpen { key } => (Some(key.clone()), EventKind::BreakerHalfOpen { key }),
        R::BreakerClosed { key } => (Some(key.clone()), EventKind::BreakerClosed { key }),
        R::BudgetExhausted => (None, EventKind::RetryBudgetExhausted {}),
        R::BudgetRecovered => (None, EventKind::RetryBudgetRecovered {}),
        R::BulkheadRejected {
            name,
            max_concurrent,
            max_queue,
        } => (
            None,
            EventKind::BulkheadRejected {
                name,
                max_concurrent: max_concurrent as u64,
                max_queue: max_queue as u64,
            },
        ),
    }
}
