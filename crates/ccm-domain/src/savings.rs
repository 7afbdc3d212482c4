//! The savings report: instance-hours ccm kept workers stopped (idle timeouts and manual
//! pauses through ccm; external stops do not count) and, given hourly prices per instance type,
//! the money.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::WorkerId;
use crate::worker::Worker;

/// Savings of one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSavings {
    /// Worker.
    pub id: WorkerId,
    /// Name.
    pub name: String,
    /// Instance type.
    pub instance_type: Option<String>,
    /// Instance-hours stopped by ccm.
    pub hours: f64,
    /// Hourly price of the instance type, if configured.
    pub hourly_price: Option<f64>,
    /// `hours × hourly_price`.
    pub saved: Option<f64>,
    /// Pauses by the idle policy.
    pub idle_pauses: u64,
    /// Pauses by operators through ccm.
    pub manual_pauses: u64,
}

/// The fleet's savings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavingsReport {
    /// When computed.
    pub generated_at: DateTime<Utc>,
    /// Total instance-hours stopped by ccm.
    pub total_hours: f64,
    /// Total money saved over the workers whose price is known.
    pub total_saved: f64,
    /// Currency of the prices.
    pub currency: String,
    /// Instance types that have stopped hours but no configured price.
    pub missing_prices: Vec<String>,
    /// Per worker, only those with stopped hours or pauses, most saved first.
    pub workers: Vec<WorkerSavings>,
}

/// Computes the savings report at `now`.
pub fn savings_report(
    workers: &[Worker],
    prices: &BTreeMap<String, f64>,
    currency: &str,
    now: DateTime<Utc>,
) -> SavingsReport {
    let mut missing = std::collections::BTreeSet::new();
    let mut rows: Vec<WorkerSavings> = workers
        .iter()
        .filter_map(|w| {
            let hours = w.seconds_stopped_by_ccm(now) as f64 / 3600.0;
            let m = &w.monitoring;
            if hours == 0.0 && m.pauses.idle_timeout == 0 && m.pauses.manual == 0 {
                return None;
            }
            let instance_type = w.instance_type.as_ref().map(ToString::to_string);
            let hourly_price = instance_type.as_ref().and_then(|t| prices.get(t)).copied();
            if hourly_price.is_none() && hours > 0.0 {
                missing.insert(
                    instance_type
                        .clone()
                        .unwrap_or_else(|| "(unknown type)".into()),
                );
            }
            Some(WorkerSavings {
                id: w.id,
                name: w.name.clone(),
                instance_type,
                hours,
                hourly_price,
                saved: hourly_price.map(|p| p * hours),
                idle_pauses: m.pauses.idle_timeout,
                manual_pauses: m.pauses.manual,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        b.saved
            .unwrap_or(0.0)
            .total_cmp(&a.saved.unwrap_or(0.0))
            .then(b.hours.total_cmp(&a.hours))
    });
    SavingsReport {
        generated_at: now,
        // Folded from +0.0: `f64`'s `sum` starts at -0.0, which an empty report would show.
        total_hours: rows.iter().map(|r| r.hours).fold(0.0, |a, b| a + b),
        total_saved: rows.iter().filter_map(|r| r.saved).fold(0.0, |a, b| a + b),
        currency: currency.to_owned(),
        missing_prices: missing.into_iter().collect(),
        workers: rows,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::ec2::Ec2State;
    use crate::ids::{Actor, InstanceId, InstanceType, Region};
    use crate::lifecycle::{PauseReason, WorkerAction};
    use crate::worker::{EndpointPolicy, InstanceObservation};

    fn t(h: f64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + (h * 3600.0) as i64, 0)
            .unwrap()
    }

    fn worker(ty: &str) -> (Worker, InstanceObservation) {
        let obs = InstanceObservation {
            instance_id: InstanceId::parse("i-0123abcd").unwrap(),
            state: Ec2State::Running,
            instance_type: Some(InstanceType::parse(ty).unwrap()),
            ami_id: None,
            public_ip: None,
            private_ip: None,
            tags: Default::default(),
            launched_at: None,
            detailed_monitoring: false,
            state_reason: None,
        };
        let (w, _) = Worker::import(
            &obs,
            Region::parse("eu-west-1").unwrap(),
            &EndpointPolicy::default(),
            Actor::user("a"),
            t(0.0),
        );
        (w, obs)
    }

    fn stop(w: &mut Worker, obs: &InstanceObservation, reason: Option<PauseReason>, at: f64) {
        if let Some(r) = reason {
            w.request(WorkerAction::Pause, Some(r), &Actor::system("idle"), t(at))
                .unwrap();
        }
        let o = InstanceObservation {
            state: Ec2State::Stopped,
            ..obs.clone()
        };
        w.observe_ec2(&o, &EndpointPolicy::default(), t(at))
            .unwrap();
    }

    fn start(w: &mut Worker, obs: &InstanceObservation, at: f64) {
        w.observe_ec2(obs, &EndpointPolicy::default(), t(at))
            .unwrap();
    }

    #[test]
    fn savings_should_count_only_hours_stopped_by_ccm_and_price_them() {
        let (mut idle, obs) = worker("m5zn.metal");
        stop(&mut idle, &obs, Some(PauseReason::IdleTimeout), 1.0);
        start(&mut idle, &obs, 11.0); // 10 h
        stop(&mut idle, &obs, Some(PauseReason::Manual), 12.0); // still stopped: 8 h at t=20

        let (mut external, obs2) = worker("c5.metal");
        stop(&mut external, &obs2, None, 1.0);

        let (mut unpriced, obs3) = worker("z1d.metal");
        stop(&mut unpriced, &obs3, Some(PauseReason::IdleTimeout), 18.0);

        let prices = BTreeMap::from([("m5zn.metal".to_owned(), 4.0), ("c5.metal".to_owned(), 3.0)]);
        let r = savings_report(&[idle, external, unpriced], &prices, "USD", t(20.0));
        assert_eq!(
            r.workers.len(),
            2,
            "the externally stopped worker saved nothing"
        );
        assert_eq!(r.workers[0].hours, 18.0);
        assert_eq!(r.workers[0].saved, Some(72.0));
        assert_eq!(
            (r.workers[0].idle_pauses, r.workers[0].manual_pauses),
            (1, 1)
        );
        assert_eq!(r.workers[1].saved, None);
        assert_eq!(r.total_hours, 20.0);
        assert_eq!(r.total_saved, 72.0);
        assert_eq!(r.missing_prices, ["z1d.metal"]);
    }

    #[test]
    fn an_empty_report_should_total_plus_zero() {
        let r = savings_report(&[], &BTreeMap::new(), "USD", t(1.0));
        assert!(r.total_hours == 0.0 && r.total_hours.is_sign_positive());
        assert!(r.total_saved == 0.0 && r.total_saved.is_sign_positive());
    }

    #[test]
    fn a_terminated_worker_should_stop_accumulating() {
        let (mut w, obs) = worker("m5zn.metal");
        stop(&mut w, &obs, Some(PauseReason::IdleTimeout), 0.0);
        let gone = InstanceObservation {
            state: Ec2State::Terminated,
            ..obs
        };
        w.observe_ec2(&gone, &EndpointPolicy::default(), t(5.0))
            .unwrap();
        assert_eq!(w.seconds_stopped_by_ccm(t(100.0)), 5 * 3600);
    }
}
