//! [`State`]: what the engine knows and how it changes — the store, the in-memory [`Fleet`]
//! index, the runtime settings (a `watch`, so changes apply at once), the event bus and the
//! batched writer — with the read queries and the two write paths:
//!
//! - [`State::change`] (commands): reload-and-retry on conflicts, saved now, index refreshed,
//!   events published;
//! - [`State::submit`] (polls): queued to the batched writer.

use std::sync::Arc;

use ccm_domain::idle::FleetPicture;
use ccm_domain::{Actor, EventKind, RuntimeSettings, Worker, WorkerId};
use ccm_store::{
    EventQuery, MetricsPoint, Page, Store, StoreError, StoredEvent, Versioned, WorkerFilter,
    WorkerWrite, WriteOutcome,
};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::bus::EventBus;
use crate::clock::Clock;
use crate::config::PricingConfig;
use crate::error::EngineError;
use crate::fleet::Fleet;
use crate::writer::{Mutation, WriterHandle};

/// Workers read at a time when the fleet index is built at start.
const LOAD_CHUNK: usize = 256;

/// The engine's state: store, fleet index, settings, bus, writer.
pub(crate) struct State {
    store: Arc<dyn Store>,
    bus: EventBus,
    clock: Arc<dyn Clock>,
    fleet: Fleet,
    settings: watch::Sender<Versioned<RuntimeSettings>>,
    writer: Mutex<Option<WriterHandle>>,
    /// What the idle policy knows of the fleet (busy share, return profile), and when it was
    /// computed.
    busy: Mutex<Option<(DateTime<Utc>, Arc<FleetPicture>)>>,
}

impl State {
    /// Loads the settings (`initial` when the database has none) and the fleet index.
    pub(crate) async fn load(
        store: Arc<dyn Store>,
        bus: EventBus,
        clock: Arc<dyn Clock>,
        initial: RuntimeSettings,
    ) -> Result<Self, EngineError> {
        let stored = store.runtime_settings().await?;
        let settings = if stored.version == 0 {
            Versioned {
                value: initial,
                version: 0,
            }
        } else {
            stored
        };
        settings
            .value
            .validate()
            .map_err(|e| EngineError::invalid(e.key, e.message))?;
        let fleet = Fleet::default();
        // The ids first, then the documents a chunk at a time: the whole fleet's rows and
        // workers at once (~6 KB a worker, ~56 MiB at 10,000) were the process's peak memory.
        let ids: Vec<WorkerId> = store
            .list_stamps(&WorkerFilter::default())
            .await?
            .items
            .into_iter()
            .map(|s| s.id)
            .collect();
        for chunk in ids.chunks(LOAD_CHUNK) {
            for w in &store.get_many(chunk).await? {
                fleet.remember(w);
            }
        }
        Ok(Self {
            store,
            bus,
            clock,
            fleet,
            settings: watch::Sender::new(settings),
            writer: Mutex::new(None),
            busy: Mutex::new(None),
        })
    }

    /// The current time, as the engine sees it.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The fleet as the idle policy last saw it (busy share, return profile), with when.
    pub(crate) fn fleet_picture(&self) -> Option<(DateTime<Utc>, Arc<FleetPicture>)> {
        self.busy.lock().clone()
    }

    /// Records the fleet as the idle policy sees it.
    pub(crate) fn set_fleet_picture(&self, at: DateTime<Utc>, picture: Arc<FleetPicture>) {
        *self.busy.lock() = Some((at, picture));
    }

    /// The store.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The event bus.
    pub(crate) fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// The in-memory index.
    pub(crate) fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Stamps and publishes events.
    pub(crate) async fn emit(
        &self,
        worker: Option<WorkerId>,
        kinds: impl IntoIterator<Item = EventKind>,
    ) {
        self.bus.emit(worker, kinds).await;
    }

    // === settings ===

    /// The runtime settings in force.
    pub(crate) fn settings(&self) -> Versioned<RuntimeSettings> {
        self.settings.borrow().clone()
    }

    /// Watches the runtime settings.
    pub(crate) fn watch_settings(&self) -> watch::Receiver<Versioned<RuntimeSettings>> {
        self.settings.subscribe()
    }

    /// Replaces the runtime settings (validated; applied at once). `expected_version`
    /// guards against lost updates (`None`: overwrite).
    pub(crate) async fn update_settings(
        &self,
        new: RuntimeSettings,
        expected_version: Option<u64>,
        by: &Actor,
    ) -> Result<Versioned<RuntimeSettings>, EngineError> {
        new.validate()
            .map_err(|e| EngineError::invalid(e.key, e.message))?;
        let current = self.settings();
        let stored = self.store.runtime_settings().await?;
        let expected = expected_version.unwrap_or(stored.version);
        let saved = self
            .store
            .put_runtime_settings(&new, expected, by.as_str())
            .await?;
        let changed = new.changed_keys(&current.value);
        self.settings.send_replace(saved.clone());
        if !changed.is_empty() {
            self.emit(
                None,
                [EventKind::SettingsUpdated {
                    changed,
                    by: by.clone(),
                }],
            )
            .await;
        }
        Ok(saved)
    }

