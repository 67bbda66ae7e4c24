//! Fleet updates: signed bundles of models with the config fragment that uses them
//! (docs/fleet.md).

pub mod bundle;
