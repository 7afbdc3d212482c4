//! The metrics of webhook delivery: names (used at the record sites) and their descriptions.
//! Labelled by webhook name only (a handful, from the configuration).

/// Counter `{webhook}`: events delivered (2xx).
pub const DELIVERED: &str = "ccm_webhook_delivered_total";
/// Counter `{webhook, outcome}`: attempts by outcome (`ok`, `http_5xx`, `http_4xx`,
/// `http_3xx`, `transport`, `timeout`, `breaker_open`).
pub const ATTEMPTS: &str = "ccm_webhook_attempts_total";
/// Histogram `{webhook}`: seconds per attempt.
pub const ATTEMPT_SECONDS: &str = "ccm_webhook_attempt_seconds";
/// Gauge `{webhook}`: log positions between the cursor and the head (pending, upper bound).
pub const LAG: &str = "ccm_webhook_lag_events";
/// Gauge `{webhook}`: failed attempts in a row.
pub const CONSECUTIVE_FAILURES: &str = "ccm_webhook_consecutive_failures";
/// Gauge `{webhook}`: Unix time of the last delivery.
pub const LAST_DELIVERED: &str = "ccm_webhook_last_delivered_timestamp_seconds";
/// Gauge `{webhook}`: 1 while this replica holds the delivery lease, else 0.
pub const ACTIVE: &str = "ccm_webhook_active";

/// Registers help texts and units with the installed recorder (call once at start).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DELIVERED,
        Unit::Count,
        "Events delivered to a webhook (2xx)"
    );
    describe_counter!(
        ATTEMPTS,
        Unit::Count,
        "Webhook delivery attempts by outcome"
    );
    describe_histogram!(
        ATTEMPT_SECONDS,
        Unit::Seconds,
        "Duration of one webhook delivery attempt"
    );
    describe_gauge!(
        LAG,
        Unit::Count,
        "Event-log positions between a webhook's cursor and the log's head"
    );
    describe_gauge!(
        CONSECUTIVE_FAILURES,
        Unit::Count,
        "Failed webhook delivery attempts in a row"
    );
    describe_gauge!(
        LAST_DELIVERED,
        Unit::Seconds,
        "Unix time of the last event delivered to a webhook"
    );
    describe_gauge!(
        ACTIVE,
        Unit::Count,
        "1 while this replica delivers the webhook, 0 on standby"
    );
}
