//! Lab records: what ccm keeps of the labs on each worker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{LabId, WorkerId};

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
}
