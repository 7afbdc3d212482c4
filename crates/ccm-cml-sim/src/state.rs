//! The mutable state of one simulated controller: sessions, labs and nodes, licensing and the
//! telemetry log. It is created on first use (idle workers carry none of it), and every access
//! first "advances" it to the current tokio time: due node transitions and licence outcomes
//! are applied lazily, in time order, with the timestamps at which they happened. No task or
//! timer runs per worker.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use crate::clock::SimClock;
use crate::cml_error::CmlError;
use crate::config::{CmlSimConfig, Password};

/// The built-in admin's id, as on a real controller.
pub(crate) const ADMIN_ID: Uuid = Uuid::from_u128(0x0000_0000_0000_4000_a000_0000_0000_0000);
/// The simulated non-admin user's id.
pub(crate) const STUDENT_ID: Uuid = Uuid::from_u128(0x5b0f_3c4e_8a2d_4c1e_9f6a_7d3b_2e1c_0a94);
/// The non-admin user's name and password.
pub(crate) const STUDENT_NAME: &str = "student";

/// Most lab events kept per lab.
const LAB_EVENT_CAP: usize = 1_000;

/// A user of every simulated controller (users are fleet-wide and read-only).
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) id: Uuid,
    pub(crate) username: String,
    pub(crate) password: Password,
    pub(crate) fullname: String,
    pub(crate) admin: bool,
}

/// The seeded users: the configured admin and one non-admin (`student`/`student`).
pub(crate) fn seed_users(cfg: &CmlSimConfig) -> Vec<User> {
    vec![
        User {
            id: ADMIN_ID,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            fullname: "Administrator".to_owned(),
            admin: true,
        },
        User {
            id: STUDENT_ID,
            username: STUDENT_NAME.to_owned(),
            password: Password::from(STUDENT_NAME),
            fullname: "Simulated Student".to_owned(),
            admin: false,
        },
    ]
}

/// A UUID4 that is stable for a worker index and a salt.
pub(crate) fn stable_uuid(index: usize, salt: u64) -> Uuid {
    let mut x = (index as u64) ^ salt.rotate_left(17);
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        x = splitmix64(x);
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// RFC 3339 with `+00:00`, as CML writes lab and licensing times.
pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// What the operation sees of the world: configuration, clock, and the worker's flags.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a CmlSimConfig,
    pub(crate) clock: &'a SimClock,
    pub(crate) now: Instant,
    pub(crate) index: usize,
    pub(crate) ready: bool,
    pub(crate) disconnected: bool,
    pub(crate) ssms_unreachable: bool,
}

impl Ctx<'_> {
    fn wall(&self, at: Instant) -> DateTime<Utc> {
        self.clock.wall(at)
    }

    fn wall_now(&self) -> DateTime<Utc> {
        self.clock.wall(self.now)
    }
}

// === sessions ===

/// Issued-token bookkeeping: tokens carry a sequence number (`jti`); revocation is by number.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    next: u64,
    min_valid: u64,
    revoked: HashSet<u64>,
    user_min_valid: HashMap<Uuid, u64>,
}

impl Tokens {
    pub(crate) fn issue(&mut self) -> u64 {
        let jti = self.next;
        self.next += 1;
        jti
    }

    pub(crate) fn is_valid(&self, jti: u64, user: Uuid) -> bool {
        jti >= self.min_valid
            && jti < self.next
            && jti >= self.user_min_valid.get(&user).copied().unwrap_or(0)
            && !self.revoked.contains(&jti)
    }

    pub(crate) fn revoke(&mut self, jti: u64) {
        if jti >= self.min_valid {
            self.revoked.insert(jti);
        }
    }

    pub(crate) fn revoke_user(&mut self, user: Uuid) {
        self.user_min_valid.insert(user, self.next);
    }

    pub(crate) fn revoke_all(&mut self) {
        self.min_valid = self.next;
        self.revoked.clear();
    }
}

// === telemetry ===

/// One entry of `GET /telemetry/events`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TelemetryEvent {
    pub(crate) category: &'static str,
    #[serde(serialize_with = "naive_micros")]
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) data: Value,
}

/// Telemetry timestamps look like `2025-11-26T14:29:58.112000` (no zone), as real ones do.
fn naive_micros<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.format("%Y-%m-%dT%H:%M:%S%.6f"))
}

// === labs ===

/// Node states (`NodeStates` in the spec). `Disconnected` only ever appears in views.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeState {
    DefinedOnCore,
    Stopped,
    Started,
    Queued,
    Booted,
    Disconnected,
}

impl NodeState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NodeState::DefinedOnCore => "DEFINED_ON_CORE",
            NodeState::Stopped => "STOPPED",
            NodeState::Started => "STARTED",
            NodeState::Queued => "QUEUED",
            NodeState::Booted => "BOOTED",
            NodeState::Disconnected => "DISCONNECTED",
        }
    }

    /// Counts as running for the lab state rule.
    fn is_active(self) -> bool {
        matches!(
            self,
            NodeState::Queued | NodeState::Started | NodeState::Booted | NodeState::Disconnected
        )
    }

    /// Has a VM on the compute (for system_stats).
    fn is_running(self) -> bool {
        matches!(
            self,
            NodeState::Started | NodeState::Booted | NodeState::Disconnected
        )
    }
}

/// When a queued node reaches STARTED and then BOOTED, on the monotonic clock (when it falls
/// due) and on the wall clock as it read when the lab was started (the time its telemetry
/// carries). A harness that sets the wall clock between the start and the moment a request
/// applies the transition does not move that time.
#[derive(Clone, Copy, Debug)]
struct NodePlan {
    started_at: Instant,
    booted_at: Instant,
    started_wall: DateTime<Utc>,
    booted_wall: DateTime<Utc>,
}

#[derive(Debug)]
struct Node {
    id: Uuid,
    label: String,
    node_definition: String,
    x: i64,
    y: i64,
    cpus: u32,
    ram_mb: u32,
    state: NodeState,
    interfaces: Vec<Uuid>,
    plan: Option<NodePlan>,
}

