//! The CML password and licence tokens are [`Secret`]s: the one secret type of ccm, defined in
//! `ccm-domain` and re-exported here so that callers of this crate need not name the domain.

pub use ccm_domain::Secret;
