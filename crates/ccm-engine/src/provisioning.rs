//! [`Provisioning`]: new workers (the record at once, RunInstances in the background, resumed
//! after a restart with the same client token) and imports of existing instances.
//!
//! **Guardrails** (issue 12), each refusal naming its rule ([`PolicyRefusal`]):
//! - images come only from `[provisioning] ami_owners` (name lookups pass the owners; an AMI
//!   id is looked up first and refused when its owner is not listed), and the chosen image's
//!   owner is recorded on the worker;
//! - the instance type must be one of `[provisioning] allowed_instance_types`;
//! - with `[provisioning] max_workers`, a create is stored only while fewer workers are live
//!   (the store counts and inserts in one atomic step, so two creates at the cap cannot both
//!   pass);
//! - below admin, an import takes only instances the `[import]` filter matches (tag and/or
//!   image name and owner); name lookups of imports pass `[import] ami_owners`.
//!
//! The periodic auto-import job reaches it only through [`AutoImport`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ccm_cloud::{CloudProvider, Image, ImageQuery, Instance, InstanceQuery, RunSpec, glob_match};
use ccm_domain::worker::{Ami, EndpointPolicy, NewWorker};
use ccm_domain::{Actor, AmiId, EventKind, InstanceId, InstanceType, Region, Worker};
use ccm_store::WorkerFilter;
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::config::{ImportConfig, ProvisioningConfig};
use crate::convert::observation;
use crate::error::{EngineError, PolicyRefusal, RefusalKind};
use crate::jobs::AutoImport;
use crate::state::State;
use crate::supervisor::Supervisor;
use crate::types::{
    AmiSelector, CreateWorker, ImportCandidate, ImportPreview, ImportReport, ImportRequest,
    ImportSelector, ProvisioningOptions,
};

/// Instances saved at once by an import.
const IMPORT_CONCURRENCY: usize = 8;

/// Provisioning and imports. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Provisioning {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<State>,
    cloud: Arc<dyn CloudProvider>,
    endpoint: EndpointPolicy,
    provisioning: ProvisioningConfig,
    import: ImportConfig,
    tasks: Supervisor,
}

