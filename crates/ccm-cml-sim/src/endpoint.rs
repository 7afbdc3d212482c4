//! The CML endpoints the simulator serves, as an enum: used for per-endpoint counters and
//! per-endpoint fault injection, and recognised from the method and path before routing.

use std::fmt;
use std::str::FromStr;

use http::Method;

/// One CML 2.9 operation served by the simulator (method and path under `/api/v0`).
///
/// `Other` covers every request that matches none of them (unknown paths, wrong methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// `POST /authenticate`
    Authenticate,
    /// `POST /auth_extended`
    AuthExtended,
    /// `GET /authok`
    Authok,
    /// `DELETE /logout`
    Logout,
    /// `GET /web_session_timeout`
    WebSessionTimeout,
    /// `GET /system_information` (no auth)
    SystemInformation,
    /// `GET /system/maintenance_mode` (no auth)
    MaintenanceMode,
    /// `GET /system_health`
    SystemHealth,
    /// `GET /system_stats`
    SystemStats,
    /// `GET /system/compute_hosts`
    ComputeHosts,
    /// `GET /licensing`
    Licensing,
    /// `POST /licensing/registration`
    LicensingRegistration,
    /// `DELETE /licensing/deregistration`
    LicensingDeregistration,
    /// `PUT /licensing/registration/renew`
    LicensingRenew,
    /// `PUT /licensing/authorization/renew`
    AuthorizationRenew,
    /// `GET /labs`
    Labs,
    /// `GET /labs/{id}`
    Lab,
    /// `DELETE /labs/{id}`
    LabDelete,
    /// `PUT /labs/{id}/start`
    LabStart,
    /// `PUT /labs/{id}/stop`
    LabStop,
    /// `PUT /labs/{id}/wipe`
    LabWipe,
    /// `GET /labs/{id}/download`
    LabDownload,
    /// `GET /labs/{id}/events`
    LabEvents,
    /// `GET /labs/{id}/nodes`
    LabNodes,
    /// `GET /labs/{id}/state`
    LabState,
    /// `GET /labs/{id}/check_if_converged`
    LabConverged,
    /// `GET /labs/{id}/lab_element_state`
    LabElementState,
    /// `POST /import`
    Import,
    /// `GET /telemetry/events`
    TelemetryEvents,
    /// `GET /telemetry`
    Telemetry,
    /// `GET /users`
    Users,
    /// Anything else.
    Other,
}

/// Number of [`Endpoint`] variants (the size of per-endpoint counter arrays).
pub(crate) const ENDPOINT_COUNT: usize = Endpoint::ALL.len();

impl Endpoint {
    /// Every endpoint, in declaration order.
    pub const ALL: [Endpoint; 32] = [
        Endpoint::Authenticate,
        Endpoint::AuthExtended,
        Endpoint::Authok,
        Endpoint::Logout,
        Endpoint::WebSessionTimeout,
        Endpoint::SystemInformation,
        Endpoint::MaintenanceMode,
        Endpoint::SystemHealth,
        Endpoint::SystemStats,
        Endpoint::ComputeHosts,
        Endpoint::Licensing,
        Endpoint::LicensingRegistration,
        Endpoint::LicensingDeregistration,
        Endpoint::LicensingRenew,
        Endpoint::AuthorizationRenew,
        Endpoint::Labs,
        Endpoint::Lab,
        Endpoint::LabDelete,
        Endpoint::LabStart,
        Endpoint::LabStop,
        Endpoint::LabWipe,
        Endpoint::LabDownload,
        Endpoint::LabEvents,
        Endpoint::LabNodes,
        Endpoint::LabState,
        Endpoint::LabConverged,
        Endpoint::LabElementState,
        Endpoint::Import,
        Endpoint::TelemetryEvents,
        Endpoint::Telemetry,
        Endpoint::Users,
        Endpoint::Other,
    ];

