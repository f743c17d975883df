//! The container images a real node runs, as `make images` (scripts/images.sh) writes them:
//! docker-archives under `target/images/`, imported into the node's containerd so pods pull
//! nothing.
//!
//! A test may run without `make images` before it (`cargo test -p modelfleet-e2e`): an
//! archive that is missing or older than the binary it packs is built here first, from the
//! binary [`workspace_binary`] keeps fresh.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::Error;
use crate::binaries::{repo_root, workspace_binary};

/// The version every image is tagged with: the workspace's, the chart's appVersion.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One image of scripts/images.sh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// `modelfleet-engine` (serve and fetch): what the operator puts in engine pods.
    Engine,
    /// `modelfleet-operator`: what the Helm chart deploys.
    Operator,
    /// The node's pod sandbox (containerd's `sandbox_image`).
    Pause,
    /// `modelfleet-test-server`, a pod for the harness's own tests.
    TestServer,
}

/// Archives are built one at a time per process (tests in parallel want the same ones).
static BUILD: Mutex<()> = Mutex::new(());

impl Image {
    /// The name scripts/images.sh knows it by (and its archive's file stem).
    pub fn name(self) -> &'static str {
        match self {
            Image::Engine => "engine",
            Image::Operator => "operator",
            Image::Pause => "pause",
            Image::TestServer => "test-server",
        }
    }

    /// The tag the image is built with, which the chart and the operator default to.
    pub fn tag(self) -> String {
        match self {
            Image::Engine => modelfleet_operator::api::DEFAULT_ENGINE_IMAGE.to_string(),
            Image::Operator => format!("ghcr.io/modelfleet/operator:{VERSION}"),
            Image::Pause => format!("localhost/modelfleet/pause:{VERSION}"),
            Image::TestServer => format!("localhost/modelfleet/test-server:{VERSION}"),
        }
    }

    /// The workspace binary the image packs (package, binary), if any.
    fn binary(self) -> Option<(&'static str, &'static str)> {
        match self {
            Image::Engine => Some(("modelfleet-engine", "modelfleet-engine")),
            Image::Operator => Some(("modelfleet-operator", "modelfleet-operator")),
            Image::TestServer => Some(("modelfleet-e2e", "modelfleet-test-server")),
            Image::Pause => None,
        }
    }

    /// The image's docker-archive, built first when it is missing or older than its binary.
    pub fn archive(self) -> Result<PathBuf, Error> {
        let binary = self
            .binary()
            .map(|(package, name)| workspace_binary(name, package))
            .transpose()?;
        let archive = images_dir()?.join(format!("{}.tar", self.name()));
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match &binary {
            Some(binary) => modified(&archive) > modified(binary),
            None => archive.is_file(),
        };
        if !fresh {
            build(self, &archive)?;
        }
        Ok(archive)
    }
}

/// Where scripts/images.sh puts the archives: `<target dir>/images`.
pub fn images_dir() -> Result<PathBuf, Error> {
    let profile_dir = crate::binaries::profile_dir()?;
    let target = profile_dir
        .parent()
        .ok_or_else(|| Error::Harness("the target directory has no parent".into()))?;
    Ok(target.join("images"))
}

fn build(image: Image, archive: &Path) -> Result<(), Error> {
    let script = repo_root().join("scripts/images.sh");
    tracing::info!(
        image = image.name(),
        "building the image (scripts/images.sh)"
    );
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(image.name())
        // The binary is fresh already (workspace_binary); no second cargo build.
        .env("IMAGES_NO_BUILD", "1")
        .env(
            "IMAGES_DIR",
            archive.parent().unwrap_or_else(|| Path::new(".")),
        )
        .output()
        .map_err(|e| Error::io(&format!("running {}", script.display()), e))?;
    if !output.status.success() || !archive.is_file() {
        return Err(Error::Harness(format!(
            "building the {} image failed (scripts/images.sh {}):\n{}",
            image.name(),
            image.name(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_the_ones_the_chart_and_the_operator_default_to() {
        assert_eq!(
            Image::Engine.tag(),
            format!("ghcr.io/modelfleet/engine:{VERSION}")
        );
        let values = std::fs::read_to_string(repo_root().join("charts/modelfleet/values.yaml"))
            .expect("the chart's values");
        let values: serde_yaml::Value = serde_yaml::from_str(&values).expect("YAML");
        let chart = std::fs::read_to_string(repo_root().join("charts/modelfleet/Chart.yaml"))
            .expect("Chart.yaml");
        let chart: serde_yaml::Value = serde_yaml::from_str(&chart).expect("YAML");
        let app_version = chart["appVersion"].as_str().expect("appVersion");
        assert_eq!(
            Image::Operator.tag(),
            format!(
                "{}:{app_version}",
                values["image"]["repository"].as_str().expect("repository")
            )
        );
        assert_eq!(
            Image::Engine.tag(),
            format!(
                "{}:{app_version}",
                values["engine"]["image"]["repository"]
                    .as_str()
                    .expect("engine repository")
            )
        );
    }
}
