//! Runtime settings: what operators change while ccm runs (stored in the database, applied
//! without a restart), with validation that names the offending key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::idle::IdleSettings;
use crate::schedule::ScheduleRule;

/// Settings operators change at run time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Idle detection and auto-pause.
    pub idle: IdleSettings,
    /// What is polled, and how often.
    pub polling: PollingSettings,
    /// Off-hours schedules, per worker (`worker:<id>`) or tag (`tag:key=value`): the first
    /// rule naming a worker by id applies, else the first matching tag.
    pub schedules: Vec<ScheduleRule>,
}

/// Poll intervals and switches. Each worker's polls are spread evenly over the interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollingSettings {
    /// EC2 state sync (batched per region).
    pub ec2_enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub ec2_interval: Duration,
    /// CML sync of every running worker.
    pub cml_enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub cml_interval: Duration,
    /// CloudWatch metrics of running workers (batched).
    pub metrics_enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// Labs refresh of every running worker.
    pub labs_enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub labs_interval: Duration,
    /// Activity (telemetry) reads and the idle policy.
    pub activity_enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub activity_interval: Duration,
    /// Periodic import of instances matching the configured import filter.
    pub auto_import_enabled: bool,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub auto_import_interval: Duration,
    /// How long a value whose source fails is still shown (stale, with its age).
    #[serde(with = "humantime_serde")]
    pub stale_max_age: Duration,
}

impl PollingSettings {
    /// The defaults with every background job switched off: for benchmarks and tests that
    /// trigger the cycles themselves.
    pub fn all_off() -> Self {
        Self {
            ec2_enabled: false,
            cml_enabled: false,
            metrics_enabled: false,
            labs_enabled: false,
            activity_enabled: false,
            auto_import_enabled: false,
            ..Self::default()
        }
    }
}

impl Default for PollingSettings {
    fn default() -> Self {
        let mins = |m: u64| Duration::from_secs(m * 60);
        Self {
            ec2_enabled: true,
            ec2_interval: mins(1),
            cml_enabled: true,
            cml_interval: mins(1),
            metrics_enabled: true,
            metrics_interval: mins(5),
            labs_enabled: true,
            labs_interval: mins(5),
            activity_enabled: true,
            activity_interval: mins(5),
            auto_import_enabled: false,
            auto_import_interval: mins(15),
            stale_max_age: mins(10),
        }
    }
}

/// A setting with a value outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    /// The dotted key, e.g. `polling.cml_interval`.
    pub key: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

