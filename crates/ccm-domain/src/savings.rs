//! The savings report: instance-hours ccm kept workers stopped (idle timeouts, schedules and
//! manual pauses through ccm; external stops do not count) and, given hourly prices per
//! instance type, the money — in total, per worker, and grouped by ISO week, by the value of
//! one tag and by reason ([`SavingsGroup`], exportable as CSV with [`groups_csv`]).

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
    /// The tag key the groups are split by, if any.
    pub group_tag: Option<String>,
    /// Hours and money by week, tag value and reason, oldest week first.
    pub groups: Vec<SavingsGroup>,
}

/// Savings of one (week, tag value, reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavingsGroup {
    /// ISO week, e.g. `2026-W10` (weeks start Monday 00:00 UTC).
    pub week: String,
    /// The value of the grouping tag (`""` when a worker lacks it, or with no grouping tag).
    pub tag: String,
    /// `idle_timeout`, `schedule` or `manual`.
    pub reason: String,
    /// Workers contributing.
    pub workers: u64,
    /// Instance-hours stopped.
    pub hours: f64,
    /// Money, over the workers whose price is known.
    pub saved: f64,
}

/// Stopped seconds of `w` by (week, reason), including a pause still going on at `now`.
fn stopped_by_week(w: &Worker, now: DateTime<Utc>) -> BTreeMap<(String, String), u64> {
    let m = &w.monitoring;
    let mut out = BTreeMap::new();
    for (week, reasons) in &m.stopped_by_week {
        for (reason, secs) in reasons {
            *out.entry((week.clone(), reason.clone())).or_default() += secs;
        }
    }
    if let (Some(at), Some(reason)) = (m.paused_at, m.pause_reason)
        && reason.is_by_ccm()
        && !w.ec2_state.is_final()
    {
        let key = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for (week, secs) in crate::worker::split_by_week(at, now) {
            *out.entry((week, key.clone())).or_default() += secs;
        }
    }
    out
}

/// Groups the stopped hours of `workers` by week, by the value of tag `tag_key` and by reason.
pub fn savings_groups(
    workers: &[Worker],
    prices: &BTreeMap<String, f64>,
    tag_key: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<SavingsGroup> {
    let mut acc: BTreeMap<(String, String, String), (u64, f64, f64)> = BTreeMap::new();
    for w in workers {
        let price = w
            .instance_type
            .as_ref()
            .and_then(|t| prices.get(t.as_str()))
            .copied();
        let tag = tag_key
            .and_then(|k| w.tags.get(k))
            .cloned()
            .unwrap_or_default();
        for ((week, reason), secs) in stopped_by_week(w, now) {
            if secs == 0 {
                continue;
            }
            let hours = secs as f64 / 3600.0;
            let e = acc.entry((week, tag.clone(), reason)).or_default();
            e.0 += 1;
            e.1 += hours;
            e.2 += price.map_or(0.0, |p| p * hours);
        }
    }
    acc.into_iter()
        .map(
            |((week, tag, reason), (workers, hours, saved))| SavingsGroup {
                week,
                tag,
                reason,
                workers,
                hours,
                saved,
            },
        )
        .collect()
}

/// The groups as CSV (RFC 4180: a header line, CRLF line ends, fields quoted when they hold a
/// comma, quote or line break; a field starting with `=`, `+`, `-` or `@` is prefixed with
/// `'` so that spreadsheets do not run it as a formula).
pub fn groups_csv(report: &SavingsReport) -> String {
    fn field(s: &str) -> String {
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_owned()
        };
        if s.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }
    let tag_header = report.group_tag.as_deref().unwrap_or("tag");
    let mut out = format!(
        "week,{},reason,workers,hours,saved,currency\r\n",
        field(&format!("tag:{tag_header}"))
    );
    for g in &report.groups {
        out.push_str(&format!(
            "{},{},{},{},{:.3},{:.2},{}\r\n",
            field(&g.week),
            field(&g.tag),
            field(&g.reason),
            g.workers,
            g.hours,
            g.saved,
            field(&report.currency)
        ));
    }
    out
}

/// Computes the savings report at `now`, its groups split by the value of tag `group_tag`.
pub fn savings_report(
    workers: &[Worker],
    prices: &BTreeMap<String, f64>,
    currency: &str,
    group_tag: Option<&str>,
    now: DateTime<Utc>,
) -> SavingsReport {
    let mut missing = std::collections::BTreeSet::new();
    let mut rows: Vec<WorkerSavings> = workers
        .iter()
        .filter_map(|w| {
            let hours = w.seconds_stopped_by_ccm(now) as f64 / 3600.0;
            let m = &w.monitoring;
            if hours == 0.0
                && m.pauses.idle_timeout == 0
                && m.pauses.manual == 0
                && m.pauses.schedule == 0
            {
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
        group_tag: group_tag.map(str::to_owned),
        groups: savings_groups(workers, prices, group_tag, now),
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
        let r = savings_report(&[idle, external, unpriced], &prices, "USD", None, t(20.0));
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
    fn savings_should_group_by_week_tag_and_reason_and_export_as_csv() {
        // t(0) = 2027-01-15T08:00:00Z, a Friday (ISO week 2027-W02).
        let (mut a, obs) = worker("m5zn.metal");
        a.tags.insert("team".into(), "=cmd()".into());
        // Idle pause Friday 09:00 → Monday 09:00: 63 h in W02, 9 h in W03.
        stop(&mut a, &obs, Some(PauseReason::IdleTimeout), 1.0);
        start(&mut a, &obs, 73.0);
        // Schedule stop Monday 18:00, still stopped at Tuesday 08:00: 14 h in W03.
        stop(&mut a, &obs, Some(PauseReason::Schedule), 82.0);
        let (mut b, obs2) = worker("c5.metal");
        b.tags.insert("team".into(), "dev, ops".into());
        stop(&mut b, &obs2, Some(PauseReason::Manual), 1.0);
        start(&mut b, &obs2, 3.0);
        let prices = BTreeMap::from([("m5zn.metal".to_owned(), 4.0)]);
        let r = savings_report(&[a, b], &prices, "USD", Some("team"), t(96.0));
        let rows: Vec<_> = r
            .groups
            .iter()
            .map(|g| {
                (
                    g.week.as_str(),
                    g.tag.as_str(),
                    g.reason.as_str(),
                    g.hours,
                    g.saved,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("2027-W02", "=cmd()", "idle_timeout", 63.0, 252.0),
                ("2027-W02", "dev, ops", "manual", 2.0, 0.0),
                ("2027-W03", "=cmd()", "idle_timeout", 9.0, 36.0),
                ("2027-W03", "=cmd()", "schedule", 14.0, 56.0),
            ]
        );
        assert_eq!(r.total_hours, 88.0, "the groups add up to the total");
        let csv = groups_csv(&r);
        let lines: Vec<_> = csv.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "week,tag:team,reason,workers,hours,saved,currency"
        );
        assert_eq!(
            lines[1],
            "2027-W02,'=cmd(),idle_timeout,1,63.000,252.00,USD"
        );
        assert_eq!(lines[2], "2027-W02,\"dev, ops\",manual,1,2.000,0.00,USD");
        assert_eq!(lines.len(), 6, "four rows and the final line end");
    }

    #[test]
    fn an_empty_report_should_total_plus_zero() {
        let r = savings_report(&[], &BTreeMap::new(), "USD", None, t(1.0));
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
