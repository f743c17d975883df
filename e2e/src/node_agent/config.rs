//! What a node agent runs: its nodes, how images map to local binaries, its timings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::nodes::FakeNodeSpec;

/// How a node agent behaves.
#[derive(Debug, Clone)]
pub struct NodeAgentConfig {
    /// The nodes it registers and plays kubelet for.
    pub nodes: Vec<FakeNodeSpec>,
    /// Images it can run, as local programs.
    pub images: ImageMap,
    /// Mark pods Running and Ready with a made-up IP and start nothing (scale tests).
    pub simulate: bool,
    /// First delay before restarting a container that exited; doubles up to `max_backoff`.
    /// The kubelet uses 10s and 300s; tests want shorter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The API server, for pods that talk to it (an operator in a pod): the agent forwards
    /// `kubernetes.default.svc:443` from inside pods to it. `None`: pods cannot reach it.
    pub apiserver: Option<SocketAddr>,
}

impl NodeAgentConfig {
    pub fn new(nodes: Vec<FakeNodeSpec>, images: ImageMap) -> Self {
        Self {
            nodes,
            images,
            simulate: false,
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
            apiserver: None,
        }
    }
}

/// What an image runs when the pod does not say otherwise: Docker's ENTRYPOINT and CMD.
#[derive(Debug, Clone, Default)]
pub struct ImageEntry {
    /// The program and its leading arguments (replaced by a container's `command`).
    pub entrypoint: Vec<String>,
    /// Default arguments (replaced by a container's `args`).
    pub cmd: Vec<String>,
}

/// Image name (without tag or digest) → what it runs.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    entries: BTreeMap<String, ImageEntry>,
}

impl ImageMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `image` (any tag) to running `program` with no default arguments.
    pub fn with_binary(self, image: &str, program: impl Into<PathBuf>) -> Self {
        let program: PathBuf = program.into();
        self.with_entry(
            image,
            ImageEntry {
                entrypoint: vec![program.to_string_lossy().into_owned()],
                cmd: Vec::new(),
            },
        )
    }

    pub fn with_entry(mut self, image: &str, entry: ImageEntry) -> Self {
        self.entries.insert(image_name(image).to_string(), entry);
        self
    }

    pub fn get(&self, image: &str) -> Option<&ImageEntry> {
        self.entries.get(image_name(image))
    }

    /// The program an image runs, by the last path segment of the image name, for a
    /// container `command` naming it (`command: [modelfleet-engine]`).
    pub fn program_named(&self, name: &str) -> Option<&str> {
        self.entries
            .values()
            .filter_map(|e| e.entrypoint.first())
            .find(|p| std::path::Path::new(p).file_name().and_then(|f| f.to_str()) == Some(name))
            .map(String::as_str)
    }
}

/// `registry:5000/team/engine:v1@sha256:…` → `registry:5000/team/engine`.
pub fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].find(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_drop_tag_and_digest_but_keep_a_registry_port() {
        assert_eq!(image_name("engine"), "engine");
        assert_eq!(image_name("engine:v1"), "engine");
        assert_eq!(
            image_name("registry:5000/team/engine:v1"),
            "registry:5000/team/engine"
        );
        assert_eq!(
            image_name("registry:5000/team/engine@sha256:abc"),
            "registry:5000/team/engine"
        );
        assert_eq!(
            image_name("ghcr.io/x/engine:v1@sha256:abc"),
            "ghcr.io/x/engine"
        );
    }

    #[test]
    fn any_tag_of_a_mapped_image_finds_its_entry() {
        let images = ImageMap::new().with_binary("ghcr.io/modelfleet/engine", "/bin/engine");
        let entry = images
            .get("ghcr.io/modelfleet/engine:0.1.0")
            .expect("mapped");
        assert_eq!(entry.entrypoint, vec!["/bin/engine".to_string()]);
        assert!(images.get("ghcr.io/modelfleet/operator:0.1.0").is_none());
        assert_eq!(images.program_named("engine"), Some("/bin/engine"));
    }
}
