//! The node's pods and containers as containerd's CRI plugin sees them, through `crictl`
//! (provisioned by `make tools`): what one would use on a cluster's node.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// `crictl` with the node's configuration (its containerd socket).
#[derive(Debug, Clone)]
pub struct Crictl {
    program: PathBuf,
    config: PathBuf,
}

/// A pod sandbox.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub state: String,
    pub metadata: SandboxMetadata,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SandboxMetadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// A container (running or exited).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    #[serde(rename = "podSandboxId")]
    pub pod_sandbox_id: String,
    pub state: String,
    pub metadata: ContainerMetadata,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ContainerMetadata {
    pub name: String,
    #[serde(default)]
    pub attempt: u32,
}

impl Container {
    /// The pod's name, from the label the kubelet sets.
    pub fn pod_name(&self) -> Option<&str> {
        self.labels
            .get("io.kubernetes.pod.name")
            .map(String::as_str)
    }
}

impl Crictl {
    pub fn new(program: &Path, config: &Path) -> Self {
        Self {
            program: program.to_path_buf(),
            config: config.to_path_buf(),
        }
    }

    /// Runs `crictl ARGS…`; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        let output = std::process::Command::new(&self.program)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .map_err(|e| Error::io(&format!("running crictl {}", args.join(" ")), e))?;
        if !output.status.success() {
            return Err(Error::Harness(format!(
                "crictl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Every pod sandbox, ready or not.
    pub fn sandboxes(&self) -> Result<Vec<Sandbox>, Error> {
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            items: Vec<Sandbox>,
        }
        let list: List = parse(&self.run(&["pods", "-o", "json"])?)?;
        Ok(list.items)
    }

    /// Every container, exited ones too.
    pub fn containers(&self) -> Result<Vec<Container>, Error> {
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            containers: Vec<Container>,
        }
        let list: List = parse(&self.run(&["ps", "-a", "-o", "json"])?)?;
        Ok(list.containers)
    }

    /// The host pid of a running container's first process.
    pub fn pid(&self, container_id: &str) -> Result<u32, Error> {
        let info: serde_json::Value = parse(&self.run(&["inspect", container_id])?)?;
        info["info"]["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::Harness(format!("container {container_id} has no pid")))
    }

    /// Stops and removes every pod sandbox (and its containers): the CNI plugins release
    /// each pod's address and veth, containerd unmounts its root filesystems.
    pub fn remove_all_pods(&self) -> Result<(), Error> {
        self.run(&["rmp", "--all", "--force"]).map(drop)
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::Harness(format!("reading crictl's JSON: {e}: {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crictl_json_reads_into_sandboxes_and_containers() {
        #[derive(Deserialize)]
        struct Pods {
            items: Vec<Sandbox>,
        }
        let pods: Pods = parse(
            r#"{"items":[{"id":"66dc","metadata":{"name":"ts","uid":"u1","namespace":"default",
            "attempt":0},"state":"SANDBOX_READY","createdAt":"1","labels":{}}]}"#,
        )
        .expect("pods");
        assert_eq!(pods.items[0].metadata.name, "ts");
        assert_eq!(pods.items[0].state, "SANDBOX_READY");
        #[derive(Deserialize)]
        struct Ps {
            containers: Vec<Container>,
        }
        let ps: Ps = parse(
            r#"{"containers":[{"id":"c33f","podSandboxId":"66dc","metadata":{"name":"engine",
            "attempt":1},"state":"CONTAINER_RUNNING","labels":{"io.kubernetes.pod.name":"p-1"}}]}"#,
        )
        .expect("containers");
        assert_eq!(ps.containers[0].metadata.attempt, 1);
        assert_eq!(ps.containers[0].pod_name(), Some("p-1"));
    }
}
