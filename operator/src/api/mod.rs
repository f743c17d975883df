//! The `ModelDeployment` API, group `modelfleet.dev`, version `v1alpha1`.
//!
//! These Rust types are the truth: the CRD in `crds/` is generated from them (`crdgen`), and
//! the validation the API server enforces (ranges, enums, patterns, CEL rules) is declared
//! here beside the field it guards, so a bad manifest is refused with the field's name.

mod spec;
mod status;

pub use spec::*;
pub use status::*;

/// The API group of every ModelFleet resource.
pub const GROUP: &str = "modelfleet.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
