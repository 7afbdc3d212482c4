//! The JSON schemas of the events in the OpenAPI document: one `{Variant}Data` component per
//! entry of the domain's event catalogue (its `data`), one `{Variant}Event` per entry (the
//! CloudEvents envelope with `type` fixed and `data` referencing the payload), and
//! `CloudEvent`, the `oneOf` of them all keyed by `type`. The event log page (`EventRecord`)
//! and the SSE stream carry `CloudEvent`s.
//!
//! The domain knows no OpenAPI: it lists its catalogue's fields with their Rust types
//! ([`EventKind::SHAPES`]), and this module maps each type to a schema. A field type it does
//! not know is a test failure ([`field_schema`] answers an error; the published document then
//! shows an unconstrained value), so a new payload type cannot slip through undocumented.

use ccm_domain::events::{EventShape, FieldShape};
use ccm_domain::idle::TimeoutRule;
use ccm_domain::{
    CheckStatus, Ec2State, EventKind, LabAction, PauseReason, RefreshSkip, ResumeReason,
    ServiceStatus, WorkerAction,
};
use serde::Serialize;
use utoipa::openapi::schema::{
    ArrayBuilder, Discriminator, KnownFormat, ObjectBuilder, OneOfBuilder, Ref, Schema,
    SchemaFormat, Type,
};
use utoipa::openapi::{Components, RefOr};

/// The component holding any CloudEvent ccm emits.
pub const CLOUD_EVENT: &str = "CloudEvent";

/// The component name of an event type's payload.
pub fn data_component(shape: &EventShape) -> String {
    format!("{}Data", shape.variant)
}

/// The component name of an event type's whole CloudEvent.
pub fn event_component(shape: &EventShape) -> String {
    format!("{}Event", shape.variant)
}

/// Adds the payload, envelope and `CloudEvent` components for every catalogue entry.
pub(crate) fn add_components(components: &mut Components) {
    let mut one_of = OneOfBuilder::new().description(Some(
        "A CloudEvents 1.0 event as ccm emits it (SSE `data:`, the event log); `type` says which.",
    ));
    let mut discriminator = Discriminator::new("type");
    for shape in EventKind::SHAPES {
        let data = data_schema(shape).unwrap_or_else(|e| {
            tracing::warn!(event = shape.type_name, error = %e, "undocumented event payload");
            Schema::Object(ObjectBuilder::new().build())
        });
        components
            .schemas
            .insert(data_component(shape), RefOr::T(data));
        components
            .schemas
            .insert(event_component(shape), RefOr::T(envelope(shape)));
        let reference = format!("#/components/schemas/{}", event_component(shape));
        discriminator
            .mapping
            .insert(shape.type_name.to_owned(), reference);
        one_of = one_of.item(Ref::from_schema_name(event_component(shape)));
    }
    let any = one_of.discriminator(Some(discriminator)).build();
    components
        .schemas
        .insert(CLOUD_EVENT.to_owned(), RefOr::T(Schema::OneOf(any)));
}

