//! A container's environment as the kubelet builds it: `envFrom`, then `env` in order with
//! `$(VAR)` references expanded, values from the downward API and from ConfigMaps/Secrets.
//!
//! Reading ConfigMaps and Secrets is the only side effect and happens once, up front
//! ([`fetch_sources`]); resolving is pure ([`container_env`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Client;
use kube::api::Api;

use super::NodeAgentError;

/// The facts about a pod the downward API exposes.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub node_name: String,
    pub service_account: String,
    pub pod_ip: String,
    pub host_ip: String,
    /// The node's capacity, for `resourceFieldRef` of a container without a limit.
    pub node_cpu: String,
    pub node_memory: String,
}

/// ConfigMaps and Secrets of the pod's namespace, by name; absent if they do not exist.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// Names of the ConfigMaps and Secrets a pod refers to, in env, envFrom and volumes.
pub fn referenced_sources(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return (config_maps, secrets);
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for container in containers {
        for from in container.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for var in container.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if let Some(cm) = &volume.config_map {
            config_maps.insert(cm.name.clone());
        }
        if let Some(s) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (config_maps, secrets)
}

/// Reads the ConfigMaps and Secrets `pod` refers to; missing ones are left out (an optional
/// reference may name one that does not exist).
pub async fn fetch_sources(client: &Client, pod: &Pod) -> Result<Sources, NodeAgentError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (config_map_names, secret_names) = referenced_sources(pod);
    let mut sources = Sources::default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in config_map_names {
        if let Some(cm) = config_maps.get_opt(&name).await? {
            let mut data: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            sources.config_maps.insert(name, data);
        }
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secret_names {
        if let Some(secret) = secrets.get_opt(&name).await? {
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            sources.secrets.insert(name, data);
        }
    }
    Ok(sources)
}

/// The value of a downward-API field path such as `metadata.labels['app']`.
pub fn field_value(facts: &PodFacts, path: &str) -> Option<String> {
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_string)
    };
    if let Some(key) = map_key("metadata.labels['") {
        return Some(facts.labels.get(&key).cloned().unwrap_or_default());
    }
    if let Some(key) = map_key("metadata.annotations['") {
        return Some(facts.annotations.get(&key).cloned().unwrap_or_default());
    }
    let value = match path {
        "metadata.name" => &facts.name,
        "metadata.namespace" => &facts.namespace,
        "metadata.uid" => &facts.uid,
        "spec.nodeName" => &facts.node_name,
        "spec.serviceAccountName" => &facts.service_account,
        "status.podIP" | "status.podIPs" => &facts.pod_ip,
        "status.hostIP" | "status.hostIPs" => &facts.host_ip,
        _ => return None,
    };
    Some(value.clone())
}

/// A resource quantity in base units (cores, bytes); `None` if it does not parse.
pub fn quantity_value(quantity: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("m", 0.001),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    quantity.parse().ok()
}

/// `resourceFieldRef` as the kubelet reports it: the limit (or the node's capacity when
/// there is none) divided by the divisor, rounded up.
fn resource_value(
    container: &Container,
    facts: &PodFacts,
    resource: &str,
    divisor: Option<&str>,
) -> String {
    let resources = container.resources.as_ref();
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let table = match kind {
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => resources.and_then(|r| r.limits.as_ref()),
    };
    let fallback = match name {
        "cpu" => facts.node_cpu.as_str(),
        "memory" => facts.node_memory.as_str(),
        _ => "0",
    };
    let raw = table
        .and_then(|t| t.get(name))
        .map_or(fallback, |q| q.0.as_str());
    let divisor = divisor.and_then(quantity_value).unwrap_or(1.0);
    match quantity_value(raw) {
        Some(value) if divisor > 0.0 => format!("{}", (value / divisor).ceil() as i64),
        _ => raw.to_string(),
    }
}

fn missing(what: String) -> NodeAgentError {
    NodeAgentError::ContainerConfig(what)
}

