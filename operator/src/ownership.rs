//! Whether an object that already has the name of a ModelDeployment's child is the
//! operator's to change. Pure: the reconciler reads the object's metadata and asks.
//!
//! Server-side apply with `force` takes over whatever object has the name it applies, so the
//! reconciler asks first: an object someone else made (a Service a team wrote by hand, a PDB
//! from another chart) is never repointed, and since the operator adds no owner reference to
//! it, the garbage collector never deletes it with the ModelDeployment either.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// What the operator may do with an existing object of a child's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Its controller is this ModelDeployment: apply.
    Ours,
    /// It has no controller, and the operator's field manager applied it before: a child
    /// left behind by `kubectl delete --cascade=orphan`, which the ModelDeployment of the
    /// same name takes back, as a ReplicaSet adopts its orphaned pods.
    Orphaned,
    /// Another controller owns it, e.g. the ModelDeployment of the same name that was
    /// deleted and whose children the garbage collector has not removed yet.
    OtherController { kind: String, name: String },
    /// Nobody controls it and the operator never applied it: someone else's object.
    Foreign,
}

impl Ownership {
    /// Whether the reconciler may apply over the object.
    pub fn may_apply(&self) -> bool {
        matches!(self, Self::Ours | Self::Orphaned)
    }

    /// Why the object is not applied, for a status message; `None` when it may be.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Self::Ours | Self::Orphaned => None,
            Self::OtherController { kind, name } => Some(format!("is controlled by {kind} {name}")),
            Self::Foreign => Some("exists and is not managed by this ModelDeployment".into()),
        }
    }
}

/// The ownership of an object with metadata `meta`, from the point of view of the
/// ModelDeployment with uid `owner_uid`, whose children `field_manager` applies.
pub fn ownership(meta: &ObjectMeta, owner_uid: &str, field_manager: &str) -> Ownership {
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    match controller {
        Some(owner) if owner.uid == owner_uid => Ownership::Ours,
        Some(owner) => Ownership::OtherController {
            kind: owner.kind.clone(),
            name: owner.name.clone(),
        },
        None if applied_by(meta, field_manager) => Ownership::Orphaned,
        None => Ownership::Foreign,
    }
}

fn applied_by(meta: &ObjectMeta, field_manager: &str) -> bool {
    meta.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(field_manager)
            && entry.operation.as_deref() == Some("Apply")
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};

    use super::*;

    const UID: &str = "0b8e6a4c-4f57-4a5e-9d1e-2d7d3b1f7a10";
    use modelfleet_contract::labels::field_manager::OPERATOR as MANAGER;

    fn controlled_by(uid: &str) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "modelfleet.dev/v1alpha1".into(),
                kind: "ModelDeployment".into(),
                name: "chat".into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        }
    }

    fn managed_by(manager: &str, operation: &str) -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some(manager.into()),
                operation: Some(operation.into()),
                ..ManagedFieldsEntry::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_child_controlled_by_this_model_deployment_is_ours() {
        let owned = ownership(&controlled_by(UID), UID, MANAGER);
        assert_eq!(owned, Ownership::Ours);
        assert!(owned.may_apply());
        assert_eq!(owned.refusal(), None);
    }

    #[test]
    fn a_child_of_a_deleted_namesake_is_not_ours() {
        let other = ownership(&controlled_by("another-uid"), UID, MANAGER);
        assert!(!other.may_apply());
        assert_eq!(
            other.refusal().as_deref(),
            Some("is controlled by ModelDeployment chat")
        );
    }

    #[test]
    fn an_object_someone_else_made_is_not_ours() {
        for meta in [
            ObjectMeta::default(),
            managed_by("kubectl-client-side-apply", "Update"),
            managed_by("helm", "Apply"),
        ] {
            let foreign = ownership(&meta, UID, MANAGER);
            assert_eq!(foreign, Ownership::Foreign, "{meta:?}");
            assert!(!foreign.may_apply());
        }
    }

    #[test]
    fn an_orphaned_child_the_operator_applied_is_taken_back() {
        let orphan = ownership(&managed_by(MANAGER, "Apply"), UID, MANAGER);
        assert_eq!(orphan, Ownership::Orphaned);
        assert!(orphan.may_apply());
    }

    #[test]
    fn an_object_the_operator_only_updated_is_not_taken() {
        // The operator applies its children; an Update under its name is not its apply.
        let updated = ownership(&managed_by(MANAGER, "Update"), UID, MANAGER);
        assert_eq!(updated, Ownership::Foreign);
    }
}
