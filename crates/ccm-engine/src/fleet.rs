//! [`Fleet`]: the in-memory index of every worker — a small [`Slot`] each (state, endpoint,
//! region), enough to schedule polls and answer counts without the database. The store holds
//! the truth; the index follows every save (commands and the writer both refresh it).

use std::collections::HashMap;
use std::sync::Arc;

use ccm_domain::{Ec2State, InstanceId, Region, ServiceStatus, Worker, WorkerId};
use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::types::FleetCounts;

/// What the scheduler needs to know of a worker, kept in memory for the whole fleet.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub(crate) region: Region,
    pub(crate) instance_id: Option<InstanceId>,
    pub(crate) state: Ec2State,
    pub(crate) service: ServiceStatus,
    pub(crate) endpoint: Option<Arc<str>>,
    pub(crate) created_at: DateTime<Utc>,
    /// When CML last answered `system_information` (the stale-data gauge).
    pub(crate) cml_at: Option<DateTime<Utc>>,
}

impl Slot {
    /// The slot of a worker as saved.
    pub(crate) fn of(w: &Worker) -> Self {
        Self {
            region: w.region.clone(),
            instance_id: w.instance_id.clone(),
            state: w.ec2_state,
            service: w.service.status,
            endpoint: w.endpoint.as_deref().map(Arc::from),
            created_at: w.created_at,
            cml_at: w.cml.info.last_good.as_ref().map(|o| o.observed_at),
        }
    }

    /// Running with an endpoint: CML can be asked.
    pub(crate) fn reachable(&self) -> Option<&Arc<str>> {
        (self.state == Ec2State::Running)
            .then_some(self.endpoint.as_ref())
            .flatten()
    }
}

/// Every worker's [`Slot`], by id.
#[derive(Debug, Default)]
pub(crate) struct Fleet {
    slots: DashMap<WorkerId, Slot>,
}

impl Fleet {
    /// Records (or refreshes) a worker as saved.
    pub(crate) fn remember(&self, w: &Worker) {
        self.slots.insert(w.id, Slot::of(w));
    }

    /// Drops a deleted worker.
    pub(crate) fn forget(&self, id: WorkerId) {
        self.slots.remove(&id);
    }

    /// One worker's slot.
    pub(crate) fn get(&self, id: WorkerId) -> Option<Slot> {
        self.slots.get(&id).map(|s| s.clone())
    }

    /// Workers known.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The workers whose slot satisfies `pred`.
    pub(crate) fn select(&self, pred: impl Fn(&Slot) -> bool) -> Vec<(WorkerId, Slot)> {
        self.slots
            .iter()
            .filter(|e| pred(e.value()))
            .map(|e| (*e.key(), e.value().clone()))
            .collect()
    }

    /// The workers with an instance whose slot satisfies `pred`, by region (for batched EC2
    /// and CloudWatch reads).
    pub(crate) fn by_region(
        &self,
        pred: impl Fn(&Slot) -> bool,
    ) -> HashMap<Region, Vec<(WorkerId, InstanceId)>> {
        let mut out: HashMap<Region, Vec<(WorkerId, InstanceId)>> = HashMap::new();
        for e in self.slots.iter() {
            if let (true, Some(i)) = (pred(e.value()), &e.value().instance_id) {
                out.entry(e.value().region.clone())
                    .or_default()
                    .push((*e.key(), i.clone()));
            }
        }
        out
    }

    /// The worker whose CML endpoint is `endpoint` (breaker keys are endpoints).
    pub(crate) fn by_endpoint(&self, endpoint: &str) -> Option<WorkerId> {
        self.slots
            .iter()
            .find(|e| e.value().endpoint.as_deref() == Some(endpoint))
            .map(|e| *e.key())
    }

    /// Running workers with an endpoint whose CML data is older than `max_age` at `now` (or
    /// was never read, and the worker is known for longer than that): what the UI shows as
    /// stale.
    pub(crate) fn stale(&self, now: DateTime<Utc>, max_age: std::time::Duration) -> usize {
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        self.slots
            .iter()
            .filter(|e| {
                let s = e.value();
                s.reachable().is_some() && now - s.cml_at.unwrap_or(s.created_at) > max_age
            })
            .count()
    }

    /// Counts by EC2 state and service status.
    pub(crate) fn counts(&self) -> FleetCounts {
        let mut counts = FleetCounts::default();
        for slot in self.slots.iter() {
            counts.total += 1;
            *counts
                .by_state
                .entry(slot.state.as_str().to_owned())
                .or_insert(0) += 1;
            *counts
                .by_service
                .entry(slot.service.as_str().to_owned())
                .or_insert(0) += 1;
        }
        counts
    }
}