impl Node {
    fn view_state(&self, disconnected: bool) -> NodeState {
        if disconnected && self.state.is_running() {
            NodeState::Disconnected
        } else {
            self.state
        }
    }
}

#[derive(Clone, Debug, Serialize)]
struct LabEvent {
    lab_id: Uuid,
    event: &'static str,
    element_type: &'static str,
    element_id: Uuid,
    data: Value,
    previous: Value,
    timestamp: String,
}

#[derive(Debug)]
struct Lab {
    id: Uuid,
    title: String,
    description: String,
    notes: String,
    owner: Uuid,
    owner_username: String,
    owner_fullname: String,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    nodes: Vec<Node>,
    links: Vec<Uuid>,
    /// State of links and interfaces: follows the last lab action.
    element_state: &'static str,
    topology: Value,
    events: VecDeque<LabEvent>,
}

impl Lab {
    /// The lab state rule: any active node → STARTED; else any STOPPED → STOPPED; else
    /// DEFINED_ON_CORE.
    fn state(&self) -> &'static str {
        if self.nodes.iter().any(|n| n.state.is_active()) {
            "STARTED"
        } else if self.nodes.iter().any(|n| n.state == NodeState::Stopped) {
            "STOPPED"
        } else {
            "DEFINED_ON_CORE"
        }
    }

    fn push_event(&mut self, event: LabEvent) {
        if self.events.len() >= LAB_EVENT_CAP {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn state_event(
        &mut self,
        element_type: &'static str,
        element_id: Uuid,
        from: &str,
        to: &str,
        at: DateTime<Utc>,
    ) {
        let e = LabEvent {
            lab_id: self.id,
            event: "STATE_CHANGED",
            element_type,
            element_id,
            data: json!({ "state": to }),
            previous: json!({ "state": from }),
            timestamp: rfc3339(at),
        };
        self.push_event(e);
    }
}

// === licensing ===

#[derive(Clone, Debug, Default, Serialize)]
struct TimeInfo {
    succeeded: Option<String>,
    attempted: Option<String>,
    scheduled: Option<String>,
    status: Option<String>,
    failure: Option<String>,
    success: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegStatus {
    NotRegistered,
    InProgress,
    Completed,
    Failed,
}

impl RegStatus {
    fn as_str(self) -> &'static str {
        match self {
            RegStatus::NotRegistered => "NOT_REGISTERED",
            RegStatus::InProgress => "IN_PROGRESS",
            RegStatus::Completed => "COMPLETED",
            RegStatus::Failed => "FAILED",
        }
    }
}

#[derive(Debug)]
struct PendingRegistration {
    due: Instant,
    good: bool,
    token: String,
}

#[derive(Debug)]
struct Licensing {
    status: RegStatus,
    authorized: bool,
    pending: Option<PendingRegistration>,
    register_time: TimeInfo,
    renew_time: TimeInfo,
    auth_renew_time: TimeInfo,
    reg_expires: Option<DateTime<Utc>>,
    auth_expires: Option<DateTime<Utc>>,
}

impl Licensing {
    fn new() -> Self {
        Licensing {
            status: RegStatus::NotRegistered,
            authorized: false,
            pending: None,
            register_time: TimeInfo::default(),
            renew_time: TimeInfo::default(),
            auth_renew_time: TimeInfo::default(),
            reg_expires: None,
            auth_expires: None,
        }
    }

    /// The simulated SSMS rejects tokens that contain `invalid` or start with `bad`.
    fn token_is_good(token: &str) -> bool {
        let t = token.to_ascii_lowercase();
        !(t.contains("invalid") || t.starts_with("bad"))
    }
}

// === the worker state ===

/// Everything mutable about one simulated controller.
#[derive(Debug)]
pub(crate) struct WorkerState {
    pub(crate) tokens: Tokens,
    labs: Vec<Lab>,
    licensing: Licensing,
    telemetry: VecDeque<TelemetryEvent>,
}

/// Whether the caller may see a lab.
fn visible(lab: &Lab, caller: &User) -> bool {
    caller.admin || lab.owner == caller.id
}

fn parse_lab_id(id: &str) -> Result<Uuid, CmlError> {
    let bad = || CmlError::bad_request(format!("Invalid lab id: {id:?} is not a UUID4"));
    let uuid = Uuid::parse_str(id).map_err(|_| bad())?;
    let canonical = uuid.hyphenated().to_string();
    if canonical != id || uuid.get_version_num() != 4 {
        return Err(bad());
    }
    Ok(uuid)
}

impl WorkerState {
    pub(crate) fn new() -> Self {
        WorkerState {
            tokens: Tokens::default(),
            labs: Vec::new(),
            licensing: Licensing::new(),
            telemetry: VecDeque::new(),
        }
    }

    pub(crate) fn record(
        &mut self,
        ctx: &Ctx<'_>,
        category: &'static str,
        at: Instant,
        data: Value,
    ) {
        self.record_at(ctx, category, ctx.wall(at), data);
    }

    /// Records a telemetry event stamped `timestamp` (oldest dropped beyond the cap).
    fn record_at(
        &mut self,
        ctx: &Ctx<'_>,
        category: &'static str,
        timestamp: DateTime<Utc>,
        data: Value,
    ) {
        if ctx.cfg.telemetry_cap == 0 {
            return;
        }
        while self.telemetry.len() >= ctx.cfg.telemetry_cap {
            self.telemetry.pop_front();
        }
        self.telemetry.push_back(TelemetryEvent {
            category,
            timestamp,
            data,
        });
    }

    /// Applies every transition that fell due up to `ctx.now`, in time order.
    pub(crate) fn advance(&mut self, ctx: &Ctx<'_>) {
        let now = ctx.now;
        let mut due: Vec<(Instant, DateTime<Utc>, usize, usize, NodeState)> = Vec::new();
        for (li, lab) in self.labs.iter().enumerate() {
            for (ni, node) in lab.nodes.iter().enumerate() {
                let Some(plan) = node.plan else { continue };
                if node.state == NodeState::Queued && plan.started_at <= now {
                    due.push((
                        plan.started_at,
                        plan.started_wall,
                        li,
                        ni,
                        NodeState::Started,
                    ));
                }
                if matches!(node.state, NodeState::Queued | NodeState::Started)
                    && plan.booted_at <= now
                {
                    due.push((plan.booted_at, plan.booted_wall, li, ni, NodeState::Booted));
                }
            }
        }
        due.sort_by_key(|d| (d.0, d.4 == NodeState::Booted));
        for (_, wall, li, ni, to) in due {
            let Some(lab) = self.labs.get_mut(li) else {
                continue;
            };
            let lab_id = lab.id;
            let Some(node) = lab.nodes.get_mut(ni) else {
                continue;
            };
            let from = node.state;
            node.state = to;
            if to == NodeState::Booted {
                node.plan = None;
            }
            let (node_id, def) = (node.id, node.node_definition.clone());
            lab.modified = wall;
            lab.state_event("NODE", node_id, from.as_str(), to.as_str(), wall);
            let owner = lab.owner;
            let (category, data) = match to {
                NodeState::Started => (
                    "start_node",
                    json!({"lab_id": lab_id, "node_id": node_id, "node_definition": def,
                           "user_id": owner}),
                ),
                _ => (
                    "boot_node",
                    json!({"lab_id": lab_id, "node_id": node_id, "node_definition": def,
                           "boot_time": ctx.cfg.node_timing.boot.as_secs(), "user_id": owner}),
                ),
            };
            self.record_at(ctx, category, wall, data);
        }

        if let Some(p) = &self.licensing.pending
            && p.due <= now
        {
            let due_at = p.due;
            let good = p.good;
            let token = p.token.clone();
            self.licensing.pending = None;
            self.complete_registration(ctx, due_at, good, &token);
        }
    }

    fn complete_registration(&mut self, ctx: &Ctx<'_>, at: Instant, good: bool, token: &str) {
        let wall = ctx.wall(at);
        let l = &mut self.licensing;
        if good {
            l.status = RegStatus::Completed;
            l.authorized = true;
            l.register_time.succeeded = Some(rfc3339(wall));
            l.register_time.status = Some("SUCCEEDED".to_owned());
            l.register_time.success = Some("SUCCESS".to_owned());
            l.register_time.failure = None;
            l.renew_time = TimeInfo {
                scheduled: Some(rfc3339(wall + TimeDelta::days(180))),
                ..TimeInfo::default()
            };
            l.auth_renew_time = TimeInfo {
                succeeded: Some(rfc3339(wall)),
                attempted: Some(rfc3339(wall)),
                scheduled: Some(rfc3339(wall + TimeDelta::days(30))),
                status: Some("SUCCEEDED".to_owned()),
                failure: None,
                success: Some("SUCCESS".to_owned()),
            };
            l.reg_expires = Some(wall + TimeDelta::days(365));
            l.auth_expires = Some(wall + TimeDelta::days(90));
        } else {
            l.status = RegStatus::Failed;
            l.register_time.status = Some("FAILED".to_owned());
            l.register_time.success = Some("FAILED".to_owned());
            l.register_time.failure = Some(format!(
                "Registration failed: the ID token '{token}' is not valid"
            ));
        }
        let status = l.status.as_str();
        self.record(
            ctx,
            "license_info",
            at,
            json!({"registration_status": status}),
        );
    }

    // --- sessions and users ---

    pub(crate) fn user_activity(&mut self, ctx: &Ctx<'_>, user: &User) {
        self.record(
            ctx,
            "user_activity",
            ctx.now,
            json!({"user_id": user.id, "username": user.username}),
        );
    }

    pub(crate) fn users_view(&self, users: &[User], caller: &User) -> Value {
        let created = "2025-01-01T00:00:00+00:00";
        let list: Vec<Value> = users
            .iter()
            .filter(|u| caller.admin || u.id == caller.id)
            .map(|u| {
                let labs: Vec<Uuid> = self
                    .labs
                    .iter()
                    .filter(|l| l.owner == u.id)
                    .map(|l| l.id)
                    .collect();
                json!({
                    "id": u.id, "username": u.username, "fullname": u.fullname,
                    "description": "", "email": "", "admin": u.admin, "groups": [],
                    "associations": [], "resource_pool": null, "opt_in": true,
                    "tour_version": "", "created": created, "modified": created,
                    "directory_dn": "", "labs": labs, "pubkey_info": null,
                })
            })
            .collect();
        Value::Array(list)
    }

    // --- labs ---

    fn lab(&self, id: &str, caller: &User) -> Result<&Lab, CmlError> {
        let uuid = parse_lab_id(id)?;
        self.labs
            .iter()
            .find(|l| l.id == uuid && visible(l, caller))
            .ok_or_else(|| CmlError::not_found(format!("Lab not found: {id}")))
    }

    fn lab_index(&self, id: &str, caller: &User) -> Result<usize, CmlError> {
        let uuid = parse_lab_id(id)?;
        self.labs
            .iter()
            .position(|l| l.id == uuid && visible(l, caller))
            .ok_or_else(|| CmlError::not_found(format!("Lab not found: {id}")))
    }

    pub(crate) fn lab_ids(&self, caller: &User, show_all: bool) -> Vec<Uuid> {
        self.labs
            .iter()
            .filter(|l| l.owner == caller.id || (show_all && caller.admin))
            .map(|l| l.id)
            .collect()
    }

    pub(crate) fn lab_view(&self, id: &str, caller: &User) -> Result<Value, CmlError> {
        let lab = self.lab(id, caller)?;
        Ok(json!({
            "id": lab.id,
            "created": rfc3339(lab.created),
            "modified": rfc3339(lab.modified),
            "lab_title": lab.title,
            "lab_description": lab.description,
            "lab_notes": lab.notes,
            "owner": lab.owner,
            "owner_username": lab.owner_username,
            "owner_fullname": lab.owner_fullname,
            "state": lab.state(),
            "node_count": lab.nodes.len(),
            "link_count": lab.links.len(),
            "groups": [],
            "effective_permissions": ["lab_admin", "lab_edit", "lab_exec", "lab_view"],
        }))
    }

    pub(crate) fn lab_state(&self, id: &str, caller: &User) -> Result<&'static str, CmlError> {
        Ok(self.lab(id, caller)?.state())
    }

    pub(crate) fn lab_converged(&self, id: &str, caller: &User) -> Result<bool, CmlError> {
        let lab = self.lab(id, caller)?;
        Ok(match lab.state() {
            "STARTED" => lab.nodes.iter().all(|n| n.state == NodeState::Booted),
            _ => lab
                .nodes
                .iter()
                .all(|n| n.plan.is_none() && !n.state.is_active()),
        })
    }

    pub(crate) fn lab_element_state(
        &self,
        ctx: &Ctx<'_>,
        id: &str,
        caller: &User,
    ) -> Result<Value, CmlError> {
        let lab = self.lab(id, caller)?;
        let mut nodes = serde_json::Map::new();
        let mut links = serde_json::Map::new();
        let mut ifaces = serde_json::Map::new();
        for n in &lab.nodes {
            nodes.insert(
                n.id.to_string(),
                json!(n.view_state(ctx.disconnected).as_str()),
            );
            for i in &n.interfaces {
                ifaces.insert(i.to_string(), json!(lab.element_state));
            }
        }
        for l in &lab.links {
            links.insert(l.to_string(), json!(lab.element_state));
        }
        Ok(json!({"nodes": nodes, "links": links, "interfaces": ifaces}))
    }

    pub(crate) fn lab_nodes(
        &self,
        ctx: &Ctx<'_>,
        id: &str,
        caller: &User,
        data: bool,
    ) -> Result<Value, CmlError> {
        let lab = self.lab(id, caller)?;
        if !data {
            return Ok(json!(lab.nodes.iter().map(|n| n.id).collect::<Vec<_>>()));
        }
        let compute = stable_uuid(ctx.index, 1);
        let nodes: Vec<Value> = lab
            .nodes
            .iter()
            .map(|n| {
                let state = n.view_state(ctx.disconnected);
                let progress = match state {
                    NodeState::Booted => "Booted",
                    NodeState::Queued | NodeState::Started => "Booting",
                    _ => "Not running",
                };
                json!({
                    "id": n.id, "lab_id": lab.id, "label": n.label,
                    "node_definition": n.node_definition, "image_definition": null,
                    "x": n.x, "y": n.y, "cpus": n.cpus, "ram": n.ram_mb, "tags": [],
                    "state": state.as_str(), "boot_progress": progress,
                    "compute_id": if n.state.is_running() { json!(compute) } else { Value::Null },
                })
            })
            .collect();
        Ok(Value::Array(nodes))
    }

    pub(crate) fn lab_events(&self, id: &str, caller: &User) -> Result<Value, CmlError> {
        let lab = self.lab(id, caller)?;
        Ok(serde_json::to_value(&lab.events).unwrap_or(Value::Array(Vec::new())))
    }

    pub(crate) fn download(
        &mut self,
        ctx: &Ctx<'_>,
        id: &str,
        caller: &User,
    ) -> Result<String, CmlError> {
        let lab = self.lab(id, caller)?;
        let mut topo = lab.topology.clone();
        if let Some(l) = topo.get_mut("lab").and_then(Value::as_object_mut) {
            l.insert("title".to_owned(), json!(lab.title));
        }
        let yaml = serde_yaml_ng::to_string(&topo)
            .map_err(|e| CmlError::new(http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let lab_id = lab.id;
        self.record(
            ctx,
            "export_lab",
            ctx.now,
            json!({"lab_id": lab_id, "user_id": caller.id}),
        );
        Ok(yaml)
    }

    /// `POST /import`: body is YAML or JSON.
    pub(crate) fn import(
        &mut self,
        ctx: &Ctx<'_>,
        caller: &User,
        body: &[u8],
        title: Option<&str>,
    ) -> Result<Uuid, CmlError> {
        if let Some(t) = title
            && (t.is_empty() || t.chars().count() > 64)
        {
            return Err(CmlError::bad_request(
                "Import failed: title must be 1 to 64 characters",
            ));
        }
        let topology = parse_topology(body)?;
        let now = ctx.wall_now();
        let lab_meta = topology.get("lab").cloned().unwrap_or(Value::Null);
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let title = title
            .map(str::to_owned)
            .or_else(|| text(&lab_meta, "title"))
            .unwrap_or_else(|| format!("Lab at {}", now.format("%H:%M %d/%m/%Y")));
        let title: String = title.chars().take(64).collect();
        let lab_id = Uuid::new_v4();
        let mut nodes = Vec::new();
        let mut node_ids: HashMap<String, ()> = HashMap::new();
        for n in topology
            .get("nodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let interfaces = n
                .get("interfaces")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            node_ids.insert(text(n, "id").unwrap_or_default(), ());
            nodes.push(Node {
                id: Uuid::new_v4(),
                label: text(n, "label").unwrap_or_default(),
                node_definition: text(n, "node_definition").unwrap_or_default(),
                x: n.get("x").and_then(Value::as_i64).unwrap_or(0),
                y: n.get("y").and_then(Value::as_i64).unwrap_or(0),
                cpus: n
                    .get("cpus")
                    .and_then(Value::as_u64)
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(1),
                ram_mb: n
                    .get("ram")
                    .and_then(Value::as_u64)
                    .and_then(|c| u32::try_from(c).ok())
                    .unwrap_or(512),
                state: NodeState::DefinedOnCore,
                interfaces: (0..interfaces).map(|_| Uuid::new_v4()).collect(),
                plan: None,
            });
        }
        let links: Vec<Uuid> = topology
            .get("links")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|_| Uuid::new_v4())
            .collect();
        let mut lab = Lab {
            id: lab_id,
            title,
            description: text(&lab_meta, "description")
                .unwrap_or_default()
                .chars()
                .take(4096)
                .collect(),
            notes: text(&lab_meta, "notes")
                .unwrap_or_default()
                .chars()
                .take(32768)
                .collect(),
            owner: caller.id,
            owner_username: caller.username.clone(),
            owner_fullname: caller.fullname.clone(),
            created: now,
            modified: now,
            nodes,
            links,
            element_state: "DEFINED_ON_CORE",
            topology,
            events: VecDeque::new(),
        };
        lab.push_event(LabEvent {
            lab_id,
            event: "ADD",
            element_type: "LAB",
            element_id: lab_id,
            data: json!({"lab_title": lab.title}),
            previous: json!({}),
            timestamp: rfc3339(now),
        });
        let node_count = lab.nodes.len();
        self.labs.push(lab);
        self.record(
            ctx,
            "import_lab",
            ctx.now,
            json!({"lab_id": lab_id, "user_id": caller.id, "node_count": node_count}),
        );
        Ok(lab_id)
    }

    fn running_nodes(&self) -> usize {
        self.labs
            .iter()
            .flat_map(|l| &l.nodes)
            .filter(|n| n.state.is_active())
            .count()
    }

    pub(crate) fn start_lab(
        &mut self,
        ctx: &Ctx<'_>,
        id: &str,
        caller: &User,
    ) -> Result<(), CmlError> {
        let li = self.lab_index(id, caller)?;
        let to_start = self.labs[li]
            .nodes
            .iter()
            .filter(|n| !n.state.is_active())
            .count();
        if to_start == 0 {
            return Ok(());
        }
        if !ctx.ready {
            return Err(CmlError::bad_request(
                "Cannot start lab: no compute host is ready to start nodes",
            ));
        }
        if let Some(limit) = ctx.cfg.licensed_node_limit
            && self.running_nodes() + to_start > limit
        {
            return Err(CmlError::bad_request(format!(
                "Cannot start lab: the licensed node count ({limit}) would be exceeded"
            )));
        }
        let timing = ctx.cfg.node_timing;
        let now = ctx.now;
        let wall = ctx.wall_now();
        let lab = &mut self.labs[li];
        let before = lab.state();
        let mut queued = Vec::new();
        for (k, node) in (0u32..).zip(lab.nodes.iter_mut().filter(|n| !n.state.is_active())) {
            let started_at = now + timing.queue + timing.stagger * k;
            let from = node.state;
            node.state = NodeState::Queued;
            let booted_at = started_at + timing.boot;
            node.plan = Some(NodePlan {
                started_at,
                booted_at,
                started_wall: ctx.wall(started_at),
                booted_wall: ctx.wall(booted_at),
            });
            queued.push((node.id, node.node_definition.clone(), from));
        }
        for (nid, _, from) in &queued {
            lab.state_event("NODE", *nid, from.as_str(), "QUEUED", wall);
        }
        let lab_id = lab.id;
        lab.element_state = "STARTED";
        lab.modified = wall;
        let after = lab.state();
        if before != after {
            lab.state_event("LAB", lab_id, before, after, wall);
        }
        self.record(
            ctx,
            "start_lab",
            now,
            json!({"lab_id": lab_id, "user_id": caller.id}),
        );
        for (nid, def, _) in queued {
            self.record(
                ctx,
                "queue_node",
                now,
                json!({"lab_id": lab_id, "node_id": nid, "node_definition": def,
                       "user_id": caller.id}),
            );
        }
        Ok(())
    }

    pub(crate) fn stop_lab(
        &mut self,
        ctx: &Ctx<'_>,
        id: &str,
        caller: &User,
    ) -> Result<(), CmlError> {
        let li = self.lab_index(id, caller)?;
        let wall = ctx.wall_now();
        let lab = &mut self.labs[li];
        if !lab.nodes.iter().any(|n| n.state.is_active()) {
            return Ok(());
        }
        let before = lab.state();
        let mut stopped = Vec::new();
        for node in lab.nodes.iter_mut().filter(|n| n.state.is_active()) {
            stopped.push((node.id, node.node_definition.clone(), node.state));
            node.state = NodeState::Stopped;
            node.plan = None;
        }
        for (nid, _, from) in &stopped {
            lab.state_event("NODE", *nid, from.as_str(), "STOPPED", wall);
        }
        let lab_id = lab.id;
        lab.element_state = "STOPPED";
        lab.modified = wall;
        let after = lab.state();
        lab.state_event("LAB", lab_id, before, after, wall);
        self.record(
            ctx,
            "stop_lab",
            ctx.now,
            json!({"lab_id": lab_id, "user_id": caller.id}),
        );
        for (nid, def, _) in stopped {
            self.record(
                ctx,
                "stop_node",
                ctx.now,
                json!({"lab_id": lab_id, "node_id": nid, "node_definition": def,
                       "user_id": caller.id}),
            );
        }
        Ok(())
    }

    pub(crate) fn wipe_lab(
        &mut self,
        ctx: &Ctx<'_>,
        id: &str,
        caller: &User,
    ) -> Result<(), CmlError> {
        let li = self.lab_index(id, caller)?;
        let wall = ctx.wall_now();
        let lab = &mut self.labs[li];
        if lab.nodes.iter().any(|n| n.state.is_active()) {
            return Err(CmlError::bad_request(
                "Lab must be stopped before it can be wiped",
            ));
        }
        let before = lab.state();
        let mut wiped = Vec::new();
        for node in lab
            .nodes
            .iter_mut()
            .filter(|n| n.state == NodeState::Stopped)
        {
            node.state = NodeState::DefinedOnCore;
            wiped.push((node.id, node.node_definition.clone()));
        }
        for (nid, _) in &wiped {
            lab.state_event("NODE", *nid, "STOPPED", "DEFINED_ON_CORE", wall);
        }
        let lab_id = lab.id;
        lab.element_state = "DEFINED_ON_CORE";
        lab.modified = wall;
        let after = lab.state();
        if before != after {
            lab.state_event("LAB", lab_id, before, after, wall);
        }
        for (nid, def) in wiped {
            self.record(
                ctx,
                "wipe_node",
                ctx.now,
                json!({"lab_id": lab_id, "node_id": nid, "node_definition": def,
                       "user_id": caller.id}),
            );
        }
        Ok(())
    }

    pub(crate) fn delete_lab(&mut self, id: &str, caller: &User) -> Result<(), CmlError> {
        let li = self.lab_index(id, caller)?;
        if self.labs[li].state() != "DEFINED_ON_CORE" {
            return Err(CmlError::bad_request(
                "Lab must be stopped and wiped before it can be deleted",
            ));
        }
        self.labs.remove(li);
        Ok(())
    }

    // --- system ---

    pub(crate) fn system_health(&self, ctx: &Ctx<'_>, admin: bool) -> Value {
        let compute = stable_uuid(ctx.index, 1);
        let ready = ctx.ready;
        let flag = |v: bool| if admin { json!(v) } else { Value::Null };
        json!({
            "valid": ready,
            "is_licensed": if admin { json!(self.licensing.authorized) } else { Value::Null },
            "is_enterprise": true,
            "controller": {"core_connected": true, "nodes_loaded": true,
                           "images_loaded": true, "valid": true},
            "computes": { compute.to_string(): {
                "kvm_vmx_enabled": flag(true), "enough_cpus": flag(true),
                "lld_connected": ready, "lld_synced": flag(ready), "libvirt": flag(true),
                "fabric": flag(true), "device_mux": flag(true),
                "refplat_images_available": flag(true), "docker_shim": flag(true),
                "valid": flag(ready),
                "admission_state": if ready { "READY" } else { "ONLINE" },
                "is_controller": true, "hostname": "cml-controller",
            }},
        })
    }

    fn dominfo(&self) -> (u64, u64, u64, u64) {
        let mut total = 0u64;
        let mut running = 0u64;
        let mut cpus = 0u64;
        let mut mem_kib = 0u64;
        for n in self.labs.iter().flat_map(|l| &l.nodes) {
            total += 1;
            if n.state.is_running() {
                running += 1;
                cpus += u64::from(n.cpus);
                mem_kib += u64::from(n.ram_mb) * 1024;
            }
        }
        (total, running, cpus, mem_kib)
    }

    pub(crate) fn system_stats(&self, ctx: &Ctx<'_>) -> Value {
        let r = &ctx.cfg.resources;
        let (total, running, cpus, mem_kib) = self.dominfo();
        let percent = (r.idle_cpu_percent + r.cpu_percent_per_node * running as f64).min(100.0);
        let mem_used = (r.base_memory_used + mem_kib * 1024).min(r.memory_bytes);
        let disk_used = (r.base_disk_used + running * (2 << 30)).min(r.disk_bytes);
        let memory = json!({"used": mem_used, "free": r.memory_bytes - mem_used,
                            "total": r.memory_bytes});
        let disk = json!({"used": disk_used, "free": r.disk_bytes - disk_used,
                          "total": r.disk_bytes});
        let compute = stable_uuid(ctx.index, 1);
        let load =
            [percent * 0.9, percent * 1.1, percent].map(|v| (v.min(100.0) * 10.0).round() / 10.0);
        json!({
            "all": {"cpu": {"count": r.cpus, "percent": percent}, "memory": memory, "disk": disk},
            "controller": {"disk": disk},
            "computes": { compute.to_string(): {
                "hostname": "cml-controller", "is_controller": true,
                "stats": {
                    "cpu": {"count": r.cpus, "percent": percent,
                            "model": "Intel(R) Xeon(R) Platinum 8252C CPU @ 3.80GHz",
                            "predicted": r.cpus, "load": load},
                    "memory": memory, "disk": disk,
                    "dominfo": {"total_nodes": total, "total_orphans": 0,
                                "running_nodes": running, "running_orphans": 0,
                                "allocated_cpus": cpus, "allocated_memory": mem_kib},
                }
            }},
        })
    }

    pub(crate) fn compute_hosts(&self, ctx: &Ctx<'_>) -> Value {
        let (total, running, _, _) = self.dominfo();
        let nodes: Vec<Uuid> = self
            .labs
            .iter()
            .flat_map(|l| &l.nodes)
            .filter(|n| n.state.is_running())
            .map(|n| n.id)
            .collect();
        json!([{
            "id": stable_uuid(ctx.index, 1), "server_address": "192.168.255.1",
            "hostname": "cml-controller", "is_simulator": true, "is_connector": true,
            "admission_state": if ctx.ready { "READY" } else { "ONLINE" },
            "nodes": nodes,
            "node_counts": {"total_nodes": total, "total_orphans": 0,
                            "running_nodes": running, "running_orphans": 0},
            "is_connected": true, "is_synced": ctx.ready,
        }])
    }

    pub(crate) fn telemetry_events(&self) -> &VecDeque<TelemetryEvent> {
        &self.telemetry
    }

    // --- licensing ---

    pub(crate) fn licensing_view(&self, ctx: &Ctx<'_>) -> Value {
        let l = &self.licensing;
        let registered = l.status == RegStatus::Completed;
        let running = self.running_nodes();
        let feature_status = if l.authorized {
            "IN_COMPLIANCE"
        } else {
            "EVAL"
        };
        let product = stable_uuid(ctx.index, 2);
        json!({
            "udi": {"hostname": "cml-controller", "product_uuid": product},
            "registration": {
                "status": l.status.as_str(),
                "smart_account": if registered { json!("Simulated Smart Account") } else { Value::Null },
                "virtual_account": if registered { json!("ccm-sim") } else { Value::Null },
                "register_time": l.register_time,
                "renew_time": l.renew_time,
                "expires": l.reg_expires.map(rfc3339),
            },
            "authorization": {
                "status": if l.authorized { "IN_COMPLIANCE" } else { "EVAL" },
                "renew_time": l.auth_renew_time,
                "expires": l.auth_expires.map(rfc3339),
            },
            "reservation_mode": false,
            "features": [
                {"id": format!("regid.2019-10.com.cisco.CML_ENT_BASE,1.0_{product}"),
                 "name": "CML - Enterprise License",
                 "description": "Cisco Modeling Labs - Enterprise License with 20 nodes capacity included",
                 "version": "1.0", "in_use": 1, "status": feature_status, "min": 1, "max": 1,
                 "minEndDate": null, "maxEndDate": null},
                {"id": format!("regid.2019-10.com.cisco.CML_NODE_COUNT,1.0_{product}"),
                 "name": "CML - Expansion Nodes",
                 "description": "Cisco Modeling Labs - Expansion node capacity",
                 "version": "1.0", "in_use": running, "status": feature_status, "min": 0,
                 "max": ctx.cfg.licensed_node_limit.unwrap_or(300),
                 "minEndDate": null, "maxEndDate": null},
            ],
            "product_license": {"active": "CML_Enterprise", "is_enterprise": true},
            "transport": {
                "proxy": {"server": null, "port": null},
                "ssms": "https://smartreceiver.cisco.com/licservice/license",
                "default_ssms": "https://smartreceiver.cisco.com/licservice/license",
            },
        })
    }

    pub(crate) fn register(
        &mut self,
        ctx: &Ctx<'_>,
        token: &str,
        reregister: bool,
    ) -> Result<(), CmlError> {
        let l = &mut self.licensing;
        if l.pending.is_some() {
            return Err(CmlError::conflict(
                "(Re)registration cannot be requested at this time: an operation is in progress",
            ));
        }
        if l.status == RegStatus::Completed && !reregister {
            return Err(CmlError::conflict(
                "(Re)registration cannot be requested at this time: already registered",
            ));
        }
        l.status = RegStatus::InProgress;
        l.register_time.attempted = Some(rfc3339(ctx.wall_now()));
        l.register_time.status = Some("IN_PROGRESS".to_owned());
        l.pending = Some(PendingRegistration {
            due: ctx.now + ctx.cfg.licence_delay,
            good: Licensing::token_is_good(token),
            token: token.to_owned(),
        });
        Ok(())
    }

    /// Returns true when the SSMS was reached (204), false for a local-only deregistration (202).
    pub(crate) fn deregister(&mut self, ctx: &Ctx<'_>) -> Result<bool, CmlError> {
        let l = &mut self.licensing;
        if l.pending.is_some() {
            return Err(CmlError::conflict(
                "Deregistration cannot be requested at this time: an operation is in progress",
            ));
        }
        if l.status == RegStatus::NotRegistered {
            return Err(CmlError::bad_request("The product is not registered"));
        }
        *l = Licensing::new();
        self.record(
            ctx,
            "license_info",
            ctx.now,
            json!({"registration_status": "NOT_REGISTERED"}),
        );
        Ok(!ctx.ssms_unreachable)
    }

    pub(crate) fn renew_registration(&mut self, ctx: &Ctx<'_>) -> Result<(), CmlError> {
        let l = &mut self.licensing;
        if l.status != RegStatus::Completed || l.pending.is_some() {
            return Err(CmlError::conflict(
                "Renewal cannot be requested at this time: the product is not registered",
            ));
        }
        let wall = ctx.wall_now();
        l.renew_time = TimeInfo {
            succeeded: Some(rfc3339(wall)),
            attempted: Some(rfc3339(wall)),
            scheduled: Some(rfc3339(wall + TimeDelta::days(180))),
            status: Some("SUCCEEDED".to_owned()),
            failure: None,
            success: Some("SUCCESS".to_owned()),
        };
        l.reg_expires = Some(wall + TimeDelta::days(365));
        Ok(())
    }

    pub(crate) fn renew_authorization(&mut self, ctx: &Ctx<'_>) -> Result<(), CmlError> {
        let l = &mut self.licensing;
        if l.status != RegStatus::Completed || l.pending.is_some() {
            return Err(CmlError::conflict(
                "Renewal cannot be requested at this time: the product is not registered",
            ));
        }
        let wall = ctx.wall_now();
        l.auth_renew_time = TimeInfo {
            succeeded: Some(rfc3339(wall)),
            attempted: Some(rfc3339(wall)),
            scheduled: Some(rfc3339(wall + TimeDelta::days(30))),
            status: Some("SUCCEEDED".to_owned()),
            failure: None,
            success: Some("SUCCESS".to_owned()),
        };
        l.auth_expires = Some(wall + TimeDelta::days(90));
        Ok(())
    }

    /// For the activity generator: the first lab this user owns and whether it runs.
    pub(crate) fn user_lab(&self, user: Uuid) -> Option<(Uuid, bool)> {
        self.labs
            .iter()
            .find(|l| l.owner == user)
            .map(|l| (l.id, l.state() == "STARTED"))
    }
}

const TOPOLOGY_VERSIONS: [&str; 10] = [
    "0.0.1", "0.0.2", "0.0.3", "0.0.4", "0.0.5", "0.1.0", "0.2.0", "0.2.1", "0.2.2", "0.3.0",
];

/// Parses and checks an import body (YAML or JSON): `lab.version`, `nodes` and `links` are
/// required, nodes need `id`, `label`, `node_definition`, `x`, `y`, links need `id`, `n1`,
/// `n2`, `i1`, `i2` with `n1`/`n2` naming nodes of the topology.
pub(crate) fn parse_topology(body: &[u8]) -> Result<Value, CmlError> {
    let fail = |why: String| CmlError::bad_request(format!("Import failed: {why}"));
    let text = std::str::from_utf8(body).map_err(|_| fail("the body is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(fail("the body is empty".into()));
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_yaml_ng::from_str(text)
            .map_err(|e| fail(format!("not valid YAML or JSON: {e}")))?,
    };
    let lab = value
        .get("lab")
        .and_then(Value::as_object)
        .ok_or_else(|| fail("'lab' is missing".into()))?;
    let version = lab
        .get("version")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("'lab.version' is missing".into()))?;
    if !TOPOLOGY_VERSIONS.contains(&version) {
        return Err(fail(format!("unsupported topology version {version:?}")));
    }
    let nodes = value
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("'nodes' is missing".into()))?;
    let links = value
        .get("links")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("'links' is missing".into()))?;
    let mut ids = HashSet::new();
    for (i, n) in nodes.iter().enumerate() {
        for key in ["id", "label", "node_definition"] {
            if n.get(key).and_then(Value::as_str).is_none() {
                return Err(fail(format!("node {i} has no '{key}'")));
            }
        }
        for key in ["x", "y"] {
            if n.get(key).and_then(Value::as_i64).is_none() {
                return Err(fail(format!("node {i} has no integer '{key}'")));
            }
        }
        if let Some(id) = n.get("id").and_then(Value::as_str)
            && !ids.insert(id.to_owned())
        {
            return Err(fail(format!("duplicate node id {id:?}")));
        }
    }
    for (i, l) in links.iter().enumerate() {
        for key in ["id", "n1", "n2", "i1", "i2"] {
            if l.get(key).and_then(Value::as_str).is_none() {
                return Err(fail(format!("link {i} has no '{key}'")));
            }
        }
        for key in ["n1", "n2"] {
            if let Some(n) = l.get(key).and_then(Value::as_str)
                && !ids.contains(n)
            {
                return Err(fail(format!("link {i} names unknown node {n:?}")));
            }
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_ids_should_only_accept_lowercase_uuid4() {
        assert!(parse_lab_id("9c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5").is_ok());
        assert!(parse_lab_id("9C1D2E3F-4A5B-4C6D-8E7F-8091A2B3C4D5").is_err());
        assert!(parse_lab_id("9c1d2e3f-4a5b-1c6d-8e7f-8091a2b3c4d5").is_err());
        assert!(parse_lab_id("lab-1").is_err());
    }

    #[test]
    fn tokens_should_honour_every_kind_of_revocation() {
        let mut t = Tokens::default();
        let a = t.issue();
        let b = t.issue();
        assert!(t.is_valid(a, ADMIN_ID) && t.is_valid(b, ADMIN_ID));
        assert!(
            !t.is_valid(99, ADMIN_ID),
            "a number never issued is not valid"
        );
        t.revoke(a);
        assert!(!t.is_valid(a, ADMIN_ID) && t.is_valid(b, ADMIN_ID));
        let c = t.issue();
        t.revoke_user(ADMIN_ID);
        assert!(!t.is_valid(c, ADMIN_ID));
        let d = t.issue();
        assert!(t.is_valid(d, ADMIN_ID));
        t.revoke_all();
        assert!(!t.is_valid(d, ADMIN_ID));
        let e = t.issue();
        assert!(t.is_valid(e, STUDENT_ID));
    }

    #[test]
    fn topology_parser_should_reject_what_cml_rejects() {
        let ok = "lab: {version: 0.3.0, title: t}\nnodes:\n  - {id: n0, label: a, node_definition: alpine, x: 0, y: 0}\nlinks: []\n";
        assert!(parse_topology(ok.as_bytes()).is_ok());
        for bad in [
            "",
            "not: [valid",
            "nodes: []\nlinks: []",
            "lab: {version: 9.9.9}\nnodes: []\nlinks: []",
            "lab: {version: 0.3.0}\nlinks: []",
            "lab: {version: 0.3.0}\nnodes: [{id: n0}]\nlinks: []",
            "lab: {version: 0.3.0}\nnodes: []\nlinks: [{id: l0, n1: a, n2: b, i1: i, i2: i}]",
        ] {
            let err = parse_topology(bad.as_bytes()).unwrap_err();
            assert_eq!(err.status, http::StatusCode::BAD_REQUEST, "{bad}");
        }
        let json = r#"{"lab":{"version":"0.2.2"},"nodes":[],"links":[]}"#;
        assert!(parse_topology(json.as_bytes()).is_ok());
    }

    #[test]
    fn lab_state_should_follow_the_derivation_rule() {
        use NodeState::*;
        let lab = |states: &[NodeState]| Lab {
            id: Uuid::new_v4(),
            title: "t".into(),
            description: String::new(),
            notes: String::new(),
            owner: ADMIN_ID,
            owner_username: "admin".into(),
            owner_fullname: String::new(),
            created: Utc::now(),
            modified: Utc::now(),
            nodes: states
                .iter()
                .map(|s| Node {
                    id: Uuid::new_v4(),
                    label: "n".into(),
                    node_definition: "alpine".into(),
                    x: 0,
                    y: 0,
                    cpus: 1,
                    ram_mb: 512,
                    state: *s,
                    interfaces: vec![],
                    plan: None,
                })
                .collect(),
            links: vec![],
            element_state: "DEFINED_ON_CORE",
            topology: Value::Null,
            events: VecDeque::new(),
        };
        assert_eq!(lab(&[]).state(), "DEFINED_ON_CORE");
        assert_eq!(
            lab(&[DefinedOnCore, DefinedOnCore]).state(),
            "DEFINED_ON_CORE"
        );
        assert_eq!(lab(&[Stopped, DefinedOnCore]).state(), "STOPPED");
        assert_eq!(lab(&[Booted, Booted]).state(), "STARTED");
        assert_eq!(lab(&[Queued, Stopped]).state(), "STARTED");
        assert_eq!(lab(&[Started, DefinedOnCore]).state(), "STARTED");
        assert_eq!(lab(&[Disconnected, Stopped]).state(), "STARTED");
    }

    #[test]
    fn stable_uuids_should_be_uuid4_and_stable() {
        let a = stable_uuid(7, 1);
        assert_eq!(a, stable_uuid(7, 1));
        assert_ne!(a, stable_uuid(8, 1));
        assert_eq!(a.get_version_num(), 4);
    }
}
