//! Labs (CML_API.md §4): details, element states, import answer.

use std::collections::BTreeMap;

use ccm_domain::ids::{InvalidValue, LabId, WorkerId};
use ccm_domain::lab::{LabRecord, LabState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::system::null_as_default;
use crate::timestamp;
use ccm_domain::open_enum;

/// `GET /labs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lab {
    /// Lab id.
    #[serde(default)]
    pub id: Option<String>,
    /// Created.
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub created: Option<DateTime<Utc>>,
    /// Last modified (bumped by topology edits and state changes).
    #[serde(default, deserialize_with = "timestamp::lenient")]
    pub modified: Option<DateTime<Utc>>,
    /// Title.
    #[serde(default)]
    pub lab_title: Option<String>,
    /// Description.
    #[serde(default)]
    pub lab_description: Option<String>,
    /// Notes.
    #[serde(default)]
    pub lab_notes: Option<String>,
    /// Owner user id.
    #[serde(default)]
    pub owner: Option<String>,
    /// Owner user name.
    #[serde(default)]
    pub owner_username: Option<String>,
    /// Owner full name.
    #[serde(default)]
    pub owner_fullname: Option<String>,
    /// `DEFINED_ON_CORE | STOPPED | STARTED`, unknown values kept.
    pub state: LabState,
    /// Nodes.
    #[serde(default, deserialize_with = "super::opt_count")]
    pub node_count: Option<u64>,
    /// Links.
    #[serde(default, deserialize_with = "super::opt_count")]
    pub link_count: Option<u64>,
    /// What the caller may do (`lab_admin`, `lab_edit`, `lab_exec`, `lab_view`).
    #[serde(default)]
    pub effective_permissions: Option<Vec<String>>,
}

impl Lab {
    /// The domain record of this lab on `worker_id`, read at `observed_at`. `requested` is
    /// the id the lab was fetched by, used when the answer has none.
    pub fn to_record(
        &self,
        worker_id: WorkerId,
        requested: &LabId,
        observed_at: DateTime<Utc>,
    ) -> Result<LabRecord, InvalidValue> {
        let lab_id = match &self.id {
            Some(id) => LabId::parse(id)?,
            None => requested.clone(),
        };
        Ok(LabRecord {
            worker_id,
            lab_id,
            title: self.lab_title.clone().unwrap_or_default(),
            description: self.lab_description.clone().filter(|d| !d.is_empty()),
            state: self.state.clone(),
            owner: self.owner.clone(),
            owner_username: self.owner_username.clone(),
            node_count: self
                .node_count
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            link_count: self
                .link_count
                .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            created: self.created,
            modified: self.modified,
            observed_at,
        })
    }
}

open_enum!(
    /// A node's state (labs have only three; nodes have these six).
    NodeState {
        /// Defined, never started or wiped.
        DefinedOnCore = "DEFINED_ON_CORE",
        /// Stopped; the disk is kept.
        Stopped = "STOPPED",
        /// Started, booting.
        Started = "STARTED",
        /// Waiting for a compute.
        Queued = "QUEUED",
        /// Booted.
        Booted = "BOOTED",
        /// Its compute host was lost.
        Disconnected = "DISCONNECTED",
    }
);

/// `GET /labs/{id}/lab_element_state`: the state of every node, link and interface.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabElementState {
    /// Node states by node id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub nodes: BTreeMap<String, NodeState>,
    /// Link states by link id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub links: BTreeMap<String, LabState>,
    /// Interface states by interface id.
    #[serde(default, deserialize_with = "null_as_default")]
    pub interfaces: BTreeMap<String, LabState>,
}

impl LabElementState {
    /// True when the lab has nodes and every one is `BOOTED`.
    pub fn all_nodes_booted(&self) -> bool {
        !self.nodes.is_empty() && self.nodes.values().all(|s| *s == NodeState::Booted)
    }
}

/// `POST /import`: the new lab's id and CML's warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResponse {
    /// The new lab's id.
    pub id: String,
    /// Warnings about the topology.
    #[serde(default, deserialize_with = "null_as_default")]
    pub warnings: Vec<String>,
}