    /// Reloads the settings from the store when they are newer than the ones in force
    /// (changed through another replica).
    pub(crate) async fn reload_settings(&self) {
        match self.store.runtime_settings().await {
            Ok(stored) if stored.version > self.settings().version => {
                if let Err(e) = stored.value.validate() {
                    tracing::warn!(error = %e.message, "settings changed elsewhere are invalid here; kept the current ones");
                    return;
                }
                tracing::info!(
                    version = stored.version,
                    "settings changed on another replica; applied"
                );
                self.settings.send_replace(stored);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reload the settings"),
        }
    }

    /// Refreshes the fleet index for workers changed elsewhere (another replica): present ones
    /// are remembered as stored, missing ones forgotten.
    pub(crate) async fn follow_workers(&self, ids: Vec<WorkerId>) {
        if ids.is_empty() {
            return;
        }
        match self.store.get_many(&ids).await {
            Ok(found) => {
                let present: std::collections::HashSet<WorkerId> =
                    found.iter().map(|w| w.id).collect();
                for w in &found {
                    self.fleet.remember(w);
                }
                for id in ids {
                    if !present.contains(&id) {
                        self.fleet.forget(id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot refresh the fleet index"),
        }
    }

    // === writes ===

    /// Connects the batched writer.
    pub(crate) fn attach_writer(&self, writer: WriterHandle) {
        *self.writer.lock() = Some(writer);
    }

    /// Disconnects the batched writer: once every poll holding a handle is done, it drains
    /// its queue and ends.
    pub(crate) fn detach_writer(&self) {
        self.writer.lock().take();
    }

    /// The batched writer, while it runs.
    pub(crate) fn writer(&self) -> Option<WriterHandle> {
        self.writer.lock().clone()
    }

    /// Queues a batched mutation (not fenced: commands' follow-ups).
    pub(crate) async fn submit(&self, id: WorkerId, mutation: Mutation) {
        match self.writer() {
            Some(w) => w.submit(id, mutation, None).await,
            None => tracing::debug!(worker = %id, "writer stopped; dropping a poll result"),
        }
    }

    /// Waits until every poll result queued so far is stored.
    pub(crate) async fn flush(&self) {
        if let Some(writer) = self.writer() {
            writer.barrier().await;
        }
    }

    /// Applies a change now (commands): reload-and-retry on conflicts, index refreshed,
    /// events published. `change` returns the events or refuses.
    pub(crate) async fn change<F, E>(
        &self,
        id: WorkerId,
        mut change: F,
    ) -> Result<Worker, EngineError>
    where
        F: FnMut(&mut Worker) -> Result<Vec<EventKind>, E>,
        E: Into<EngineError>,
    {
        // The change and its events in one transaction; a conflict reloads and reapplies.
        let mut last = None;
        for _ in 0..ccm_store::UPDATE_ATTEMPTS {
            let mut worker = self.store.get(id).await?.ok_or(EngineError::NotFound {
                what: "worker",
                id: id.to_string(),
            })?;
            let kinds = change(&mut worker).map_err(Into::into)?;
            let events = self.bus.stamp(Some(id), kinds);
            let write = WorkerWrite {
                worker,
                events: events.clone(),
                fence: None,
            };
            match self
                .store
                .save_changes(std::slice::from_ref(&write))
                .await?
                .pop()
            {
                Some(WriteOutcome::Saved { worker, seqs }) => {
                    self.fleet.remember(&worker);
                    self.bus.deliver(events, seqs);
                    return Ok(worker);
                }
                Some(WriteOutcome::Failed(e @ StoreError::Conflict { .. })) => {
                    tracing::debug!(worker = %id, "update conflict, retrying");
                    last = Some(e);
                }
                Some(WriteOutcome::Failed(e)) => return Err(e.into()),
                Some(WriteOutcome::Fenced) | None => {
                    return Err(StoreError::Conflict {
                        id,
                        expected: write.worker.version,
                        found: None,
                    }
                    .into());
                }
            }
        }
        Err(last
            .unwrap_or(StoreError::NotFound {
                what: "worker",
                id: id.to_string(),
            })
            .into())
    }

    /// Stores a new worker (provisioning), indexes it and publishes its events.
    pub(crate) async fn insert(
        &self,
        worker: &Worker,
        events: Vec<EventKind>,
    ) -> Result<Worker, EngineError> {
        let saved = self.store.insert(worker).await?;
        self.fleet.remember(&saved);
        self.emit(Some(saved.id), events).await;
        Ok(saved)
    }

    /// Stores a new worker (provisioning) only while fewer than `cap` are live (the store
    /// counts and inserts atomically); at the cap it is a [`RefusalKind::Limit`] refusal.
    ///
    /// [`RefusalKind::Limit`]: crate::RefusalKind::Limit
    pub(crate) async fn insert_capped(
        &self,
        worker: &Worker,
        events: Vec<EventKind>,
        cap: u32,
    ) -> Result<Worker, EngineError> {
        let saved = self.store.insert_capped(worker, cap).await?;
        self.fleet.remember(&saved);
        self.emit(Some(saved.id), events).await;
        Ok(saved)
    }

    /// Stores an imported worker unless its instance already is one; publishes its events
    /// only when it is new. Returns the stored worker and whether it was created.
    pub(crate) async fn insert_or_get(
        &self,
        worker: &Worker,
        events: Vec<EventKind>,
    ) -> Result<(Worker, bool), EngineError> {
        let (saved, created) = self.store.insert_or_get(worker).await?;
        self.fleet.remember(&saved);
        if created {
            self.emit(Some(saved.id), events).await;
        }
        Ok((saved, created))
    }

    /// Deletes a worker's record; `false` when there was none.
    pub(crate) async fn delete(&self, id: WorkerId) -> Result<bool, EngineError> {
        let deleted = self.store.delete(id).await?;
        if deleted {
            self.fleet.forget(id);
        }
        Ok(deleted)
    }

    // === queries ===

    /// One worker.
    pub(crate) async fn worker(&self, id: WorkerId) -> Result<Worker, EngineError> {
        self.store.get(id).await?.ok_or(EngineError::NotFound {
            what: "worker",
            id: id.to_string(),
        })
    }

    /// A page of workers.
    pub(crate) async fn workers(&self, filter: &WorkerFilter) -> Result<Page<Worker>, EngineError> {
        Ok(self.store.list(filter).await?)
    }

    /// The metrics history of a worker since `since`.
    pub(crate) async fn metrics_history(
        &self,
        id: WorkerId,
        since: DateTime<Utc>,
    ) -> Result<Vec<MetricsPoint>, EngineError> {
        self.worker(id).await?;
        Ok(self.store.metrics_history(id, since).await?)
    }

    /// Events of one worker, newest first.
    pub(crate) async fn worker_events(
        &self,
        id: WorkerId,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, EngineError> {
        self.worker(id).await?;
        let q = EventQuery {
            subjects: vec![id.to_string()],
            before,
            limit,
            newest_first: true,
            ..Default::default()
        };
        Ok(self.store.read(&q).await?)
    }

    /// The labs of a worker, as last read.
    pub(crate) async fn labs(
        &self,
        id: WorkerId,
    ) -> Result<Vec<ccm_domain::LabRecord>, EngineError> {
        self.worker(id).await?;
        Ok(self.store.list_labs(id).await?)
    }

    /// The savings report at `pricing`, its groups split by the value of tag `group_tag`.
    pub(crate) async fn savings(
        &self,
        pricing: &PricingConfig,
        group_tag: Option<&str>,
    ) -> Result<ccm_domain::savings::SavingsReport, EngineError> {
        let all = self.store.list(&WorkerFilter::default()).await?;
        Ok(ccm_domain::savings::savings_report(
            &all.items,
            &pricing.hourly,
            &pricing.currency,
            group_tag,
            self.now(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use ccm_store::SqliteStore;

    use super::*;
    use crate::clock::TokioClock;
    use crate::fleet::Slot;
    use crate::writer::tests::new_worker;

    /// The fleet index built at start holds every stored worker as stored, however many
    /// chunks it takes to read them.
    #[tokio::test]
    async fn the_fleet_index_should_hold_every_stored_worker_after_a_load_in_chunks() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
        let n = 2 * LOAD_CHUNK + 3;
        let mut stored = Vec::with_capacity(n);
        for i in 0..n {
            let mut w = new_worker(clock.now());
            w.name = format!("w{i}");
            stored.push(store.insert(&w).await.expect("insert"));
        }
        let bus = EventBus::new(store.clone(), clock.clone(), "/test");
        let state = State::load(store, bus, clock, RuntimeSettings::default())
            .await
            .expect("load");
        assert_eq!(state.fleet().len(), n);
        for w in &stored {
            assert_eq!(state.fleet().get(w.id), Some(Slot::of(w)), "{}", w.name);
        }
    }
}
