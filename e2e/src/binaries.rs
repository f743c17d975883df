//! The workspace's own binaries that the harness runs as pods or beside the control plane
//! (`modelfleet-engine`, `modelfleet-operator`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::Error;

/// Built once per process; concurrent tests wait for the first build.
static BUILD: Mutex<()> = Mutex::new(());

/// `target/<profile>/<name>` of package `package`, built first when it is missing or older
/// than the package's sources. `cargo test --workspace` (what `make test` runs) builds every
/// binary before the tests start; `cargo test -p modelfleet-e2e` does not, hence the build.
pub fn workspace_binary(name: &str, package: &str) -> Result<PathBuf, Error> {
    let profile_dir = profile_dir()?;
    let binary = profile_dir.join(name);
    let _guard = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if is_newer_than_sources(&binary, package) {
        return Ok(binary);
    }
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| Error::Harness("the target directory has no parent".into()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--locked", "-p", package, "--bin", name]);
    if profile == "release" {
        command.arg("--release");
    }
    let status = command
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .map_err(|e| Error::io(&format!("running cargo build for {name}"), e))?;
    if !status.success() || !binary.is_file() {
        return Err(Error::Harness(format!(
            "building {name} ({package}) failed; see the cargo output above"
        )));
    }
    Ok(binary)
}

/// The repository root (this crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `target/<profile>` of the running executable: tests run from `target/<profile>/deps`,
/// binaries from `target/<profile>`.
pub(crate) fn profile_dir() -> Result<PathBuf, Error> {
    let exe =
        std::env::current_exe().map_err(|e| Error::io("finding the running executable", e))?;
    let dir = exe
        .parent()
        .ok_or_else(|| Error::Harness("the executable has no directory".into()))?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    Ok(dir.to_path_buf())
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Whether `binary` was built after the last change to what it is built from: the package's
/// sources, build script and protos, and the workspace's manifest and lock file (as Cargo's
/// own freshness check goes for a path dependency). Docs and tests do not count.
fn is_newer_than_sources(binary: &Path, package: &str) -> bool {
    let built = modified(binary);
    let root = repo_root();
    let mut inputs = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    for dir in crate_dirs(&root.join(package.trim_start_matches("modelfleet-"))) {
        inputs.extend(["src", "build.rs", "Cargo.toml"].map(|p| dir.join(p)));
        // The generated gRPC types' .proto files.
        inputs.push(dir.join("modelfleet"));
    }
    inputs.iter().all(|path| newest(path) < built)
}

/// `dir` and the directories of the workspace crates it depends on (`path = "../…"` in its
/// Cargo.toml), transitively: a binary is stale when any of them changed.
fn crate_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = found.get(next).cloned() {
        next += 1;
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        for dependency in path_dependencies(&manifest) {
            let dependency = dir.join(dependency);
            if !found.iter().any(|d| d == &dependency) {
                found.push(dependency);
            }
        }
    }
    found
}

/// The `path = "…"` values of a manifest's dependencies.
fn path_dependencies(manifest: &str) -> Vec<&str> {
    manifest
        .split("path = \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|path| path.starts_with(".."))
        .collect()
}

/// The newest modification time of `path` and everything under it.
fn newest(path: &Path) -> SystemTime {
    let own = modified(path);
    if !path.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| newest(&entry.path()))
        .fold(own, std::cmp::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_depends_on_the_workspace_crates_its_package_names() {
        let root = repo_root();
        let dirs = crate_dirs(&root.join("engine"));
        for name in ["engine", "contract", "proto", "fetch", "loadgen"] {
            assert!(
                dirs.iter()
                    .any(|d| d.canonicalize().ok() == root.join(name).canonicalize().ok()),
                "{name} missing from {dirs:?}"
            );
        }
        let operator = crate_dirs(&root.join("operator"));
        assert!(
            !operator
                .iter()
                .any(|d| d.canonicalize().ok() == root.join("engine").canonicalize().ok()),
            "{operator:?}"
        );
    }
}
