//! Request handlers, one module per resource.

pub(crate) mod labs;
pub(crate) mod meta;
pub(crate) mod session;
pub(crate) mod system;
pub(crate) mod webhooks;
pub(crate) mod workers;
