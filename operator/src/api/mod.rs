//! The `ModelDeployment` API, group `modelfleet.dev`, version `v1alpha1`.
//!
//! These Rust types are the truth: the CRD in `crds/` is generated from them (`crdgen`), and
//! the validation the API server enforces (ranges, enums, patterns, CEL rules) is declared
//! here beside the field it guards, so a bad manifest is refused with the field's name.

mod canary;
pub mod rules;
mod spec;
mod status;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

pub use canary::*;
pub use spec::*;
pub use status::*;

/// The API group of every ModelFleet resource.
pub const GROUP: &str = "modelfleet.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// A ModelDeployment as the controller watches it: decoded, or, when the stored object does
/// not decode into [`ModelDeployment`] (a value an older, looser schema let in), its metadata
/// and the decoding error. Listing and watching through this type never fails as a whole
/// because of one object, so one bad object cannot stop the operator for everyone else.
pub type WatchedModelDeployment = kube::core::DeserializeGuard<ModelDeployment>;

/// How the controller, its queue and the autoscaler refer to `md`.
pub fn watched_ref(md: &ModelDeployment) -> ObjectRef<WatchedModelDeployment> {
    let object = ObjectRef::new(&md.name_any());
    match md.namespace() {
        Some(namespace) => object.within(&namespace),
        None => object,
    }
}