fn range(
    key: &'static str,
    v: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), SettingsError> {
    if v < min || v > max {
        return Err(SettingsError {
            key,
            message: format!(
                "{} is out of range ({} to {})",
                humantime::format_duration(v),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        });
    }
    Ok(())
}

impl RuntimeSettings {
    /// Checks every value; the first problem is returned, naming its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let s = Duration::from_secs;
        let day = s(86_400);
        let p = &self.polling;
        range("polling.ec2_interval", p.ec2_interval, s(5), day)?;
        range("polling.cml_interval", p.cml_interval, s(1), day)?;
        range("polling.metrics_interval", p.metrics_interval, s(60), day)?;
        range("polling.labs_interval", p.labs_interval, s(5), day)?;
        range("polling.activity_interval", p.activity_interval, s(5), day)?;
        range(
            "polling.auto_import_interval",
            p.auto_import_interval,
            s(60),
            day,
        )?;
        range("polling.stale_max_age", p.stale_max_age, s(10), 7 * day)?;
        let i = &self.idle;
        range("idle.timeout", i.timeout, s(60), 30 * day)?;
        range(
            "idle.snooze_after_resume",
            i.snooze_after_resume,
            s(0),
            30 * day,
        )?;
        range("idle.activity_max_age", i.activity_max_age, s(10), day)?;
        range("idle.warning_before", i.warning_before, s(0), day)?;
        range("idle.break_timeout", i.break_timeout, s(60), 30 * day)?;
        range(
            "idle.session_end_timeout",
            i.session_end_timeout,
            s(60),
            30 * day,
        )?;
        range("idle.run_end_after", i.run_end_after, s(60), 30 * day)?;
        range("idle.run_end_timeout", i.run_end_timeout, s(60), 30 * day)?;
        range(
            "idle.no_return_timeout",
            i.no_return_timeout,
            s(60),
            30 * day,
        )?;
        range(
            "idle.nobody_since_start_timeout",
            i.nobody_since_start_timeout,
            s(60),
            30 * day,
        )?;
        if i.no_return_percent > 100 {
            return Err(SettingsError {
                key: "idle.no_return_percent",
                message: format!("{} is out of range (0 to 100)", i.no_return_percent),
            });
        }
        range("idle.return_timeout", i.return_timeout, s(60), 30 * day)?;
        range(
            "idle.return_timeout_max",
            i.return_timeout_max,
            s(60),
            30 * day,
        )?;
        if !i.midday_hours.trim().is_empty() {
            crate::idle::parse_midday_hours(&i.midday_hours).map_err(|message| SettingsError {
                key: "idle.midday_hours",
                message,
            })?;
        }
        if !i.local_time_zone.is_empty() && jiff::tz::TimeZone::get(&i.local_time_zone).is_err() {
            return Err(SettingsError {
                key: "idle.local_time_zone",
                message: format!("{:?} is not an IANA time zone", i.local_time_zone),
            });
        }
        range("idle.return_window", i.return_window, s(0), s(12 * 3600))?;
        range("idle.return_memory", i.return_memory, day, 365 * day)?;
        if i.return_min_percent > 100 {
            return Err(SettingsError {
                key: "idle.return_min_percent",
                message: format!("{} is out of range (0 to 100)", i.return_min_percent),
            });
        }
        if i.busy_fleet_percent > 100 {
            return Err(SettingsError {
                key: "idle.busy_fleet_percent",
                message: format!("{} is out of range (0 to 100)", i.busy_fleet_percent),
            });
        }
        if self.schedules.len() > 1000 {
            return Err(SettingsError {
                key: "schedules",
                message: format!("{} rules; at most 1000", self.schedules.len()),
            });
        }
        Ok(())
    }

    /// The dotted keys whose values differ between `self` and `other` (for the
    /// `settings.updated` event).
    pub fn changed_keys(&self, other: &Self) -> Vec<String> {
        let (Ok(a), Ok(b)) = (serde_json::to_value(self), serde_json::to_value(other)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        out
    }
}

fn diff(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            for (k, va) in x {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match y.get(k) {
                    Some(vb) => diff(&key, va, vb, out),
                    None => out.push(key),
                }
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_should_be_valid() {
        RuntimeSettings::default().validate().unwrap();
    }

    #[test]
    fn out_of_range_values_should_name_their_key() {
        let mut s = RuntimeSettings::default();
        s.polling.cml_interval = Duration::ZERO;
        let err = s.validate().unwrap_err();
        assert_eq!(err.key, "polling.cml_interval");
        assert!(
            err.to_string()
                .starts_with("polling.cml_interval: 0s is out of range")
        );

        let mut s = RuntimeSettings::default();
        s.idle.timeout = Duration::from_secs(5);
        assert_eq!(s.validate().unwrap_err().key, "idle.timeout");

        let mut s = RuntimeSettings::default();
        s.idle.midday_hours = "14:00-11:00".into();
        assert_eq!(s.validate().unwrap_err().key, "idle.midday_hours");
        s.idle.midday_hours = String::new();
        s.validate().unwrap();
        s.idle.local_time_zone = "Mars/Olympus".into();
        assert_eq!(s.validate().unwrap_err().key, "idle.local_time_zone");
        s.idle.local_time_zone = "Europe/Paris".into();
        s.validate().unwrap();
    }

    #[test]
    fn settings_should_parse_from_json_with_humantime_and_reject_unknown_keys() {
        let s: RuntimeSettings =
            serde_json::from_str(r#"{"idle":{"timeout":"30m","dry_run":true}}"#).unwrap();
        assert_eq!(s.idle.timeout, Duration::from_secs(1800));
        assert!(s.idle.dry_run);
        assert_eq!(s.polling, PollingSettings::default());
        let err =
            serde_json::from_str::<RuntimeSettings>(r#"{"idle":{"timeuot":"30m"}}"#).unwrap_err();
        assert!(err.to_string().contains("timeuot"));
    }

    #[test]
    fn changed_keys_should_list_what_differs() {
        let a = RuntimeSettings::default();
        let mut b = a.clone();
        b.idle.dry_run = true;
        b.polling.cml_interval = Duration::from_secs(30);
        assert_eq!(b.changed_keys(&a), ["idle.dry_run", "polling.cml_interval"]);
        assert!(a.changed_keys(&a).is_empty());
    }
}
