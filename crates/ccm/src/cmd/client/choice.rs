//! Command-line choices built from the API's and the domain's own lists: `--state`,
//! `--service`, `--sort`, `--run`, `--role`. Each is a clap [`ValueEnum`] (possible values in
//! `--help`, completion and the usage error) wrapping the real type, so a state or job added
//! upstream is offered at once and a value the server does not know cannot be sent.
//!
//! clap's derive needs a local enum; these wrap foreign ones, so the impls are written by
//! [`choices!`].

use std::sync::LazyLock;

use ccm_api::Role;
use ccm_api::dto::SortKey;
use ccm_domain::{Ec2State, ServiceStatus};
use ccm_engine::JobKind;
use clap::ValueEnum;
use clap::builder::PossibleValue;

macro_rules! choices {
    ($( $(#[$doc:meta])* $name:ident($inner:ty) = $all:expr; )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) struct $name(pub(crate) $inner);

        impl ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                static ALL: LazyLock<Vec<$name>> =
                    LazyLock::new(|| $all.into_iter().map($name).collect());
                &ALL
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(PossibleValue::new(self.0.as_str()))
            }
        }
    )*};
}

choices! {
    /// An EC2 state (`--state`).
    StateChoice(Ec2State) = Ec2State::ALL;
    /// A service status (`--service`).
    ServiceChoice(ServiceStatus) = ServiceStatus::ALL;
    /// A sort key of the worker list (`--sort`).
    SortChoice(SortKey) = SortKey::ALL;
    /// A background job the engine runs (`--run`; not `webhooks`, which only its own loop runs
    /// and the API refuses to trigger).
    JobChoice(JobKind) = JobKind::ALL.into_iter().filter(|j| j.runs_in_engine());
    /// An API role (`ccm token new --role`).
    RoleChoice(Role) = Role::ALL;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_choice_should_offer_exactly_the_upstream_list() {
        let names = |v: &[PossibleValue]| -> Vec<String> {
            v.iter().map(|p| p.get_name().to_owned()).collect()
        };
        let of =
            |all: Vec<Option<PossibleValue>>| names(&all.into_iter().flatten().collect::<Vec<_>>());
        assert_eq!(
            of(StateChoice::value_variants()
                .iter()
                .map(ValueEnum::to_possible_value)
                .collect()),
            Ec2State::ALL
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            of(SortChoice::value_variants()
                .iter()
                .map(ValueEnum::to_possible_value)
                .collect()),
            ["name", "created", "updated", "state", "service", "region"]
        );
        assert_eq!(
            of(RoleChoice::value_variants()
                .iter()
                .map(ValueEnum::to_possible_value)
                .collect()),
            ["viewer", "lab_operator", "manager", "admin"]
        );
        assert_eq!(
            JobChoice::value_variants()
                .iter()
                .map(|c| c.0)
                .collect::<Vec<_>>(),
            JobKind::ALL
                .into_iter()
                .filter(|j| j.runs_in_engine())
                .collect::<Vec<_>>()
        );
        assert!(JobChoice::from_str("webhooks", false).is_err());
        assert_eq!(
            ServiceChoice::from_str("degraded", false).map(|c| c.0),
            Ok(ServiceStatus::Degraded)
        );
    }

    #[test]
    fn sort_keys_should_be_spelled_as_the_api_reads_them() {
        for key in SortKey::ALL {
            assert_eq!(
                serde_json::to_value(key).unwrap(),
                serde_json::json!(key.as_str())
            );
        }
    }
}
