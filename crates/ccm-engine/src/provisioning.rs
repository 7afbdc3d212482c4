//! [`Provisioning`]: new workers (the record at once, RunInstances in the background, resumed
//! after a restart with the same client token) and imports of existing instances.
//!
//! The periodic auto-import job reaches it only through [`AutoImport`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ccm_cloud::{CloudProvider, ImageQuery, InstanceQuery, RunSpec};
use ccm_domain::worker::{Ami, EndpointPolicy, NewWorker};
use ccm_domain::{Actor, AmiId, EventKind, InstanceType, Region, Worker};
use ccm_store::WorkerFilter;
use futures::future::BoxFuture;

use crate::config::{ImportConfig, ProvisioningConfig};
use crate::convert::observation;
use crate::error::EngineError;
use crate::jobs::AutoImport;
use crate::state::State;
use crate::supervisor::Supervisor;
use crate::types::{
    AmiSelector, CreateWorker, ImageInfo, ImagePreview, ImportCandidate, ImportPreview,
    ImportReport, ImportRequest, ImportSelector, ProvisioningOptions,
};

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
        let mut instance_types = Vec::new();
        if !p.allowed_instance_types.is_empty() {
            instance_types.push(p.instance_type.clone());
            for t in &p.allowed_instance_types {
                if !instance_types.contains(t) {
                    instance_types.push(t.clone());
                }
            }
        }
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
            instance_types,
            ami_id: p.ami_id.clone(),
            ami_name_pattern: p.ami_name_pattern.clone(),
            tags: p.tags.clone(),
            import_regions,
            import_ami_name_pattern: i.ami_name_pattern.clone(),
            import_tag: i.tag.clone(),
        }
    }

    /// The instance type of a request: the configured default, or one of the allowed ones.
    fn instance_type(&self, asked: Option<InstanceType>) -> Result<InstanceType, EngineError> {
        let p = &self.inner.provisioning;
        match asked {
            None => InstanceType::parse(&p.instance_type)
                .map_err(|e| EngineError::invalid("instance_type", e)),
            Some(t) => {
                let allowed = p.allowed_instance_types.is_empty()
                    || t.as_str() == p.instance_type
                    || p.allowed_instance_types.iter().any(|a| a == t.as_str());
                if allowed {
                    Ok(t)
                } else {
                    Err(EngineError::invalid(
                        "instance_type",
                        format!("{t} is not one of the allowed instance types"),
                    ))
                }
            }
        }
    }

    /// The image query of a selector (the configured default for [`AmiSelector::Default`]).
    fn image_query(&self, ami: AmiSelector) -> Result<ImageQuery, EngineError> {
        let p = &self.inner.provisioning;
        Ok(match ami {
            AmiSelector::Id(id) => ImageQuery::Ids(vec![id]),
            AmiSelector::NamePattern(pattern) => ImageQuery::Name {
                pattern,
                owners: Vec::new(),
            },
            AmiSelector::Default => match (&p.ami_id, &p.ami_name_pattern) {
                (Some(id), _) => ImageQuery::Ids(vec![
                    AmiId::parse(id).map_err(|e| EngineError::invalid("ami", e))?,
                ]),
                (None, Some(pattern)) => ImageQuery::Name {
                    pattern: pattern.clone(),
                    owners: Vec::new(),
                },
                (None, None) => {
                    return Err(EngineError::invalid(
                        "ami",
                        "no AMI given and none configured",
                    ));
                }
            },
        })
    }

    /// The images a create request would choose from, the one it would use first.
    pub(crate) async fn preview_image(
        &self,
        region: Option<Region>,
        ami: AmiSelector,
    ) -> Result<ImagePreview, EngineError> {
        let region = match region {
            Some(r) => r,
            None => self.default_region()?,
        };
        let query = self.image_query(ami)?;
        let images = self.inner.cloud.find_images(&region, &query).await?;
        Ok(ImagePreview {
            region,
            images: images
                .into_iter()
                .take(20)
                .map(|i| ImageInfo {
                    id: i.id,
                    name: i.name,
                    owner_id: i.owner_id,
                    creation_date: i.creation_date,
                    state: i.state,
                    description: i.description,
                })
                .collect(),
        })
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
        let instance_type = self.instance_type(req.instance_type)?;
        let query = self.image_query(req.ami)?;
        let images = self.inner.cloud.find_images(&region, &query).await?;
        let image = images
            .into_iter()
            .next()
            .ok_or_else(|| EngineError::invalid("ami", "no image matches"))?;
        let mut tags = p.tags.clone();
        tags.extend(req.tags);
        let new = NewWorker {
            name,
            region: region.clone(),
            instance_type,
            ami: Ami {
                id: image.id.clone(),
                name: Some(image.name.clone()),
            },
            tags,
        };
        let (worker, events) = Worker::provision(new, by.clone(), self.inner.state.now());
        let saved = self.inner.state.insert(&worker, events).await?;
        self.spawn_provision(saved.clone());
        Ok(saved)
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
    ) -> Result<(Vec<ccm_cloud::Instance>, Vec<(String, String)>), EngineError> {
        let cloud = &self.inner.cloud;
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
                    match self.images_matching(region, pattern).await? {
                        Some(filter) => InstanceQuery::all().with(filter),
                        None => continue,
                    }
                }
                ImportSelector::Configured => {
                    let cfg = &self.inner.import;
                    let mut q = InstanceQuery::all();
                    if let Some(tag) = &cfg.tag
                        && let Some((k, v)) = tag.split_once('=')
                    {
                        q = q.with(ccm_cloud::InstanceFilter::tag(k, v));
                    }
                    if let Some(pattern) = &cfg.ami_name_pattern {
                        match self.images_matching(region, pattern).await? {
                            Some(filter) => q = q.with(filter),
                            None => continue,
                        }
                    }
                    if cfg.tag.is_none() && cfg.ami_name_pattern.is_none() {
                        return Err(EngineError::invalid(
                            "import",
                            "no [import] filter is configured",
                        ));
                    }
                    q
                }
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
        if !req.all && Self::needs_all(&req, importable.len()) {
            return Err(EngineError::Conflict(format!(
                "{} instances match; import them all explicitly (all = true)",
                importable.len()
            )));
        }
        let names = self.ami_names(&importable).await;
        for instance in &importable {
            let obs = observation(instance);
            let (mut worker, events) = Worker::import(
                &obs,
                instance.region.clone(),
                &self.inner.endpoint,
                by.clone(),
                state.now(),
            );
            if let Some(ami) = worker.ami.as_mut() {
                ami.name = names.get(&ami.id).cloned();
            }
            let (saved, created) = state.insert_or_get(&worker, events).await?;
            if created {
                report.imported.push(saved.id);
            } else {
                report.existing.push(saved.id);
            }
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

    /// The names of the AMIs these instances run, one lookup per region. Best effort: an
    /// image that is gone (or a failed lookup) leaves the name unknown, never the import.
    async fn ami_names(&self, instances: &[ccm_cloud::Instance]) -> HashMap<AmiId, String> {
        let mut by_region: BTreeMap<&Region, Vec<AmiId>> = BTreeMap::new();
        for i in instances {
            let ids = by_region.entry(&i.region).or_default();
            if !ids.contains(&i.image_id) {
                ids.push(i.image_id.clone());
            }
        }
        let mut names = HashMap::new();
        for (region, ids) in by_region {
            match self
                .inner
                .cloud
                .find_images(region, &ImageQuery::Ids(ids))
                .await
            {
                Ok(images) => names.extend(images.into_iter().map(|i| (i.id, i.name))),
                Err(e) => {
                    tracing::warn!(region = %region, error = %e, "AMI names unknown for this import");
                }
            }
        }
        names
    }

    async fn images_matching(
        &self,
        region: &Region,
        pattern: &str,
    ) -> Result<Option<ccm_cloud::InstanceFilter>, EngineError> {
        let images = self
            .inner
            .cloud
            .find_images(
                region,
                &ImageQuery::Name {
                    pattern: pattern.to_owned(),
                    owners: Vec::new(),
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
            };
            self.import(req, &Actor::system("auto-import")).await
        })
    }
}
