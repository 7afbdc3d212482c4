//! [`Webhooks`]: one delivery loop per webhook, from the event log, under the engine's
//! ownership grant for [`JobKind::Webhooks`]. See the crate docs for the guarantees.

use std::sync::Arc;
use std::time::Duration;

use ccm_engine::{Criticality, Engine, Grant, JobKind, Ownership};
use ccm_resilience::{Backoff, BreakerState, Call, CallError, Classify as _, Resilience};
use ccm_store::{EventQuery, Store, StoredEvent};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::config::{EventFilter, WebhookConfig, validate_all};
use crate::error::{DeliveryError, StartError};
use crate::metrics as m;
use crate::signature;
use crate::status::{BlockedEvent, DeliveryState, WebhookStatus};

/// Events read from the log per batch.
const BATCH: u32 = 100;
/// Content type of the CloudEvents HTTP binding, structured mode, JSON.
const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";
/// The most of a failing answer's body kept for the status (printable characters).
const ERROR_DETAIL: usize = 200;

/// The running webhook deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<Ctx>,
    hooks: Vec<Arc<Hook>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .inner
            .hooks
            .iter()
            .map(|h| h.config.name.as_str())
            .collect();
        f.debug_struct("Webhooks").field("hooks", &names).finish()
    }
}

/// What every loop shares.
struct Ctx {
    engine: Engine,
    store: Arc<dyn Store>,
    resilience: Resilience,
    ownership: Arc<dyn Ownership>,
    /// The fallback poll while idle or on standby (new events wake the loops earlier).
    poll: Duration,
}

/// One webhook: its configuration, client, and live state.
struct Hook {
    config: WebhookConfig,
    filter: EventFilter,
    breaker_key: String,
    cursor_key: String,
    client: reqwest::Client,
    backoff: Backoff,
    live: Mutex<Live>,
    wake: Notify,
}

/// The mutable part of a webhook's status.
struct Live {
    state: DeliveryState,
    cursor: Option<u64>,
    head: Option<u64>,
    delivered: u64,
    failed_attempts: u64,
    consecutive_failures: u32,
    last_delivered_at: Option<DateTime<Utc>>,
    last_failure_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    blocked_on: Option<BlockedEvent>,
    next_attempt_at: Option<DateTime<Utc>>,
}

impl Webhooks {
    /// Validates `configs` and starts one delivery loop per webhook (supervised by the
    /// engine as `webhook:<name>`, best effort: a webhook never makes ccm unready), plus one
    /// task that wakes them on new events (`webhooks:wake`). Grants come from the engine's
    /// [`Engine::ownership`].
    pub fn start(engine: &Engine, configs: Vec<WebhookConfig>) -> Result<Self, StartError> {
        Self::start_with_ownership(engine, configs, engine.ownership())
    }

    /// [`Self::start`] with grants from `ownership` (tests: another replica holding the
    /// lease).
    pub fn start_with_ownership(
        engine: &Engine,
        configs: Vec<WebhookConfig>,
        ownership: Arc<dyn Ownership>,
    ) -> Result<Self, StartError> {
        validate_all(&configs)?;
        m::describe();
        let (_, poll) = JobKind::Webhooks.schedule(&engine.settings().value.polling);
        let ctx = Arc::new(Ctx {
            engine: engine.clone(),
            store: engine.store().clone(),
            resilience: engine.resilience().clone(),
            ownership,
            poll,
        });
        let mut hooks = Vec::with_capacity(configs.len());
        for config in configs {
            hooks.push(Arc::new(Hook::new(config)?));
        }
        let stop = CancellationToken::new();
        for hook in &hooks {
            let (ctx, hook2, stop2) = (ctx.clone(), hook.clone(), stop.clone());
            engine.spawn_supervised(
                &format!("webhook:{}", hook.config.name),
                Criticality::BestEffort,
                stop.clone(),
                move || {
                    let span = tracing::info_span!("webhook", webhook = %hook2.config.name);
                    run(ctx.clone(), hook2.clone(), stop2.clone()).instrument(span)
                },
            );
        }
        if !hooks.is_empty() {
            let (engine2, all) = (engine.clone(), hooks.clone());
            engine.spawn_supervised(
                "webhooks:wake",
                Criticality::BestEffort,
                stop.clone(),
                move || wake_on_events(engine2.clone(), all.clone()),
            );
            tracing::info!(webhooks = hooks.len(), "webhook delivery started");
        }
        Ok(Self {
            inner: Arc::new(Inner { ctx, hooks, stop }),
        })
    }