impl Provisioning {
    pub(crate) fn new(
        state: Arc<State>,
        cloud: Arc<dyn CloudProvider>,
        endpoint: EndpointPolicy,
        provisioning: ProvisioningConfig,
        import: ImportConfig,
        tasks: Supervisor,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                state,
                cloud,
                endpoint,
                provisioning,
                import,
                tasks,
            }),
        }
    }

    fn default_region(&self) -> Result<Region, EngineError> {
        if let Some(r) = &self.inner.provisioning.region {
            return Region::parse(r).map_err(|e| EngineError::invalid("region", e));
        }
        self.inner
            .cloud
            .regions()
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::invalid("region", "no region given and none configured"))
    }

    /// What a create or import form may offer.
    pub(crate) fn options(&self) -> ProvisioningOptions {
        let p = &self.inner.provisioning;
        let i = &self.inner.import;
        let regions = self.inner.cloud.regions();
        let import_regions = if i.regions.is_empty() {
            regions.clone()
        } else {
            i.regions
                .iter()
                .filter_map(|r| Region::parse(r).ok())
                .collect()
        };
        ProvisioningOptions {
            default_region: self.default_region().ok(),
            regions,
            default_instance_type: p.instance_type.clone(),
            instance_types: p.allowed_types(),
            ami_id: p.ami_id.clone(),
            ami_name_pattern: p.ami_name_pattern.clone(),
            tags: p.tags.clone(),
            import_regions,
            import_ami_name_pattern: i.ami_name_pattern.clone(),
            import_tag: i.tag.clone(),
        }
    }

    /// The image a create would launch (see [`Self::resolve_image`]).
    pub(crate) async fn preview_image(
        &self,
        region: Option<Region>,
        selector: &AmiSelector,
    ) -> Result<Image, EngineError> {
        let region = match region {
            Some(r) => r,
            None => self.default_region()?,
        };
        self.resolve_image(&region, selector).await
    }

    /// Provisions a new worker: the record is created `pending` at once and RunInstances runs
    /// in the background; the worker gets its instance, or becomes `failed` with the reason.
    pub(crate) async fn create(
        &self,
        req: CreateWorker,
        by: &Actor,
    ) -> Result<Worker, EngineError> {
        let name = req.name.trim().to_owned();
        if name.is_empty() || name.len() > 128 {
            return Err(EngineError::invalid("name", "must be 1 to 128 characters"));
        }
        let region = match req.region {
            Some(r) => r,
            None => self.default_region()?,
        };
        let p = &self.inner.provisioning;
        let instance_type = match req.instance_type {
            Some(t) => t,
            None => InstanceType::parse(&p.instance_type)
                .map_err(|e| EngineError::invalid("instance_type", e))?,
        };
        if !p.allows_type(instance_type.as_str()) {
            return Err(PolicyRefusal::new(
                RefusalKind::NotAllowed,
                "provisioning.allowed_instance_types",
                format!(
                    "instance type {instance_type} is not allowed for new workers; allowed: {} \
                     ([provisioning] allowed_instance_types)",
                    p.allowed_types().join(", ")
                ),
            )
            .field("instance_type")
            .into());
        }
        let image = self.resolve_image(&region, &req.ami).await?;
        let mut tags = p.tags.clone();
        tags.extend(req.tags);
        let new = NewWorker {
            name,
            region: region.clone(),
            instance_type,
            ami: Ami {
                id: image.id.clone(),
                name: Some(image.name.clone()),
                owner: image.owner_id.clone(),
            },
            tags,
        };
        let (worker, events) = Worker::provision(new, by.clone(), self.inner.state.now());
        let saved = match p.max_workers {
            Some(cap) => self.inner.state.insert_capped(&worker, events, cap).await?,
            None => self.inner.state.insert(&worker, events).await?,
        };
        self.spawn_provision(saved.clone());
        Ok(saved)
    }

    /// The image `selector` names in `region`, from `[provisioning] ami_owners` only: a name
    /// pattern searches only those owners (the newest match wins); an AMI id is looked up and
    /// refused, naming its owner, when that owner is not listed. Launches nothing (the API's
    /// image preview asks this too).
    pub(crate) async fn resolve_image(
        &self,
        region: &Region,
        selector: &AmiSelector,
    ) -> Result<Image, EngineError> {
        let p = &self.inner.provisioning;
        let owners = &p.ami_owners;
        let (id, field) = match selector {
            AmiSelector::Id(id) => (id.clone(), "ami_id"),
            AmiSelector::NamePattern(pattern) => {
                return self
                    .newest_image(region, pattern, owners, "ami_name_pattern")
                    .await;
            }
            AmiSelector::Default => match (&p.ami_id, &p.ami_name_pattern) {
                (Some(id), _) => (
                    AmiId::parse(id).map_err(|e| EngineError::invalid("ami", e))?,
                    "ami",
                ),
                (None, Some(pattern)) => {
                    return self.newest_image(region, pattern, owners, "ami").await;
                }
                (None, None) => {
                    return Err(EngineError::invalid(
                        "ami",
                        "no AMI given and none configured",
                    ));
                }
            },
        };
        let cloud = &self.inner.cloud;
        let query = ImageQuery::OwnedIds {
            ids: vec![id.clone()],
            owners: owners.clone(),
        };
        if let Some(image) = cloud.find_images(region, &query).await?.into_iter().next() {
            return Ok(image);
        }
        // Not among the trusted owners' images: say whose it is (an unknown id fails here).
        let image = cloud
            .find_images(region, &ImageQuery::Ids(vec![id.clone()]))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::invalid(field, format!("image {id} does not exist")))?;
        let owner = image
            .owner_alias
            .clone()
            .or_else(|| image.owner_id.clone())
            .unwrap_or_else(|| "an unknown account".to_owned());
        Err(PolicyRefusal::new(
            RefusalKind::NotAllowed,
            "provisioning.ami_owners",
            format!(
                "image {id} ({}) is owned by {owner}, which is not one of [provisioning] \
                 ami_owners ({}); add that owner there to launch it",
                image.name,
                owners.join(", ")
            ),
        )
        .field(field)
        .into())
    }

    /// The newest image of `owners` whose name matches `pattern`.
    async fn newest_image(
        &self,
        region: &Region,
        pattern: &str,
        owners: &[String],
        field: &str,
    ) -> Result<Image, EngineError> {
        let query = ImageQuery::Name {
            pattern: pattern.to_owned(),
            owners: owners.to_vec(),
        };
        self.inner
            .cloud
            .find_images(region, &query)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                EngineError::invalid(
                    field,
                    format!(
                        "no image of owners {} matches {pattern:?} in {region}",
                        owners.join(", ")
                    ),
                )
            })
    }

    fn spawn_provision(&self, worker: Worker) {
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.provision(worker).await });
    }

    async fn provision(&self, worker: Worker) {
        let state = &self.inner.state;
        let p = &self.inner.provisioning;
        let (Some(itype), Some(ami)) = (worker.instance_type.clone(), worker.ami.clone()) else {
            let _ = state
                .change(worker.id, |w| {
                    w.fail_provisioning("no instance type or image", state.now())
                })
                .await;
            return;
        };
        let mut spec = RunSpec::new(ami.id, itype, worker.name.clone())
            .with_client_token(format!("ccm-{}", worker.id.as_uuid().simple()));
        spec.subnet_id.clone_from(&p.subnet_id);
        spec.security_group_ids.clone_from(&p.security_group_ids);
        spec.key_name.clone_from(&p.key_name);
        spec.detailed_monitoring = p.detailed_monitoring;
        spec.tags = worker
            .tags
            .iter()
            .filter(|(k, _)| k.as_str() != "Name")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.tags
            .insert("ccm:worker-id".into(), worker.id.to_string());
        let result = self.inner.cloud.run_instance(&worker.region, &spec).await;
        let now = state.now();
        let policy = &self.inner.endpoint;
        let outcome = match result {
            Ok(instance) => {
                let obs = observation(&instance);
                state
                    .change(worker.id, |w| {
                        let mut events = w.assign_instance(instance.id.clone(), now);
                        match w.observe_ec2(&obs, policy, now) {
                            Ok(more) => events.extend(more),
                            Err(e) => events.push(EventKind::WorkerInvalidTransition {
                                from: e.from,
                                to: e.to,
                            }),
                        }
                        Ok::<_, EngineError>(events)
                    })
                    .await
            }
            Err(err) => {
                tracing::warn!(worker = %worker.id, error = %err, "provisioning failed");
                let reason = err.to_string();
                state
                    .change(worker.id, |w| {
                        w.fail_provisioning(&reason, now)
                            .map_err(|e| EngineError::Conflict(e.to_string()))
                    })
                    .await
            }
        };
        if let Err(err) = outcome {
            tracing::error!(worker = %worker.id, error = %err, "could not record the provisioning outcome");
        }
    }

    /// Workers left `pending` without an instance by a previous run are provisioned again
    /// (with the same client token, so EC2 never launches twice), or failed when too old.
    pub(crate) async fn resume_interrupted(&self) {
        let state = &self.inner.state;
        let filter = WorkerFilter {
            ec2_states: vec!["pending".into()],
            ..Default::default()
        };
        let Ok(page) = state.workers(&filter).await else {
            return;
        };
        for w in page.items.into_iter().filter(|w| w.instance_id.is_none()) {
            if state.now() - w.created_at > chrono::Duration::hours(12) {
                let now = state.now();
                let _ = state
                    .change(w.id, |x| {
                        x.fail_provisioning(
                            "provisioning was interrupted and is too old to resume",
                            now,
                        )
                        .map_err(|e| EngineError::Conflict(e.to_string()))
                    })
                    .await;
            } else {
                self.spawn_provision(w);
            }
        }
    }

    /// The instances a request matches (terminated ones included), and the ids asked for
    /// but not found.
    async fn candidates(
        &self,
        req: &ImportRequest,
    ) -> Result<(Vec<Instance>, Vec<(String, String)>), EngineError> {
        let cloud = &self.inner.cloud;
        let owners = &self.inner.import.ami_owners;
        let regions: Vec<Region> = match &req.region {
            Some(r) => vec![r.clone()],
            None if !self.inner.import.regions.is_empty() => self
                .inner
                .import
                .regions
                .iter()
                .filter_map(|r| Region::parse(r).ok())
                .collect(),
            None => cloud.regions(),
        };
        if regions.is_empty() {
            return Err(EngineError::invalid("region", "no region to search"));
        }
        let mut candidates = Vec::new();
        for region in &regions {
            let query = match &req.selector {
                ImportSelector::InstanceIds(ids) => {
                    if ids.is_empty() {
                        return Err(EngineError::invalid("instance_ids", "must not be empty"));
                    }
                    InstanceQuery::ids(ids.iter().cloned())
                }
                ImportSelector::AmiId(id) => {
                    InstanceQuery::all().with(ccm_cloud::InstanceFilter::ImageId(vec![id.clone()]))
                }
                ImportSelector::AmiNamePattern(pattern) => {
                    match self.images_matching(region, pattern, owners).await? {
                        Some(filter) => InstanceQuery::all().with(filter),
                        None => continue,
                    }
                }
                ImportSelector::Configured => match self.configured_query(region).await? {
                    Some(q) => q,
                    None => continue,
                },
            };
            candidates.extend(cloud.describe_instances(region, &query).await?);
        }
        let mut skipped = Vec::new();
        if let ImportSelector::InstanceIds(ids) = &req.selector {
            for id in ids {
                if !candidates.iter().any(|c| &c.id == id) {
                    skipped.push((id.to_string(), "not found in the searched regions".into()));
                }
            }
        }
        Ok((candidates, skipped))
    }

    /// Whether an import of `importable` instances must be confirmed with `all`.
    fn needs_all(req: &ImportRequest, importable: usize) -> bool {
        importable > 1 && !matches!(req.selector, ImportSelector::InstanceIds(_))
    }

    /// What [`Provisioning::import`] would do, without changing anything: the matching
    /// instances, which of them already are workers, and whether `all` is needed.
    pub(crate) async fn preview_import(
        &self,
        req: ImportRequest,
    ) -> Result<ImportPreview, EngineError> {
        let (instances, skipped) = self.candidates(&req).await?;
        let importable = instances.iter().filter(|i| !i.state.is_final()).count();
        let store = self.inner.state.store();
        let mut candidates = Vec::with_capacity(instances.len());
        for i in instances {
            let worker = store.get_by_instance(&i.id).await?.map(|w| w.id);
            candidates.push(ImportCandidate {
                name: i.name().map(str::to_owned),
                skip_reason: i
                    .state
                    .is_final()
                    .then(|| format!("the instance is {}", i.state)),
                instance_id: i.id,
                region: i.region,
                state: i.state,
                instance_type: i.instance_type,
                image_id: i.image_id,
                launch_time: i.launch_time,
                worker,
            });
        }
        Ok(ImportPreview {
            needs_all: Self::needs_all(&req, importable),
            candidates,
            skipped,
        })
    }

    /// Imports existing instances; importing an instance twice returns the existing worker.
    /// With [`ImportRequest::restricted_to_filter`] (callers below admin), every instance to
    /// import must match the `[import]` filter, else nothing is imported (403 naming them).
    pub(crate) async fn import(
        &self,
        req: ImportRequest,
        by: &Actor,
    ) -> Result<ImportReport, EngineError> {
        let state = &self.inner.state;
        let (candidates, skipped) = self.candidates(&req).await?;
        let mut report = ImportReport {
            matched: candidates.len() as u32,
            skipped,
            ..Default::default()
        };
        let importable: Vec<_> = candidates
            .into_iter()
            .filter(|i| !i.state.is_final())
            .collect();
        if req.restricted_to_filter && req.selector != ImportSelector::Configured {
            let outside = self.outside_import_filter(&importable).await?;
            if !outside.is_empty() {
                return Err(self.outside_refusal(&req.selector, &outside).into());
            }
        }
        if !req.all && Self::needs_all(&req, importable.len()) {
            return Err(EngineError::Conflict(format!(
                "{} instances match; import them all explicitly (all = true)",
                importable.len()
            )));
        }
        let images = self.images_of(&importable).await;
        let mut records = Vec::with_capacity(importable.len());
        for instance in &importable {
            let obs = observation(instance);
            let (mut worker, events) = Worker::import(
                &obs,
                instance.region.clone(),
                &self.inner.endpoint,
                by.clone(),
                state.now(),
            );
            if let Some(ami) = worker.ami.as_mut()
                && let Some(image) = images.get(&ami.id)
            {
                ami.name = Some(image.name.clone());
                ami.owner.clone_from(&image.owner_id);
            }
            records.push(async move { state.insert_or_get(&worker, events).await });
        }
        // A few inserts at once (each is its own transaction and event append): hundreds of
        // instances import in a fraction of the time one by one took, and the report keeps
        // the instances' order. Every insert runs to its end (none is cut off between its
        // row and its event); the first failure is the answer.
        let mut saves = futures::stream::iter(records).buffered(IMPORT_CONCURRENCY);
        let mut failure = None;
        while let Some(done) = saves.next().await {
            let (saved, created) = match done {
                Ok(done) => done,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            if created {
                report.imported.push(saved.id);
            } else {
                report.existing.push(saved.id);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        state
            .emit(
                None,
                [EventKind::ImportCompleted {
                    matched: report.matched,
                    imported: report.imported.len() as u32,
                    existing: report.existing.len() as u32,
                    by: by.clone(),
                }],
            )
            .await;
        Ok(report)
    }

    /// The `[import]` filter as a describe query in `region`; `None` when its image pattern
    /// matches no image of `[import] ami_owners` there (nothing can match).
    async fn configured_query(
        &self,
        region: &Region,
    ) -> Result<Option<InstanceQuery>, EngineError> {
        let cfg = &self.inner.import;
        if cfg.tag.is_none() && cfg.ami_name_pattern.is_none() {
            return Err(EngineError::invalid(
                "import",
                "no [import] filter is configured",
            ));
        }
        let mut q = InstanceQuery::all();
        if let Some(filter) = self.tag_filter() {
            q = q.with(filter);
        }
        if let Some(pattern) = &cfg.ami_name_pattern {
            match self
                .images_matching(region, pattern, &cfg.ami_owners)
                .await?
            {
                Some(filter) => q = q.with(filter),
                None => return Ok(None),
            }
        }
        Ok(Some(q))
    }

    /// The `[import] tag` as a filter.
    fn tag_filter(&self) -> Option<ccm_cloud::InstanceFilter> {
        let (k, v) = self.inner.import.tag.as_ref()?.split_once('=')?;
        Some(ccm_cloud::InstanceFilter::tag(k, v))
    }

    /// The instances among `instances` the `[import]` filter does not match: a tag that is
    /// missing or different, or an image whose name does not match `ami_name_pattern` or whose
    /// owner is not one of `ami_owners`. With no filter configured, none matches.
    async fn outside_import_filter(
        &self,
        instances: &[Instance],
    ) -> Result<Vec<InstanceId>, EngineError> {
        let cfg = &self.inner.import;
        if cfg.tag.is_none() && cfg.ami_name_pattern.is_none() {
            return Ok(instances.iter().map(|i| i.id.clone()).collect());
        }
        let tag = self.tag_filter();
        let mut trusted_images: Vec<AmiId> = Vec::new();
        if let Some(pattern) = &cfg.ami_name_pattern {
            let mut by_region: BTreeMap<&Region, Vec<AmiId>> = BTreeMap::new();
            for i in instances {
                let ids = by_region.entry(&i.region).or_default();
                if !ids.contains(&i.image_id) {
                    ids.push(i.image_id.clone());
                }
            }
            for (region, ids) in by_region {
                let query = ImageQuery::OwnedIds {
                    ids,
                    owners: cfg.ami_owners.clone(),
                };
                trusted_images.extend(
                    self.inner
                        .cloud
                        .find_images(region, &query)
                        .await?
                        .into_iter()
                        .filter(|image| glob_match(pattern, &image.name))
                        .map(|image| image.id),
                );
            }
        }
        Ok(instances
            .iter()
            .filter(|i| {
                let tag_ok = tag.as_ref().is_none_or(|f| f.matches(i));
                let image_ok =
                    cfg.ami_name_pattern.is_none() || trusted_images.contains(&i.image_id);
                !(tag_ok && image_ok)
            })
            .map(|i| i.id.clone())
            .collect())
    }

    /// The 403 for an import below admin that reaches beyond the `[import]` filter.
    fn outside_refusal(&self, selector: &ImportSelector, outside: &[InstanceId]) -> PolicyRefusal {
        let cfg = &self.inner.import;
        let mut filter = Vec::new();
        if let Some(tag) = &cfg.tag {
            filter.push(format!("tag {tag}"));
        }
        if let Some(pattern) = &cfg.ami_name_pattern {
            filter.push(format!(
                "images named {pattern:?} of owners {}",
                cfg.ami_owners.join(", ")
            ));
        }
        let filter = if filter.is_empty() {
            "none is configured".to_owned()
        } else {
            filter.join(" and ")
        };
        let mut ids: Vec<String> = outside.iter().take(10).map(ToString::to_string).collect();
        if outside.len() > 10 {
            ids.push(format!("and {} more", outside.len() - 10));
        }
        let field = match selector {
            ImportSelector::InstanceIds(_) => "instance_ids",
            ImportSelector::AmiId(_) => "ami_id",
            ImportSelector::AmiNamePattern(_) => "ami_name_pattern",
            ImportSelector::Configured => "configured",
        };
        PolicyRefusal::new(
            RefusalKind::Role,
            "import",
            format!(
                "{} not match the [import] filter ({filter}); below admin, only instances the \
                 filter matches may be imported (they receive the fleet's CML password), and \
                 nothing was imported",
                if outside.len() == 1 {
                    format!("instance {} does", ids.join(", "))
                } else {
                    format!("instances {} do", ids.join(", "))
                }
            ),
        )
        .field(field)
    }

    /// The images these instances run (name and owner), one lookup per region. Best effort:
    /// an image that is gone (or a failed lookup) leaves them unknown, never the import.
    async fn images_of(&self, instances: &[Instance]) -> HashMap<AmiId, Image> {
        let mut by_region: BTreeMap<&Region, Vec<AmiId>> = BTreeMap::new();
        for i in instances {
            let ids = by_region.entry(&i.region).or_default();
            if !ids.contains(&i.image_id) {
                ids.push(i.image_id.clone());
            }
        }
        let mut images = HashMap::new();
        for (region, ids) in by_region {
            // Owned by anyone: this only describes what already runs.
            let query = ImageQuery::OwnedIds {
                ids,
                owners: Vec::new(),
            };
            match self.inner.cloud.find_images(region, &query).await {
                Ok(found) => images.extend(found.into_iter().map(|i| (i.id.clone(), i))),
                Err(e) => {
                    tracing::warn!(region = %region, error = %e, "AMI names unknown for this import");
                }
            }
        }
        images
    }

    /// The instances launched from images of `owners` whose name matches `pattern`, as a
    /// filter; `None` when there is no such image.
    async fn images_matching(
        &self,
        region: &Region,
        pattern: &str,
        owners: &[String],
    ) -> Result<Option<ccm_cloud::InstanceFilter>, EngineError> {
        let images = self
            .inner
            .cloud
            .find_images(
                region,
                &ImageQuery::Name {
                    pattern: pattern.to_owned(),
                    owners: owners.to_vec(),
                },
            )
            .await?;
        if images.is_empty() {
            return Ok(None);
        }
        Ok(Some(ccm_cloud::InstanceFilter::ImageId(
            images.into_iter().map(|i| i.id).collect(),
        )))
    }
}

impl AutoImport for Provisioning {
    fn import_configured(&self) -> BoxFuture<'_, Result<ImportReport, EngineError>> {
        Box::pin(async move {
            let req = ImportRequest {
                region: None,
                selector: ImportSelector::Configured,
                all: true,
                restricted_to_filter: false,
            };
            self.import(req, &Actor::system("auto-import")).await
        })
    }
}
