//! EC2 instance states and the one table that says which changes are valid.
//!
//! ccm learns states by polling, so a change may skip intermediate states (a poll can see
//! `running` and then `stopped`). The table therefore allows exactly the changes that are
//! reachable in EC2's lifecycle without passing through a final state, plus ccm's own `failed`
//! (provisioning failed) and `unknown` (never seen). Everything else is an
//! [`InvalidTransition`]: leaving `terminated`, `shutting-down` turning into anything but
//! `terminated`, going back to `unknown`, or a `failed` worker coming alive.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::InvalidValue;

/// The state of a worker's EC2 instance, as EC2 names it, plus ccm's `failed` and `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ec2State {
    /// Launching or starting.
    Pending,
    /// Running (CML may still be booting).
    Running,
    /// Stopping.
    Stopping,
    /// Stopped: no compute cost, no IPs.
    Stopped,
    /// Terminating.
    ShuttingDown,
    /// Gone for good.
    Terminated,
    /// ccm could not provision it; the reason is on the worker.
    Failed,
    /// Not observed yet.
    Unknown,
}

impl Ec2State {
    /// Every state, in lifecycle order (for tables and tests).
    pub const ALL: [Ec2State; 8] = [
        Self::Pending,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::ShuttingDown,
        Self::Terminated,
        Self::Failed,
        Self::Unknown,
    ];

    /// The EC2 / API spelling (`shutting-down`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }

    /// Whether `self → to` is a valid change. Staying in the same state is always valid (and is
    /// not a change).
    pub fn can_become(self, to: Ec2State) -> bool {
        use Ec2State::*;
        if self == to {
            return true;
        }
        match (self, to) {
            // Nothing becomes unknown again, and terminated is final.
            (_, Unknown) | (Terminated, _) => false,
            // The first observation may be anything.
            (Unknown, _) => true,
            // Termination only finishes.
            (ShuttingDown, Terminated) => true,
            (ShuttingDown, _) => false,
            // Only a worker being provisioned can fail to be provisioned.
            (Pending, Failed) => true,
            (_, Failed) => false,
            // A failed worker can only be cleaned up.
            (Failed, ShuttingDown | Terminated) => true,
            (Failed, _) => false,
            // Every other lifecycle state reaches every other one (pending → running →
            // stopping → stopped → pending …, and any of them → shutting-down → terminated).
            (Pending | Running | Stopping | Stopped, _) => true,
        }
    }

    /// Checks `self → to` against the table.
    pub fn transition(self, to: Ec2State) -> Result<Ec2State, InvalidTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }

    /// Whether an instance in this state has (or may have) addresses and a running CML.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Running)
    }

    /// Whether the instance is gone or going.
    pub fn is_final(self) -> bool {
        matches!(self, Self::ShuttingDown | Self::Terminated)
    }
}

impl fmt::Display for Ec2State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ec2State {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                InvalidValue::new(
                    "EC2 state",
                    s,
                    "pending, running, stopping, stopped, shutting-down, terminated, failed or unknown",
                )
            })
    }
}

/// A state change the transition table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid EC2 state change from {from} to {to}")]
pub struct InvalidTransition {
    /// The current state.
    pub from: Ec2State,
    /// The state asked for or observed.
    pub to: Ec2State,
}

/// The result of one side of EC2's status checks (DescribeInstanceStatus): the *system*
/// check watches AWS's host, the *instance* check the guest (network, OS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    /// All checks passed.
    Ok,
    /// A check failed.
    Impaired,
    /// Checks are still running (the instance just started).
    Initializing,
    /// Not enough data yet.
    InsufficientData,
    /// Not applicable (the instance is not running).
    NotApplicable,
    /// A value this version of ccm does not know.
    Unknown,
}

impl CheckStatus {
    /// Every value (for schemas and tests).
    pub const ALL: [CheckStatus; 6] = [
        Self::Ok,
        Self::Impaired,
        Self::Initializing,
        Self::InsufficientData,
        Self::NotApplicable,
        Self::Unknown,
    ];

    /// Parses EC2's spelling; anything unexpected becomes [`CheckStatus::Unknown`].
    pub fn from_ec2(s: &str) -> Self {
        match s {
            "ok" => Self::Ok,
            "impaired" => Self::Impaired,
            "initializing" => Self::Initializing,
            "insufficient-data" => Self::InsufficientData,
            "not-applicable" => Self::NotApplicable,
            _ => Self::Unknown,
        }
    }

    /// EC2's spelling (`insufficient-data`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Impaired => "impaired",
            Self::Initializing => "initializing",
            Self::InsufficientData => "insufficient-data",
            Self::NotApplicable => "not-applicable",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Both of an instance's EC2 status checks, as one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChecks {
    /// The system (AWS host) check.
    pub system: CheckStatus,
    /// The instance (guest) check.
    pub instance: CheckStatus,
}

impl StatusChecks {
    /// Whether either check is `impaired`.
    pub fn impaired(&self) -> bool {
        self.system == CheckStatus::Impaired || self.instance == CheckStatus::Impaired
    }

    /// Which checks are impaired, for operators: `system`, `instance` or `system and
    /// instance`; `None` when neither is.
    pub fn impaired_text(&self) -> Option<&'static str> {
        match (
            self.system == CheckStatus::Impaired,
            self.instance == CheckStatus::Impaired,
        ) {
            (true, true) => Some("system and instance status checks impaired"),
            (true, false) => Some("system status check impaired"),
            (false, true) => Some("instance status check impaired"),
            (false, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ec2State::{self, *};

    /// The whole table, row by row: `from`, then the states it may become (besides itself).
    const VALID: &[(Ec2State, &[Ec2State])] = &[
        (
            Pending,
            &[Running, Stopping, Stopped, ShuttingDown, Terminated, Failed],
        ),
        (
            Running,
            &[Pending, Stopping, Stopped, ShuttingDown, Terminated],
        ),
        (
            Stopping,
            &[Pending, Running, Stopped, ShuttingDown, Terminated],
        ),
        (
            Stopped,
            &[Pending, Running, Stopping, ShuttingDown, Terminated],
        ),
        (ShuttingDown, &[Terminated]),
        (Terminated, &[]),
        (Failed, &[ShuttingDown, Terminated]),
        (
            Unknown,
            &[
                Pending,
                Running,
                Stopping,
                Stopped,
                ShuttingDown,
                Terminated,
                Failed,
            ],
        ),
    ];

    #[test]
    fn every_pair_of_states_should_follow_the_table() {
        let mut checked = 0;
        for (from, allowed) in VALID {
            for to in Ec2State::ALL {
                let expected = *from == to || allowed.contains(&to);
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                match from.transition(to) {
                    Ok(state) => {
                        assert!(expected);
                        assert_eq!(state, to);
                    }
                    Err(err) => {
                        assert!(!expected);
                        assert_eq!((err.from, err.to), (*from, to));
                        assert!(err.to_string().contains(to.as_str()));
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 64, "the table must cover all 8 x 8 pairs");
    }

    #[test]
    fn states_should_round_trip_through_their_aws_names() {
        for state in Ec2State::ALL {
            assert_eq!(state.as_str().parse::<Ec2State>().unwrap(), state);
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        assert!("Running".parse::<Ec2State>().is_err());
    }

    #[test]
    fn check_statuses_should_serialize_as_ec2_spells_them() {
        for status in super::CheckStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            if status != super::CheckStatus::Unknown {
                assert_eq!(super::CheckStatus::from_ec2(status.as_str()), status);
            }
        }
        assert_eq!(
            super::CheckStatus::from_ec2("Impaired"),
            super::CheckStatus::Unknown
        );
    }
}