    /// Every webhook's delivery state, in configuration order.
    pub fn statuses(&self) -> Vec<WebhookStatus> {
        self.inner
            .hooks
            .iter()
            .map(|h| h.status(&self.inner.ctx.resilience))
            .collect()
    }

    /// Stops the delivery loops (they also stop when the engine shuts down).
    pub fn stop(&self) {
        self.inner.stop.cancel();
    }
}

impl Hook {
    fn new(config: WebhookConfig) -> Result<Self, StartError> {
        let filter = EventFilter::parse(&config.events).map_err(|message| crate::ConfigError {
            key: "webhooks.events".into(),
            message,
        })?;
        let client = crate::net::client(config.timeout, config.allow_link_local).map_err(|e| {
            StartError::Client {
                name: config.name.clone(),
                message: e.without_url().to_string(),
            }
        })?;
        Ok(Self {
            breaker_key: config.breaker_key(),
            cursor_key: format!("webhook:{}", config.name),
            backoff: Backoff::new(config.retry_base, config.retry_max),
            filter,
            client,
            live: Mutex::new(Live {
                state: DeliveryState::Starting,
                cursor: None,
                head: None,
                delivered: 0,
                failed_attempts: 0,
                consecutive_failures: 0,
                last_delivered_at: None,
                last_failure_at: None,
                last_error: None,
                blocked_on: None,
                next_attempt_at: None,
            }),
            wake: Notify::new(),
            config,
        })
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn status(&self, resilience: &Resilience) -> WebhookStatus {
        let l = self.live.lock();
        let breaker = match resilience.breakers().state(&self.breaker_key) {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        WebhookStatus {
            name: self.config.name.clone(),
            url: self.config.origin(),
            events: self.config.events.clone(),
            state: l.state,
            cursor: l.cursor,
            head: l.head,
            lag: lag(l.head, l.cursor),
            delivered: l.delivered,
            failed_attempts: l.failed_attempts,
            consecutive_failures: l.consecutive_failures,
            last_delivered_at: l.last_delivered_at,
            last_failure_at: l.last_failure_at,
            last_error: l.last_error.clone(),
            blocked_on: l.blocked_on.clone(),
            next_attempt_at: l.next_attempt_at,
            breaker: breaker.to_owned(),
        }
    }

    fn set_state(&self, state: DeliveryState) {
        self.live.lock().state = state;
        let active = matches!(
            state,
            DeliveryState::Idle | DeliveryState::Delivering | DeliveryState::Failing
        );
        metrics::gauge!(m::ACTIVE, "webhook" => self.name().to_owned()).set(if active {
            1.0
        } else {
            0.0
        });
    }

    /// Records the cursor and the head the loop knows now.
    fn positions(&self, cursor: Option<u64>, head: Option<u64>) {
        let mut l = self.live.lock();
        if cursor.is_some() {
            l.cursor = cursor;
        }
        if head.is_some() {
            l.head = head.max(l.head);
        }
        let lag = lag(l.head, l.cursor);
        drop(l);
        metrics::gauge!(m::LAG, "webhook" => self.name().to_owned()).set(lag as f64);
    }

    fn delivered(&self, now: DateTime<Utc>, seq: u64) {
        {
            let mut l = self.live.lock();
            l.delivered += 1;
            l.consecutive_failures = 0;
            l.last_delivered_at = Some(now);
            l.blocked_on = None;
            l.next_attempt_at = None;
            l.state = DeliveryState::Delivering;
        }
        self.positions(Some(seq), None);
        let label = self.name().to_owned();
        metrics::counter!(m::DELIVERED, "webhook" => label.clone()).increment(1);
        metrics::gauge!(m::CONSECUTIVE_FAILURES, "webhook" => label.clone()).set(0.0);
        metrics::gauge!(m::LAST_DELIVERED, "webhook" => label).set(now.timestamp() as f64);
    }

    fn failed(
        &self,
        now: DateTime<Utc>,
        event: &StoredEvent,
        attempts: u32,
        error: Option<String>,
        next: DateTime<Utc>,
    ) -> u32 {
        let mut l = self.live.lock();
        l.failed_attempts += 1;
        l.consecutive_failures = l.consecutive_failures.saturating_add(1);
        l.last_failure_at = Some(now);
        // An attempt refused by the open breaker keeps the receiver's last real error.
        if let Some(error) = error {
            l.last_error = Some(error);
        }
        l.blocked_on = Some(BlockedEvent {
            seq: event.seq,
            id: event.event.id.to_string(),
            r#type: event.event.type_name().to_owned(),
            attempts,
        });
        l.next_attempt_at = Some(next);
        l.state = DeliveryState::Failing;
        let n = l.consecutive_failures;
        drop(l);
        metrics::gauge!(m::CONSECUTIVE_FAILURES, "webhook" => self.name().to_owned())
            .set(f64::from(n));
        n
    }

    /// Waits for new events, `timeout`, or the stop; `false` when stopped.
    async fn wait(&self, stop: &CancellationToken, timeout: Duration) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(timeout) => true,
        }
    }
}