/// The environment of `container`, in the order the kubelet builds it.
pub fn container_env(
    container: &Container,
    facts: &PodFacts,
    sources: &Sources,
) -> Result<Vec<(String, String)>, NodeAgentError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (table, name, optional) = if let Some(r) = &from.config_map_ref {
            (sources.config_maps.get(&r.name), &r.name, r.optional)
        } else if let Some(r) = &from.secret_ref {
            (sources.secrets.get(&r.name), &r.name, r.optional)
        } else {
            continue;
        };
        match table {
            Some(table) => {
                for (key, value) in table {
                    let value = String::from_utf8_lossy(value).into_owned();
                    set(&mut env, format!("{prefix}{key}"), value);
                }
            }
            None if optional == Some(true) => {}
            None => return Err(missing(format!("envFrom source {name} not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            expand(value, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(facts, &field.field_path)
                    .ok_or_else(|| missing(format!("unsupported fieldRef {}", field.field_path)))?
            } else if let Some(resource) = &from.resource_field_ref {
                resource_value(
                    container,
                    facts,
                    &resource.resource,
                    resource.divisor.as_ref().map(|d| d.0.as_str()),
                )
            } else if let Some(r) = &from.config_map_key_ref {
                let found = sources.config_maps.get(&r.name).and_then(|t| t.get(&r.key));
                match found {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(missing(format!(
                            "configmap {} key {} not found",
                            r.name, r.key
                        )));
                    }
                }
            } else if let Some(r) = &from.secret_key_ref {
                let found = sources.secrets.get(&r.name).and_then(|t| t.get(&r.key));
                match found {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(missing(format!(
                            "secret {} key {} not found",
                            r.name, r.key
                        )));
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// Expands `$(NAME)` from `env`; `$$` is a literal `$`; unknown references stay as written,
/// as the kubelet does.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, ResourceFieldSelector, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn facts() -> PodFacts {
        PodFacts {
            name: "web-1".into(),
            namespace: "apps".into(),
            uid: "u-1".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            node_name: "gpu-0".into(),
            pod_ip: "10.200.0.2".into(),
            node_cpu: "64".into(),
            node_memory: "1Gi".into(),
            ..PodFacts::default()
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }

    fn plain(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..EnvVar::default()
        }
    }

    fn config_map_key(name: &str, cm: &str, key: &str, optional: bool) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm.into(),
                    key: key.into(),
                    optional: Some(optional),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }

    fn sources() -> Sources {
        let table: BTreeMap<String, Vec<u8>> = [
            ("MODE".to_string(), b"fast".to_vec()),
            ("LEVEL".to_string(), b"3".to_vec()),
        ]
        .into();
        Sources {
            config_maps: [("settings".to_string(), table)].into(),
            secrets: BTreeMap::new(),
        }
    }

    #[test]
    fn downward_api_fields_resolve() {
        let container = Container {
            env: Some(vec![
                field("POD", "metadata.name"),
                field("NS", "metadata.namespace"),
                field("APP", "metadata.labels['app']"),
                field("NODE", "spec.nodeName"),
                field("IP", "status.podIP"),
            ]),
            ..Container::default()
        };
        let env = container_env(&container, &facts(), &Sources::default()).expect("resolves");
        let values: Vec<&str> = env.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["web-1", "apps", "web", "gpu-0", "10.200.0.2"]);
    }

    #[test]
    fn an_unknown_field_path_is_a_config_error() {
        let container = Container {
            env: Some(vec![field("X", "spec.nothing")]),
            ..Container::default()
        };
        assert!(container_env(&container, &facts(), &Sources::default()).is_err());
    }

    #[test]
    fn config_map_keys_and_env_from_with_prefix_and_later_values_win() {
        let container = Container {
            env_from: Some(vec![EnvFromSource {
                prefix: Some("CFG_".into()),
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![
                config_map_key("MODE", "settings", "MODE", false),
                config_map_key("GONE", "settings", "absent", true),
                plain("CFG_LEVEL", "override"),
            ]),
            ..Container::default()
        };
        let env = container_env(&container, &facts(), &sources()).expect("resolves");
        assert_eq!(
            env,
            vec![
                ("CFG_MODE".to_string(), "fast".to_string()),
                ("MODE".to_string(), "fast".to_string()),
                ("CFG_LEVEL".to_string(), "override".to_string()),
            ]
        );
    }

    #[test]
    fn a_missing_required_key_is_a_config_error() {
        let container = Container {
            env: Some(vec![config_map_key("X", "settings", "absent", false)]),
            ..Container::default()
        };
        assert!(container_env(&container, &facts(), &sources()).is_err());
        let container = Container {
            env: Some(vec![config_map_key("X", "nowhere", "MODE", false)]),
            ..Container::default()
        };
        assert!(container_env(&container, &facts(), &sources()).is_err());
    }

    #[test]
    fn references_expand_from_earlier_variables_only() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
        assert_eq!(expand("open $(A", &env), "open $(A");
    }

    #[test]
    fn resource_fields_use_the_limit_or_the_node_capacity() {
        let limits: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity("1500m".into())),
            ("memory".to_string(), Quantity("256Mi".into())),
        ]
        .into();
        let resource = |name: &str, r: &str, divisor: Option<&str>| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    resource: r.into(),
                    divisor: divisor.map(|d| Quantity(d.into())),
                    ..ResourceFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        let container = Container {
            resources: Some(ResourceRequirements {
                limits: Some(limits),
                ..ResourceRequirements::default()
            }),
            env: Some(vec![
                resource("CPU", "limits.cpu", None),
                resource("MEM", "limits.memory", Some("1Mi")),
            ]),
            ..Container::default()
        };
        let env = container_env(&container, &facts(), &Sources::default()).expect("resolves");
        assert_eq!(env[0].1, "2");
        assert_eq!(env[1].1, "256");
        let bare = Container {
            env: Some(vec![resource("CPU", "limits.cpu", None)]),
            ..Container::default()
        };
        let env = container_env(&bare, &facts(), &Sources::default()).expect("resolves");
        assert_eq!(env[0].1, "64");
    }
}
