//! [`Endpoint`]: the CML operations this client calls, with what the client needs to know of
//! each (name for errors and logs, auth, idempotency, optionality, bulkhead).

use std::fmt;

use ccm_resilience::bulkhead::{self, BulkheadId};

/// One CML 2.9 operation the client uses (CML_API.md §1–§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /authenticate`
    Authenticate,
    /// `POST /auth_extended`
    AuthExtended,
    /// `GET /authok`
    Authok,
    /// `DELETE /logout`
    Logout,
    /// `GET /system_information` (no auth)
    SystemInformation,
    /// `GET /system_health`
    SystemHealth,
    /// `GET /system_stats`
    SystemStats,
    /// `GET /licensing`
    Licensing,
    /// `POST /licensing/registration`
    LicensingRegistration,
    /// `DELETE /licensing/deregistration`
    LicensingDeregistration,
    /// `GET /labs`
    Labs,
    /// `GET /labs/{id}`
    Lab,
    /// `PUT /labs/{id}/start`
    LabStart,
    /// `PUT /labs/{id}/stop`
    LabStop,
    /// `PUT /labs/{id}/wipe`
    LabWipe,
    /// `DELETE /labs/{id}`
    LabDelete,
    /// `GET /labs/{id}/download`
    LabDownload,
    /// `GET /labs/{id}/lab_element_state`
    LabElementState,
    /// `POST /import`
    Import,
    /// `GET /telemetry/events`
    TelemetryEvents,
}

impl Endpoint {
    /// The snake_case name used in errors, logs and reasons (`system_health`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Authenticate => "authenticate",
            Self::AuthExtended => "auth_extended",
            Self::Authok => "authok",
            Self::Logout => "logout",
            Self::SystemInformation => "system_information",
            Self::SystemHealth => "system_health",
            Self::SystemStats => "system_stats",
            Self::Licensing => "licensing",
            Self::LicensingRegistration => "licensing_registration",
            Self::LicensingDeregistration => "licensing_deregistration",
            Self::Labs => "labs",
            Self::Lab => "lab",
            Self::LabStart => "lab_start",
            Self::LabStop => "lab_stop",
            Self::LabWipe => "lab_wipe",
            Self::LabDelete => "lab_delete",
            Self::LabDownload => "lab_download",
            Self::LabElementState => "lab_element_state",
            Self::Import => "import",
            Self::TelemetryEvents => "telemetry_events",
        }
    }

    /// Whether the operation needs a bearer token.
    pub const fn needs_auth(self) -> bool {
        !matches!(
            self,
            Self::Authenticate | Self::AuthExtended | Self::SystemInformation
        )
    }

    /// Whether it is a login call (its 401/403 mean bad credentials).
    pub const fn is_login(self) -> bool {
        matches!(self, Self::Authenticate | Self::AuthExtended)
    }

    /// Whether an older CML may lack the operation: a 404 then means "not supported", not a
    /// failure (CML_API.md §6; `/labs/{id}` is not optional — there 404 means no such lab).
    pub const fn is_optional(self) -> bool {
        matches!(
            self,
            Self::AuthExtended
                | Self::SystemHealth
                | Self::SystemStats
                | Self::Licensing
                | Self::LabElementState
                | Self::TelemetryEvents
        )
    }

    /// Whether repeating the operation is safe: every GET, and the lab PUTs (start, stop and
    /// wipe are no-ops when already done). Delete, import, login and the licensing writes are
    /// not.
    pub const fn is_idempotent(self) -> bool {
        !matches!(
            self,
            Self::Authenticate
                | Self::AuthExtended
                | Self::Logout
                | Self::LicensingRegistration
                | Self::LicensingDeregistration
                | Self::LabDelete
                | Self::Import
        )
    }

    /// The bulkhead the call runs in: polling reads in `cml_poll`, lab and licence work in
    /// `labs`, logins and logout in none (they happen inside other calls or on their own).
    pub const fn bulkhead(self) -> Option<BulkheadId> {
        match self {
            Self::SystemInformation
            | Self::SystemHealth
            | Self::SystemStats
            | Self::Licensing
            | Self::Labs
            | Self::Lab
            | Self::LabElementState
            | Self::TelemetryEvents
            | Self::Authok => Some(bulkhead::CML_POLL),
            Self::LicensingRegistration
            | Self::LicensingDeregistration
            | Self::LabStart
            | Self::LabStop
            | Self::LabWipe
            | Self::LabDelete
            | Self::LabDownload
            | Self::Import => Some(bulkhead::LABS),
            Self::Authenticate | Self::AuthExtended | Self::Logout => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
