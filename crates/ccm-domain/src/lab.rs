//! Lab records: what ccm keeps of the labs on each worker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{LabId, WorkerId};
use crate::lifecycle::LabAction;

crate::open_enum!(
    /// A CML lab's state. CML 2.9 labs are only ever in these three states (nodes have more).
    LabState {
        /// Defined, never started or wiped.
        DefinedOnCore = "DEFINED_ON_CORE",
        /// Stopped; nodes keep their disks.
        Stopped = "STOPPED",
        /// At least one node is queued, started, booted or disconnected.
        Started = "STARTED",
    }
);

/// One lab on one worker. Unique per (worker, lab id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabRecord {
    /// The worker it lives on.
    pub worker_id: WorkerId,
    /// CML's lab id.
    pub lab_id: LabId,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// State.
    pub state: LabState,
    /// Owner user id.
    pub owner: Option<String>,
    /// Owner user name.
    pub owner_username: Option<String>,
    /// Nodes.
    pub node_count: u32,
    /// Links.
    pub link_count: u32,
    /// Created in CML.
    pub created: Option<DateTime<Utc>>,
    /// Last modified in CML.
    pub modified: Option<DateTime<Utc>>,
    /// When ccm read it.
    pub observed_at: DateTime<Utc>,
}

impl LabRecord {
    /// Why CML would refuse `action` on the lab in its current state, if it would (a lab is
    /// started from any other state; only a started lab is stopped; a started lab must be
    /// stopped before it is wiped or deleted). For UIs: the reason on a disabled button.
    pub fn action_blocker(&self, action: LabAction) -> Option<&'static str> {
        let started = self.state == LabState::Started;
        match action {
            LabAction::Start if started => Some("the lab is already started"),
            LabAction::Stop if !started => Some("only a started lab can be stopped"),
            LabAction::Wipe | LabAction::Delete if started => Some("stop the lab first"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_states_should_parse_the_three_cml_states_and_keep_others() {
        for (text, state) in [
            ("DEFINED_ON_CORE", LabState::DefinedOnCore),
            ("STOPPED", LabState::Stopped),
            ("STARTED", LabState::Started),
        ] {
            assert_eq!(LabState::from(text), state);
            assert_eq!(String::from(state), text);
        }
        assert_eq!(LabState::from("QUEUED"), LabState::Other("QUEUED".into()));
    }

    #[test]
    fn lab_action_blockers_should_follow_the_lab_state() {
        let lab = |state| LabRecord {
            worker_id: WorkerId::new(),
            lab_id: LabId::parse("lab-1").unwrap(),
            title: "t".into(),
            description: None,
            state,
            owner: None,
            owner_username: None,
            node_count: 0,
            link_count: 0,
            created: None,
            modified: None,
            observed_at: chrono::Utc::now(),
        };
        let started = lab(LabState::Started);
        assert!(started.action_blocker(LabAction::Start).is_some());
        assert_eq!(started.action_blocker(LabAction::Stop), None);
        assert!(started.action_blocker(LabAction::Wipe).is_some());
        assert!(started.action_blocker(LabAction::Delete).is_some());
        let stopped = lab(LabState::Stopped);
        assert_eq!(stopped.action_blocker(LabAction::Start), None);
        assert!(stopped.action_blocker(LabAction::Stop).is_some());
        assert_eq!(stopped.action_blocker(LabAction::Wipe), None);
        assert_eq!(stopped.action_blocker(LabAction::Download), None);
    }
}
