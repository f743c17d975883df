//! A pod's volumes as directories on the host: emptyDir under the pod's directory (in
//! `/dev/shm` for `medium: Memory`, so it really is memory), hostPath as the host path itself,
//! configMap/secret/downwardAPI/projected volumes written out as files. Containers see them
//! at their `mountPath`s through bind mounts (see `launch`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume, VolumeProjection,
};
use kube::Client;
use kube::api::{Api, PostParams};

use super::NodeAgentError;
use super::env::{PodFacts, Sources, field_value};

/// Where a pod's volumes live on the host.
pub struct PodDirs {
    /// The pod's directory on disk (logs, emptyDirs, files of configMaps…).
    pub disk: PathBuf,
    /// The pod's directory in `/dev/shm`, for memory-backed emptyDirs.
    pub memory: PathBuf,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> NodeAgentError {
    move |source| NodeAgentError::Io { context, source }
}

/// A file name inside a volume must stay inside it.
fn relative(path: &str) -> Result<&Path, NodeAgentError> {
    let p = Path::new(path);
    if p.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(p)
    } else {
        Err(NodeAgentError::ContainerConfig(format!(
            "volume file path {path} must be relative and stay inside the volume"
        )))
    }
}

fn write_file(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: Option<i32>,
) -> Result<(), NodeAgentError> {
    let path = dir.join(relative(name)?);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    std::fs::write(&path, bytes).map_err(io(format!("writing {}", path.display())))?;
    let mode = mode.unwrap_or(0o644) as u32 & 0o7777;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", path.display())))
}

/// Writes the keys of a ConfigMap or Secret: every key, or only `items` under their paths.
fn write_keys(
    dir: &Path,
    table: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    what: &str,
    optional: bool,
) -> Result<(), NodeAgentError> {
    let Some(table) = table else {
        return if optional {
            Ok(())
        } else {
            Err(NodeAgentError::ContainerConfig(format!("{what} not found")))
        };
    };
    match items {
        Some(items) => {
            for item in items {
                let bytes = table.get(&item.key).ok_or_else(|| {
                    NodeAgentError::ContainerConfig(format!("{what} has no key {}", item.key))
                })?;
                write_file(dir, &item.path, bytes, item.mode.or(default_mode))?;
            }
        }
        None => {
            for (key, bytes) in table {
                write_file(dir, key, bytes, default_mode)?;
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    items: &[DownwardAPIVolumeFile],
    facts: &PodFacts,
    default_mode: Option<i32>,
) -> Result<(), NodeAgentError> {
    for item in items {
        let value = match &item.field_ref {
            Some(field) => field_value(facts, &field.field_path).unwrap_or_default(),
            None => String::new(),
        };
        write_file(
            dir,
            &item.path,
            value.as_bytes(),
            item.mode.or(default_mode),
        )?;
    }
    Ok(())
}

/// A token for the pod's service account, bound to the pod, as the kubelet requests one.
async fn service_account_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String, NodeAgentError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3600)),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await?;
    Ok(issued.status.map(|s| s.token).unwrap_or_default())
}

async fn write_projection(
    client: &Client,
    pod: &Pod,
    dir: &Path,
    source: &VolumeProjection,
    sources: &Sources,
    facts: &PodFacts,
    default_mode: Option<i32>,
) -> Result<(), NodeAgentError> {
    if let Some(cm) = &source.config_map {
        let what = format!("configmap {}", cm.name);
        let table = sources.config_maps.get(&cm.name);
        let optional = cm.optional == Some(true);
        write_keys(dir, table, cm.items.as_ref(), default_mode, &what, optional)?;
    }
    if let Some(secret) = &source.secret {
        let what = format!("secret {}", secret.name);
        let table = sources.secrets.get(&secret.name);
        let optional = secret.optional == Some(true);
        write_keys(
            dir,
            table,
            secret.items.as_ref(),
            default_mode,
            &what,
            optional,
        )?;
    }
    if let Some(downward) = &source.downward_api {
        let items = downward.items.as_deref().unwrap_or_default();
        write_downward(dir, items, facts, default_mode)?;
    }
    if let Some(token) = &source.service_account_token {
        let value = service_account_token(
            client,
            pod,
            token.audience.clone(),
            token.expiration_seconds,
        )
        .await?;
        write_file(dir, &token.path, value.as_bytes(), default_mode)?;
    }
    Ok(())
}

/// Makes every volume of `pod` and returns volume name → its directory on the host.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    dirs: &PodDirs,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<BTreeMap<String, PathBuf>, NodeAgentError> {
    let volumes: &[Volume] = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let mut paths = BTreeMap::new();
    for volume in volumes {
        let own = dirs.disk.join("volumes").join(&volume.name);
        let path = if let Some(empty) = &volume.empty_dir {
            if empty.medium.as_deref() == Some("Memory") {
                dirs.memory.join(&volume.name)
            } else {
                own
            }
        } else if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            match host.type_.as_deref().unwrap_or("") {
                "" | "DirectoryOrCreate" if !path.exists() => std::fs::create_dir_all(&path)
                    .map_err(io(format!("creating hostPath {}", path.display())))?,
                "FileOrCreate" if !path.exists() => {
                    std::fs::write(&path, b"")
                        .map_err(io(format!("creating hostPath {}", path.display())))?;
                }
                _ => {}
            }
            paths.insert(volume.name.clone(), path);
            continue;
        } else {
            own
        };
        std::fs::create_dir_all(&path).map_err(io(format!("creating {}", path.display())))?;
        if let Some(cm) = &volume.config_map {
            let what = format!("configmap {}", cm.name);
            let table = sources.config_maps.get(&cm.name);
            let optional = cm.optional == Some(true);
            write_keys(
                &path,
                table,
                cm.items.as_ref(),
                cm.default_mode,
                &what,
                optional,
            )?;
        }
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let what = format!("secret {name}");
            let table = sources.secrets.get(&name);
            let optional = secret.optional == Some(true);
            let mode = secret.default_mode;
            write_keys(&path, table, secret.items.as_ref(), mode, &what, optional)?;
        }
        if let Some(downward) = &volume.downward_api {
            let items = downward.items.as_deref().unwrap_or_default();
            write_downward(&path, items, facts, downward.default_mode)?;
        }
        if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten() {
                let mode = projected.default_mode;
                write_projection(client, pod, &path, source, sources, facts, mode).await?;
            }
        }
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}