/// The CloudEvents envelope of one event type.
fn envelope(shape: &EventShape) -> Schema {
    let string = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    let mut description = format!("`{}`", shape.type_name);
    if shape.transient {
        description.push_str(" (live view only: not kept in the event log)");
    }
    Schema::Object(
        ObjectBuilder::new()
            .description(Some(description))
            .property(
                "specversion",
                string("Always `1.0`.").enum_values(Some(["1.0"])),
            )
            .property(
                "id",
                string("Unique id (UUID v7, time-ordered).")
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            )
            .property(
                "source",
                string("Which part of ccm emitted it, e.g. `/ccm/engine`."),
            )
            .property(
                "type",
                string("The event type.").enum_values(Some([shape.type_name])),
            )
            .property(
                "time",
                string("When it happened (RFC 3339, UTC).")
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .property(
                "subject",
                string("The worker it concerns (its id), if any."),
            )
            .property(
                "datacontenttype",
                string("Always `application/json`.").enum_values(Some(["application/json"])),
            )
            .property("data", Ref::from_schema_name(data_component(shape)))
            .required("specversion")
            .required("id")
            .required("source")
            .required("type")
            .required("time")
            .required("datacontenttype")
            .required("data")
            .build(),
    )
}

/// The payload schema of one event type, or which field type is unknown.
pub fn data_schema(shape: &EventShape) -> Result<Schema, String> {
    let mut object =
        ObjectBuilder::new().description(Some(format!("`data` of `{}`.", shape.type_name)));
    for field in shape.fields {
        let schema = field_schema(shape, field)?;
        object = object.property(field.name, schema);
        if !may_be_absent(field) {
            object = object.required(field.name);
        }
    }
    Ok(Schema::Object(object.build()))
}

fn compact(ty: &str) -> String {
    ty.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Whether the field may be missing from the JSON (`#[serde(default)]`); `Option` fields are
/// written as `null` when empty, so they are present.
fn may_be_absent(field: &FieldShape) -> bool {
    field.attributes.contains("default")
}

/// The schema of one payload field.
pub fn field_schema(shape: &EventShape, field: &FieldShape) -> Result<RefOr<Schema>, String> {
    let ty = compact(field.ty);
    // A snapshot carries the worker as the API shows it.
    if shape.variant == "WorkerSnapshot" && field.name == "worker" {
        return Ok(Ref::from_schema_name("WorkerView").into());
    }
    type_schema(&ty).ok_or_else(|| {
        format!(
            "{}.{}: no schema for the Rust type `{}` (add it to event_schema::type_schema)",
            shape.type_name, field.name, field.ty
        )
    })
}

/// The wire names of some enum values (their serde form).
fn names<T: Serialize>(values: impl IntoIterator<Item = T>) -> Vec<String> {
    values
        .into_iter()
        .filter_map(|v| match serde_json::to_value(v) {
            Ok(serde_json::Value::String(s)) => Some(s),
            _ => None,
        })
        .collect()
}

fn string_enum(values: Vec<String>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .into()
}

fn of_type(ty: Type) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(ty).into()
}

/// The schema of a Rust type as written in the catalogue (whitespace removed).
fn type_schema(ty: &str) -> Option<RefOr<Schema>> {
    if let Some(inner) = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
        let inner = type_schema(inner)?;
        return Some(
            OneOfBuilder::new()
                .item(inner)
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .into(),
        );
    }
    if let Some(inner) = ty.strip_prefix("Vec<").and_then(|t| t.strip_suffix('>')) {
        return Some(ArrayBuilder::new().items(type_schema(inner)?).into());
    }
    Some(match ty {
        "String" => of_type(Type::String),
        "bool" => of_type(Type::Boolean),
        "u32" | "u64" => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .into(),
        "f64" => of_type(Type::Number),
        "DateTime<Utc>" => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("RFC 3339, UTC."))
            .into(),
        "Actor" => ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Who did it: a user or API token by name (`token:<name>`), or ccm itself \
                 (`system:<what>`, e.g. `system:idle`).",
            ))
            .into(),
        "Reason" => Ref::from_schema_name("ReasonView").into(),
        "BTreeMap<String,String>" => ObjectBuilder::new()
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
            .into(),
        "serde_json::Value" => ObjectBuilder::new()
            .description(Some("Free-form JSON (a summary for operators)."))
            .into(),
        "Ec2State" => string_enum(
            Ec2State::ALL
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        ),
        "ServiceStatus" => string_enum(
            ServiceStatus::ALL
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        ),
        "CheckStatus" => string_enum(
            CheckStatus::ALL
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        ),
        "WorkerAction" => string_enum(names(worker_actions())),
        "LabAction" => string_enum(names(lab_actions())),
        "PauseReason" => string_enum(names(pause_reasons())),
        "ResumeReason" => string_enum(names(resume_reasons())),
        "RefreshSkip" => string_enum(names(refresh_skips())),
        "TimeoutRule" => string_enum(names(timeout_rules())),
        _ => return None,
    })
}

