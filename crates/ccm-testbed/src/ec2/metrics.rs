//! Simulated CloudWatch metrics: a deterministic generator (values derived from the instance
//! id and the time, so the demo shows moving charts and tests can repeat them) and values put
//! by hand, which take precedence.

use std::f64::consts::TAU;

use ccm_cloud::{Instance, InstanceMetrics, MetricKind, MetricSample, MetricsWindow};
use ccm_domain::Ec2State;
use chrono::{DateTime, Utc};

/// Values put for one instance (the latest per metric).
#[derive(Debug, Clone, Default)]
pub(super) struct Overrides {
    cpu: Option<(f64, DateTime<Utc>)>,
    memory: Option<(f64, DateTime<Utc>)>,
}

impl Overrides {
    pub(super) fn put(&mut self, kind: MetricKind, value: f64, at: DateTime<Utc>) {
        let slot = match kind {
            MetricKind::Cpu => &mut self.cpu,
            MetricKind::Memory => &mut self.memory,
        };
        *slot = Some((value, at));
    }

    pub(super) fn read(&self, window: &MetricsWindow) -> InstanceMetrics {
        let pick = |slot: Option<(f64, DateTime<Utc>)>| {
            slot.filter(|(_, at)| *at >= window.start() && *at <= window.end)
                .map(|(value, at)| MetricSample {
                    value,
                    at: bucket_start(at, window),
                })
        };
        InstanceMetrics {
            cpu_percent: pick(self.cpu),
            memory_used_percent: pick(self.memory),
        }
    }
}

/// The start of the period bucket `at` falls into (periods aligned to the epoch).
fn bucket_start(at: DateTime<Utc>, window: &MetricsWindow) -> DateTime<Utc> {
    let period = window.period.as_secs().max(1) as i64;
    let secs = at.timestamp().div_euclid(period) * period;
    DateTime::from_timestamp(secs, 0).unwrap_or(at)
}

/// FNV-1a: a stable hash of the instance id (std's hasher is randomly seeded per process).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The generated metrics of `instance`: the last complete period before the window's end, if
/// the instance is up and was launched before that period began. CPU swings around a
/// per-instance base with a 30-minute cycle; memory drifts slowly around its own base.
pub(super) fn generate(instance: &Instance, window: &MetricsWindow) -> InstanceMetrics {
    if !matches!(instance.state, Ec2State::Running | Ec2State::Stopping) {
        return InstanceMetrics::default();
    }
    let period = chrono::Duration::seconds(window.period.as_secs().max(1) as i64);
    let at = bucket_start(window.end - period, window);
    let launched_before = instance.launch_time.is_none_or(|launch| launch <= at);
    if at < window.start() || !launched_before {
        return InstanceMetrics::default();
    }
    let h = stable_hash(instance.id.as_str());
    let t = at.timestamp() as f64;
    let phase = (h % 1800) as f64;
    let cpu_base = 8.0 + (h % 37) as f64;
    let noise =
        ((stable_hash(&format!("{}{}", instance.id, at.timestamp())) % 1000) as f64) / 1000.0 * 6.0;
    let cpu = cpu_base + 25.0 * (TAU * (t + phase) / 1800.0).sin() + noise;
    let mem_base = 30.0 + ((h >> 16) % 40) as f64;
    let memory = mem_base + 8.0 * (TAU * (t + phase) / 7200.0).sin();
    InstanceMetrics {
        cpu_percent: Some(MetricSample {
            value: cpu.clamp(0.0, 100.0),
            at,
        }),
        memory_used_percent: Some(MetricSample {
            value: memory.clamp(0.0, 100.0),
            at,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ccm_domain::{AmiId, InstanceId, InstanceType, Region};

    use super::*;

    fn instance(id: &str, state: Ec2State, launch: DateTime<Utc>) -> Instance {
        Instance {
            id: InstanceId::parse(id).unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
            state,
            instance_type: InstanceType::parse("m5.large").unwrap(),
            image_id: AmiId::parse("ami-0123abcd").unwrap(),
            launch_time: Some(launch),
            public_ip: None,
            private_ip: None,
            tags: Default::default(),
            detailed_monitoring: true,
            state_reason: None,
        }
    }

    fn window(end: DateTime<Utc>) -> MetricsWindow {
        MetricsWindow::ending_at(end, Duration::from_secs(600), Duration::from_secs(60))
    }

    #[test]
    fn generated_metrics_should_be_deterministic_and_in_range() {
        let end = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let a = instance(
            "i-0123456789abcdef0",
            Ec2State::Running,
            end - chrono::Duration::hours(1),
        );
        let first = generate(&a, &window(end));
        assert_eq!(first, generate(&a, &window(end)));
        let cpu = first.cpu_percent.unwrap();
        assert!((0.0..=100.0).contains(&cpu.value));
        assert_eq!(cpu.at.timestamp() % 60, 0, "aligned to the period");
        assert!(cpu.at < end && cpu.at >= end - chrono::Duration::minutes(2));
        // Another instance at the same time almost surely differs; the values move over time.
        let b = instance(
            "i-0fedcba9876543210",
            Ec2State::Running,
            a.launch_time.unwrap(),
        );
        assert_ne!(
            generate(&b, &window(end)).cpu_percent.unwrap().value,
            cpu.value
        );
        let later = generate(&a, &window(end + chrono::Duration::minutes(7)));
        assert_ne!(later.cpu_percent.unwrap().value, cpu.value);
    }

    #[test]
    fn stopped_or_just_launched_instances_should_have_no_metrics() {
        let end = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let stopped = instance(
            "i-0123abcd",
            Ec2State::Stopped,
            end - chrono::Duration::hours(1),
        );
        assert_eq!(generate(&stopped, &window(end)), InstanceMetrics::default());
        let fresh = instance(
            "i-0123abcd",
            Ec2State::Running,
            end - chrono::Duration::seconds(10),
        );
        assert_eq!(generate(&fresh, &window(end)), InstanceMetrics::default());
    }

    #[test]
    fn put_values_should_be_read_back_only_inside_the_window() {
        let end = DateTime::from_timestamp(1_750_000_000, 0).unwrap();
        let mut o = Overrides::default();
        o.put(MetricKind::Cpu, 42.5, end - chrono::Duration::seconds(90));
        let read = o.read(&window(end));
        assert_eq!(read.cpu_percent.unwrap().value, 42.5);
        assert_eq!(read.memory_used_percent, None);
        let much_later = o.read(&window(end + chrono::Duration::hours(1)));
        assert_eq!(much_later.cpu_percent, None);
    }
}
