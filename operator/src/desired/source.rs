//! Where the fetch init container reads the weights from.
//!
//! `hf://`, `s3://` and `https://` sources are downloaded over the network. The two local
//! schemes name storage the pod has to mount first, read-only, so that nothing the fetch does
//! can change the weights other replicas (or other fleets) read:
//!
//! - `pvc://claim/path`: the PersistentVolumeClaim `claim` of the ModelDeployment's namespace,
//!   mounted at `<PVC_ROOT>/<claim>`, where the fetcher looks for `pvc://` sources
//!   (`--pvc-root`).
//! - `file:///path`: a path on the node (a hostPath volume), mounted under [`NODE_ROOT`] at
//!   the same path, and handed to the fetcher as that path in the container. Mounting it
//!   below a root of its own keeps a node path such as `/models` or `/tmp` from landing on
//!   the pod's own volumes.

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

/// Where claims of `pvc://` sources are mounted in the fetch container (`--pvc-root`).
pub const PVC_ROOT: &str = "/mnt/pvc";
/// Where node paths of `file://` sources are mounted in the fetch container.
pub const NODE_ROOT: &str = "/mnt/node";
/// The volume holding a `pvc://` or `file://` source.
const SOURCE_VOLUME: &str = "model-source";

/// What the fetch container needs for one source.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchSource {
    /// The `--source` the fetcher is given (the spec's, or its path inside the container).
    pub uri: String,
    /// Flags the fetcher needs for this source.
    pub args: Vec<String>,
    /// The volume that holds the source, for local schemes.
    pub volume: Option<Volume>,
    /// Where the fetch container mounts it (read-only).
    pub mount: Option<VolumeMount>,
}

/// The fetch container's view of `source` (a `spec.model.source` the schema accepted).
pub fn fetch_source(source: &str) -> FetchSource {
    if let Some(rest) = source.strip_prefix("pvc://") {
        let (claim, _) = rest.split_once('/').unwrap_or((rest, ""));
        return FetchSource {
            uri: source.to_string(),
            args: vec!["--pvc-root".into(), PVC_ROOT.into()],
            volume: Some(Volume {
                name: SOURCE_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.to_string(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            }),
            mount: Some(read_only_mount(format!("{PVC_ROOT}/{claim}"))),
        };
    }
    if let Some(path) = source.strip_prefix("file://") {
        let path = path.trim_end_matches('/');
        let in_container = format!("{NODE_ROOT}{path}");
        return FetchSource {
            uri: format!("file://{in_container}"),
            args: Vec::new(),
            volume: Some(Volume {
                name: SOURCE_VOLUME.into(),
                host_path: Some(HostPathVolumeSource {
                    path: path.to_string(),
                    // A directory of files or one file (a GGUF); the fetcher says which is
                    // missing if neither is there.
                    type_: None,
                }),
                ..Volume::default()
            }),
            mount: Some(read_only_mount(in_container)),
        };
    }
    FetchSource {
        uri: source.to_string(),
        args: Vec::new(),
        volume: None,
        mount: None,
    }
}

fn read_only_mount(path: String) -> VolumeMount {
    VolumeMount {
        name: SOURCE_VOLUME.into(),
        mount_path: path,
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_mounted_read_only_where_the_fetcher_looks_for_it() {
        let source = fetch_source("pvc://weights/llama/8b");
        assert_eq!(source.uri, "pvc://weights/llama/8b");
        assert_eq!(source.args, vec!["--pvc-root", "/mnt/pvc"]);
        let volume = source.volume.expect("volume");
        let claim = volume.persistent_volume_claim.expect("claim");
        assert_eq!(claim.claim_name, "weights");
        assert_eq!(claim.read_only, Some(true));
        let mount = source.mount.expect("mount");
        assert_eq!(mount.name, volume.name);
        assert_eq!(mount.mount_path, "/mnt/pvc/weights");
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn a_whole_claim_is_a_source_too() {
        let source = fetch_source("pvc://weights");
        let claim = source.volume.and_then(|v| v.persistent_volume_claim);
        assert_eq!(claim.map(|c| c.claim_name).as_deref(), Some("weights"));
        assert_eq!(
            source.mount.map(|m| m.mount_path).as_deref(),
            Some("/mnt/pvc/weights")
        );
    }

    #[test]
    fn a_node_path_is_a_read_only_host_path_under_its_own_root() {
        let source = fetch_source("file:///var/lib/models/smollm2/");
        assert_eq!(source.uri, "file:///mnt/node/var/lib/models/smollm2");
        assert!(source.args.is_empty());
        let volume = source.volume.expect("volume");
        let host = volume.host_path.expect("hostPath");
        assert_eq!(host.path, "/var/lib/models/smollm2");
        let mount = source.mount.expect("mount");
        assert_eq!(mount.mount_path, "/mnt/node/var/lib/models/smollm2");
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn remote_sources_need_no_volume() {
        for uri in [
            "hf://org/name",
            "s3://bucket/prefix",
            "https://models.example/llama",
        ] {
            let source = fetch_source(uri);
            assert_eq!(source.uri, uri);
            assert!(source.volume.is_none() && source.mount.is_none(), "{uri}");
        }
    }
}