fn lag(head: Option<u64>, cursor: Option<u64>) -> u64 {
    match (head, cursor) {
        (Some(h), Some(c)) => h.saturating_sub(c),
        _ => 0,
    }
}

/// Wakes the loops whose filter matches a new logged event (a lagging receiver wakes all).
async fn wake_on_events(engine: Engine, hooks: Vec<Arc<Hook>>) {
    let mut rx = engine.subscribe();
    loop {
        match rx.recv().await {
            Ok(e) if e.seq.is_some() => {
                for h in hooks
                    .iter()
                    .filter(|h| h.filter.matches(e.event.type_name()))
                {
                    h.wake.notify_one();
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => hooks.iter().for_each(|h| h.wake.notify_one()),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Why a batch stopped early.
enum Interrupted {
    /// The process is stopping.
    Stopping,
    /// The grant is no longer held (another replica delivers now).
    LostGrant,
}

/// One webhook's loop: standby without a grant; otherwise read a batch after the cursor,
/// deliver it in order, store the cursor; wait when caught up.
async fn run(ctx: Arc<Ctx>, hook: Arc<Hook>, stop: CancellationToken) {
    // The cursor as this loop knows it; reloaded from the store after standing by (another
    // replica may have moved it).
    let mut cursor: Option<u64> = None;
    loop {
        if stop.is_cancelled() {
            hook.set_state(DeliveryState::Stopped);
            return;
        }
        let Some(grant) = ctx.ownership.may_run(JobKind::Webhooks, None) else {
            if cursor.take().is_some() || hook.live.lock().state != DeliveryState::Standby {
                tracing::info!("another replica delivers this webhook; standing by");
            }
            hook.set_state(DeliveryState::Standby);
            if !hook.wait(&stop, ctx.poll).await {
                hook.set_state(DeliveryState::Stopped);
                return;
            }
            continue;
        };
        let result = async {
            let current = match cursor {
                Some(c) => c,
                None => load_cursor(&ctx, &hook, &grant).await?,
            };
            cursor = Some(current);
            let head = ctx.store.last_seq().await?;
            let batch = ctx
                .store
                .read(&EventQuery {
                    after: Some(current),
                    types: hook.filter.query_types(),
                    limit: BATCH,
                    ..EventQuery::default()
                })
                .await?;
            hook.positions(Some(current), Some(head));
            Ok::<_, ccm_store::StoreError>((current, head, batch))
        }
        .await;
        let (current, head, batch) = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event log for a webhook; retrying");
                cursor = None;
                if !hook.wait(&stop, ctx.poll).await {
                    hook.set_state(DeliveryState::Stopped);
                    return;
                }
                continue;
            }
        };
        let complete = batch.len() < BATCH as usize;
        if batch.is_empty() {
            // Nothing matching up to the head: skip there.
            if head > current && save_cursor(&ctx, &hook, &grant, head).await {
                cursor = Some(head);
            }
            hook.set_state(DeliveryState::Idle);
            if !hook.wait(&stop, ctx.poll).await {
                hook.set_state(DeliveryState::Stopped);
                return;
            }
            continue;
        }
        hook.set_state(DeliveryState::Delivering);
        let mut done = current;
        let mut interrupted = None;
        for event in &batch {
            match deliver(&ctx, &hook, &grant, event, &stop, done).await {
                Ok(()) => done = event.seq,
                Err(why) => {
                    interrupted = Some(why);
                    break;
                }
            }
        }
        // A full batch read up to its last event; a shorter one saw every match up to `head`.
        let next = if complete && interrupted.is_none() {
            done.max(head)
        } else {
            done
        };
        if next > current && save_cursor(&ctx, &hook, &grant, next).await {
            cursor = Some(next);
        } else if next > current {
            cursor = None;
        }
        match interrupted {
            Some(Interrupted::Stopping) => {
                hook.set_state(DeliveryState::Stopped);
                return;
            }
            Some(Interrupted::LostGrant) => cursor = None,
            None => {}
        }
    }
}

/// The stored cursor, or (a new webhook) the log's head, stored at once.
async fn load_cursor(ctx: &Ctx, hook: &Hook, grant: &Grant) -> Result<u64, ccm_store::StoreError> {
    if let Some(c) = ctx.store.cursor(&hook.cursor_key).await? {
        return Ok(c);
    }
    let head = ctx.store.last_seq().await?;
    if ctx.ownership.holds(grant) {
        let stored = ctx
            .store
            .advance_cursor(&hook.cursor_key, head, ctx.engine.now())
            .await?;
        tracing::info!(
            cursor = stored,
            "new webhook: delivering from the log's end"
        );
        return Ok(stored);
    }
    Ok(head)
}

/// Stores the cursor while the grant is held; whether it was stored.
async fn save_cursor(ctx: &Ctx, hook: &Hook, grant: &Grant, seq: u64) -> bool {
    if !ctx.ownership.holds(grant) {
        return false;
    }
    match ctx
        .store
        .advance_cursor(&hook.cursor_key, seq, ctx.engine.now())
        .await
    {
        Ok(stored) => {
            hook.positions(Some(stored), None);
            true
        }
        Err(e) => {
            // Not fatal: the events are delivered; a restart would send them again.
            tracing::warn!(error = %e, "cannot store a webhook's cursor");
            false
        }
    }
}

/// Delivers one event, retrying until the receiver accepts it, the process stops or the
/// grant is lost. Before the first wait for a retry, stores `done` (the events before this
/// one are delivered).
async fn deliver(
    ctx: &Ctx,
    hook: &Hook,
    grant: &Grant,
    event: &StoredEvent,
    stop: &CancellationToken,
    done: u64,
) -> Result<(), Interrupted> {
    let body = match serde_json::to_vec(&event.event) {
        Ok(b) => b,
        Err(e) => {
            // Unreachable for catalogue events; never block the webhook on it.
            tracing::error!(seq = event.seq, error = %e, "event cannot be serialised; skipped");
            return Ok(());
        }
    };
    let signature = signature::sign(hook.config.secret.expose(), &body);
    let label = hook.name().to_owned();
    let call = Call::new(&hook.breaker_key)
        .max_attempts(1)
        .attempt_timeout(hook.config.timeout)
        .deadline(hook.config.timeout + Duration::from_secs(1));
    let mut attempts: u32 = 0;
    let mut saved = false;
    loop {
        if stop.is_cancelled() {
            return Err(Interrupted::Stopping);
        }
        if !ctx.ownership.holds(grant) {
            return Err(Interrupted::LostGrant);
        }
        attempts += 1;
        let delivery = Uuid::now_v7();
        let started = tokio::time::Instant::now();
        let span =
            tracing::debug_span!("webhook.attempt", seq = event.seq, attempt = attempts, %delivery);
        let result = tokio::select! {
            r = ctx.resilience.call(&call, |_| send(hook, &body, &signature, delivery)).instrument(span) => r,
            _ = stop.cancelled() => return Err(Interrupted::Stopping),
        };
        metrics::histogram!(m::ATTEMPT_SECONDS, "webhook" => label.clone())
            .record(started.elapsed().as_secs_f64());
        let now = ctx.engine.now();
        let (outcome, error, wait_at_least) = match result {
            Ok(()) => {
                metrics::counter!(m::ATTEMPTS, "webhook" => label.clone(), "outcome" => "ok")
                    .increment(1);
                hook.delivered(now, event.seq);
                if attempts > 1 {
                    tracing::info!(seq = event.seq, attempts, "webhook delivery recovered");
                }
                return Ok(());
            }
            Err(CallError::Inner(e)) => {
                let retry_after = e.retry_after().map(|d| d.min(hook.config.retry_max));
                (e.outcome(), e.to_string(), retry_after.unwrap_or_default())
            }
            Err(CallError::CircuitOpen { retry_in, .. }) => (
                "breaker_open",
                "the circuit breaker of this URL is open".to_owned(),
                retry_in,
            ),
            Err(CallError::Timeout { after }) => (
                "timeout",
                format!("no answer within {} ms", after.as_millis()),
                Duration::ZERO,
            ),
            Err(CallError::DeadlineExceeded { after, .. }) => (
                "timeout",
                format!("no answer within {} ms", after.as_millis()),
                Duration::ZERO,
            ),
            Err(other) => ("transport", other.to_string(), Duration::ZERO),
        };
        metrics::counter!(m::ATTEMPTS, "webhook" => label.clone(), "outcome" => outcome)
            .increment(1);
        let delay = hook
            .backoff
            .delay(attempts.saturating_sub(1))
            .max(wait_at_least);
        let next = now + chrono::Duration::from_std(delay).unwrap_or_default();
        let real = (outcome != "breaker_open").then(|| error.clone());
        let failures = hook.failed(now, event, attempts, real, next);
        if failures == 1 || failures.is_power_of_two() {
            tracing::warn!(
                seq = event.seq,
                r#type = event.event.type_name(),
                attempts,
                failures,
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                "webhook delivery failed; later events wait behind this one"
            );
        }
        if !saved && done > 0 {
            saved = save_cursor(ctx, hook, grant, done).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(Interrupted::Stopping),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One HTTP attempt: the CloudEvent in structured mode, signed.
async fn send(
    hook: &Hook,
    body: &[u8],
    signature: &str,
    delivery: Uuid,
) -> Result<(), DeliveryError> {
    let mut resp = hook
        .client
        .post(&hook.config.url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(signature::HEADER, signature)
        .header("x-ccm-delivery", delivery.to_string())
        .header("x-ccm-webhook", hook.name())
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| DeliveryError::Transport(chain(&e.without_url())))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_DETAIL * 4 {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            _ => break,
        }
    }
    let detail: String = String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_DETAIL)
        .collect::<String>()
        .trim()
        .to_owned();
    Err(DeliveryError::Status {
        status: status.as_u16(),
        detail,
        retry_after,
    })
}

/// An error with its causes, `: `-separated (reqwest's own text is only "error sending
/// request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