// The values of the domain enums that have no `ALL` list. Each `match` is exhaustive, so a
// value added in the domain fails to compile here until it is listed.

fn worker_actions() -> Vec<WorkerAction> {
    use WorkerAction as A;
    let all = vec![
        A::Create,
        A::Import,
        A::Start,
        A::Stop,
        A::Pause,
        A::Resume,
        A::Terminate,
        A::Delete,
        A::UpdateTags,
        A::EnableDetailedMonitoring,
        A::Refresh,
        A::Licence,
    ];
    for a in &all {
        match a {
            A::Create
            | A::Import
            | A::Start
            | A::Stop
            | A::Pause
            | A::Resume
            | A::Terminate
            | A::Delete
            | A::UpdateTags
            | A::EnableDetailedMonitoring
            | A::Refresh
            | A::Licence => {}
        }
    }
    all
}

fn lab_actions() -> Vec<LabAction> {
    use LabAction as A;
    let all = vec![
        A::Start,
        A::Stop,
        A::Wipe,
        A::Delete,
        A::Download,
        A::Import,
    ];
    for a in &all {
        match a {
            A::Start | A::Stop | A::Wipe | A::Delete | A::Download | A::Import => {}
        }
    }
    all
}

fn pause_reasons() -> Vec<PauseReason> {
    use PauseReason as P;
    let all = vec![P::IdleTimeout, P::Manual, P::Schedule, P::External];
    for p in &all {
        match p {
            P::IdleTimeout | P::Manual | P::Schedule | P::External => {}
        }
    }
    all
}

fn resume_reasons() -> Vec<ResumeReason> {
    use ResumeReason as R;
    let all = vec![R::Manual, R::Schedule, R::External];
    for r in &all {
        match r {
            R::Manual | R::Schedule | R::External => {}
        }
    }
    all
}

fn refresh_skips() -> Vec<RefreshSkip> {
    use RefreshSkip as S;
    let all = vec![S::NotRunning, S::Throttled, S::AlreadyRunning];
    for s in &all {
        match s {
            S::NotRunning | S::Throttled | S::AlreadyRunning => {}
        }
    }
    all
}

fn timeout_rules() -> Vec<TimeoutRule> {
    use TimeoutRule as T;
    let all = vec![
        T::Plain,
        T::FleetBusy,
        T::SessionEnded,
        T::RunEnded,
        T::NoReturn,
        T::LearnedReturn,
        T::Midday,
        T::NobodySinceStart,
    ];
    for t in &all {
        match t {
            T::Plain
            | T::FleetBusy
            | T::SessionEnded
            | T::RunEnded
            | T::NoReturn
            | T::LearnedReturn
            | T::NobodySinceStart
            | T::Midday => {}
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_type_of_the_catalogue_should_have_a_schema() {
        for shape in EventKind::SHAPES {
            for field in shape.fields {
                if let Err(e) = field_schema(shape, field) {
                    panic!("{e}");
                }
            }
        }
    }

    #[test]
    fn absent_and_nullable_fields_should_be_told_apart() {
        let paused = EventKind::SHAPES
            .iter()
            .find(|s| s.type_name == "ccm.worker.paused")
            .unwrap();
        let json = serde_json::to_value(data_schema(paused).unwrap()).unwrap();
        assert_eq!(json["required"], serde_json::json!(["reason"]), "{json}");
        assert_eq!(
            json["properties"]["reason"]["enum"],
            serde_json::json!(["idle_timeout", "manual", "schedule", "external"])
        );
        assert_eq!(
            json["properties"]["by"]["oneOf"][1]["type"], "null",
            "{json}"
        );
    }
}