    /// The stable snake_case name used in fault specs, counters and the control API.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Authenticate => "authenticate",
            Endpoint::AuthExtended => "auth_extended",
            Endpoint::Authok => "authok",
            Endpoint::Logout => "logout",
            Endpoint::WebSessionTimeout => "web_session_timeout",
            Endpoint::SystemInformation => "system_information",
            Endpoint::MaintenanceMode => "maintenance_mode",
            Endpoint::SystemHealth => "system_health",
            Endpoint::SystemStats => "system_stats",
            Endpoint::ComputeHosts => "compute_hosts",
            Endpoint::Licensing => "licensing",
            Endpoint::LicensingRegistration => "licensing_registration",
            Endpoint::LicensingDeregistration => "licensing_deregistration",
            Endpoint::LicensingRenew => "licensing_renew",
            Endpoint::AuthorizationRenew => "authorization_renew",
            Endpoint::Labs => "labs",
            Endpoint::Lab => "lab",
            Endpoint::LabDelete => "lab_delete",
            Endpoint::LabStart => "lab_start",
            Endpoint::LabStop => "lab_stop",
            Endpoint::LabWipe => "lab_wipe",
            Endpoint::LabDownload => "lab_download",
            Endpoint::LabEvents => "lab_events",
            Endpoint::LabNodes => "lab_nodes",
            Endpoint::LabState => "lab_state",
            Endpoint::LabConverged => "lab_converged",
            Endpoint::LabElementState => "lab_element_state",
            Endpoint::Import => "import",
            Endpoint::TelemetryEvents => "telemetry_events",
            Endpoint::Telemetry => "telemetry",
            Endpoint::Users => "users",
            Endpoint::Other => "other",
        }
    }

    /// The group name (`auth`, `system`, `licensing`, `labs`, `telemetry`, `users`, `other`),
    /// usable as an endpoint selector in fault specs.
    pub fn group(self) -> &'static str {
        use Endpoint::*;
        match self {
            Authenticate | AuthExtended | Authok | Logout | WebSessionTimeout => "auth",
            SystemInformation | MaintenanceMode | SystemHealth | SystemStats | ComputeHosts => {
                "system"
            }
            Licensing
            | LicensingRegistration
            | LicensingDeregistration
            | LicensingRenew
            | AuthorizationRenew => "licensing",
            Labs | Lab | LabDelete | LabStart | LabStop | LabWipe | LabDownload | LabEvents
            | LabNodes | LabState | LabConverged | LabElementState | Import => "labs",
            TelemetryEvents | Telemetry => "telemetry",
            Users => "users",
            Other => "other",
        }
    }

    /// Whether the operation needs a bearer token (all but four do).
    pub fn needs_auth(self) -> bool {
        !matches!(
            self,
            Endpoint::Authenticate
                | Endpoint::AuthExtended
                | Endpoint::SystemInformation
                | Endpoint::MaintenanceMode
                | Endpoint::Other
        )
    }

    /// Whether an older CML release may lack the operation, so that a client must read a 404
    /// as "not supported". The `older` fault applied to all endpoints only hits these.
    pub fn is_optional(self) -> bool {
        matches!(
            self,
            Endpoint::AuthExtended
                | Endpoint::MaintenanceMode
                | Endpoint::SystemHealth
                | Endpoint::SystemStats
                | Endpoint::ComputeHosts
                | Endpoint::Licensing
                | Endpoint::LabEvents
                | Endpoint::LabElementState
                | Endpoint::TelemetryEvents
                | Endpoint::Telemetry
        )
    }

    /// Recognises the endpoint from a request's method and path (with or without `/api/v0`).
    pub fn classify(method: &Method, path: &str) -> Endpoint {
        let path = path.strip_prefix("/api/v0").unwrap_or(path);
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut segs = path.split('/');
        let (a, b, c, d, rest) = (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        );
        if rest.is_some() {
            return Endpoint::Other;
        }
        let get = method == Method::GET;
        let post = method == Method::POST;
        let put = method == Method::PUT;
        let delete = method == Method::DELETE;
        match (a, b, c, d) {
            (Some("authenticate"), None, ..) if post => Endpoint::Authenticate,
            (Some("auth_extended"), None, ..) if post => Endpoint::AuthExtended,
            (Some("authok"), None, ..) if get => Endpoint::Authok,
            (Some("logout"), None, ..) if delete => Endpoint::Logout,
            (Some("web_session_timeout"), None, ..) if get => Endpoint::WebSessionTimeout,
            (Some("system_information"), None, ..) if get => Endpoint::SystemInformation,
            (Some("system"), Some("maintenance_mode"), None, _) if get => Endpoint::MaintenanceMode,
            (Some("system"), Some("compute_hosts"), None, _) if get => Endpoint::ComputeHosts,
            (Some("system_health"), None, ..) if get => Endpoint::SystemHealth,
            (Some("system_stats"), None, ..) if get => Endpoint::SystemStats,
            (Some("licensing"), None, ..) if get => Endpoint::Licensing,
            (Some("licensing"), Some("registration"), None, _) if post => {
                Endpoint::LicensingRegistration
            }
            (Some("licensing"), Some("deregistration"), None, _) if delete => {
                Endpoint::LicensingDeregistration
            }
            (Some("licensing"), Some("registration"), Some("renew"), None) if put => {
                Endpoint::LicensingRenew
            }
            (Some("licensing"), Some("authorization"), Some("renew"), None) if put => {
                Endpoint::AuthorizationRenew
            }
            (Some("labs"), None, ..) if get => Endpoint::Labs,
            (Some("labs"), Some(_), None, _) if get => Endpoint::Lab,
            (Some("labs"), Some(_), None, _) if delete => Endpoint::LabDelete,
            (Some("labs"), Some(_), Some(action), None) => match action {
                "start" if put => Endpoint::LabStart,
                "stop" if put => Endpoint::LabStop,
                "wipe" if put => Endpoint::LabWipe,
                "download" if get => Endpoint::LabDownload,
                "events" if get => Endpoint::LabEvents,
                "nodes" if get => Endpoint::LabNodes,
                "state" if get => Endpoint::LabState,
                "check_if_converged" if get => Endpoint::LabConverged,
                "lab_element_state" if get => Endpoint::LabElementState,
                _ => Endpoint::Other,
            },
            (Some("import"), None, ..) if post => Endpoint::Import,
            (Some("telemetry"), None, ..) if get => Endpoint::Telemetry,
            (Some("telemetry"), Some("events"), None, _) if get => Endpoint::TelemetryEvents,
            (Some("users"), None, ..) if get => Endpoint::Users,
            _ => Endpoint::Other,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not an endpoint name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown endpoint {0:?}")]
pub struct UnknownEndpoint(pub String);

impl FromStr for Endpoint {
    type Err = UnknownEndpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .iter()
            .copied()
            .find(|e| e.name() == s)
            .ok_or_else(|| UnknownEndpoint(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_should_recognise_every_served_path() {
        let cases = [
            (Method::POST, "/api/v0/authenticate", Endpoint::Authenticate),
            (
                Method::GET,
                "/api/v0/system_information",
                Endpoint::SystemInformation,
            ),
            (
                Method::GET,
                "/api/v0/system/maintenance_mode",
                Endpoint::MaintenanceMode,
            ),
            (
                Method::PUT,
                "/api/v0/licensing/authorization/renew",
                Endpoint::AuthorizationRenew,
            ),
            (Method::GET, "/api/v0/labs/abc", Endpoint::Lab),
            (Method::DELETE, "/api/v0/labs/abc", Endpoint::LabDelete),
            (Method::PUT, "/api/v0/labs/abc/start", Endpoint::LabStart),
            (
                Method::GET,
                "/api/v0/labs/abc/check_if_converged",
                Endpoint::LabConverged,
            ),
            (
                Method::GET,
                "/api/v0/telemetry/events",
                Endpoint::TelemetryEvents,
            ),
            (Method::GET, "/api/v0/labs/abc/start", Endpoint::Other),
            (Method::GET, "/api/v0/nothing/here/at/all", Endpoint::Other),
        ];
        for (m, p, want) in cases {
            assert_eq!(Endpoint::classify(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn names_should_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(e.name().parse::<Endpoint>(), Ok(e));
        }
    }
}
