//! What counts as someone using a worker: CML telemetry events in the activity categories,
//! except `user_activity` caused by ccm's own CML account (learnt from `/auth_extended`, not
//! guessed from a pattern), and running nodes.

use chrono::{DateTime, Utc};

/// Telemetry categories that mean a person did something with labs or nodes.
pub const ACTIVITY_CATEGORIES: &[&str] = &[
    "start_lab",
    "stop_lab",
    "import_lab",
    "export_lab",
    "queue_node",
    "start_node",
    "stop_node",
    "boot_node",
    "wipe_node",
    "user_activity",
];

/// One telemetry event, reduced to what activity detection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryEvent {
    /// The CML category (unknown categories are kept and ignored).
    pub category: String,
    /// When it happened (UTC).
    pub timestamp: DateTime<Utc>,
    /// `data.user_id`, when the event carries one.
    pub user_id: Option<String>,
}

/// Whether `event` is activity. `own_user_id` is ccm's own CML user id: its logins are noise.
/// A `user_activity` event without a user id counts (when in doubt, a worker is in use).
pub fn is_activity(event: &TelemetryEvent, own_user_id: Option<&str>) -> bool {
    if !ACTIVITY_CATEGORIES.contains(&event.category.as_str()) {
        return false;
    }
    if event.category == "user_activity" {
        return match (event.user_id.as_deref(), own_user_id) {
            (Some(user), Some(own)) => user != own,
            _ => true,
        };
    }
    true
}

/// The latest activity among `events`, ignoring events in the future of `now` by more than a
/// minute (a CML with a wrong clock must not keep a worker awake for ever).
pub fn latest_activity<'a>(
    events: impl IntoIterator<Item = &'a TelemetryEvent>,
    own_user_id: Option<&str>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    latest_activity_event(events, own_user_id, now).map(|(at, _)| at)
}

/// The latest activity among `events` (rules of [`latest_activity`]) with the event itself,
/// so that the worker page can say what it was and who caused it.
pub fn latest_activity_event<'a>(
    events: impl IntoIterator<Item = &'a TelemetryEvent>,
    own_user_id: Option<&str>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, &'a TelemetryEvent)> {
    let horizon = now + chrono::Duration::minutes(1);
    events
        .into_iter()
        .filter(|e| is_activity(e, own_user_id) && e.timestamp <= horizon)
        .map(|e| (e.timestamp.min(now), e))
        .max_by_key(|(at, _)| *at)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    const OWN: &str = "00000000-0000-4000-a000-000000000000";
    const ALICE: &str = "2f0c8e43-6a1d-4b7e-9c55-0e3d1a9b8f21";

    fn ev(category: &str, secs: i64, user: Option<&str>) -> TelemetryEvent {
        TelemetryEvent {
            category: category.into(),
            timestamp: Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap(),
            user_id: user.map(str::to_owned),
        }
    }

    #[test]
    fn activity_rules_should_hold_for_every_category_kind() {
        let cases = [
            (ev("start_lab", 0, None), Some(OWN), true),
            (ev("boot_node", 0, None), Some(OWN), true),
            (ev("wipe_node", 0, None), None, true),
            (ev("export_lab", 0, Some(OWN)), Some(OWN), true),
            (ev("user_activity", 0, Some(ALICE)), Some(OWN), true),
            (ev("user_activity", 0, Some(OWN)), Some(OWN), false),
            (ev("user_activity", 0, None), Some(OWN), true),
            (ev("user_activity", 0, Some(OWN)), None, true),
            (ev("system_stats", 0, None), Some(OWN), false),
            (ev("running_nodes", 0, None), Some(OWN), false),
            (ev("cpuinfo", 0, None), Some(OWN), false),
            (ev("wipe_lab", 0, None), Some(OWN), false),
            (ev("some_future_category", 0, None), Some(OWN), false),
        ];
        for (event, own, expected) in cases {
            assert_eq!(is_activity(&event, own), expected, "{event:?} own={own:?}");
        }
    }

    #[test]
    fn latest_activity_should_skip_noise_and_own_logins() {
        let now = Utc.timestamp_opt(1_800_001_000, 0).unwrap();
        let events = [
            ev("start_lab", 10, Some(ALICE)),
            ev("user_activity", 500, Some(OWN)),
            ev("system_stats", 900, None),
            ev("user_activity", 300, Some(ALICE)),
        ];
        let latest = latest_activity(&events, Some(OWN), now).unwrap();
        assert_eq!(latest, Utc.timestamp_opt(1_800_000_300, 0).unwrap());
        let (_, event) = latest_activity_event(&events, Some(OWN), now).unwrap();
        assert_eq!(event.category, "user_activity");
        assert_eq!(event.user_id.as_deref(), Some(ALICE));
        assert_eq!(latest_activity(&[], Some(OWN), now), None);
    }

    #[test]
    fn events_from_a_clock_far_ahead_should_be_ignored() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let events = [ev("start_lab", 3600, None), ev("start_lab", 30, None)];
        assert_eq!(
            latest_activity(&events, None, now),
            Some(now),
            "30 s ahead is clamped to now"
        );
    }
}
