//! Where the provisioned control-plane binaries live.
//!
//! `make tools` (scripts/tools.sh) builds or fetches every tool at a pinned version into a
//! cache keyed by version and links the pinned ones into one `bin/` directory. The harness
//! only looks there, so a test never picks up some other version from `PATH`.

use std::path::{Path, PathBuf};

use crate::Error;

/// Directory holding the provisioned tools: `$MODELFLEET_TOOLS_BIN`, else
/// `$MODELFLEET_CACHE/bin`, else `~/.cache/modelfleet/bin`.
pub fn tools_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODELFLEET_TOOLS_BIN") {
        return PathBuf::from(dir);
    }
    if let Some(cache) = std::env::var_os("MODELFLEET_CACHE") {
        return PathBuf::from(cache).join("bin");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/modelfleet/bin")
}

/// The absolute path of a provisioned tool, or an error that says how to provision it.
pub fn tool(name: &str) -> Result<PathBuf, Error> {
    locate(&tools_bin_dir(), name)
}

fn locate(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    match std::fs::canonicalize(&path) {
        Ok(resolved) if resolved.is_file() => Ok(resolved),
        _ => Err(Error::ToolMissing {
            name: name.to_string(),
            looked_in: dir.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_itself_and_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = locate(dir.path(), "kube-apiserver").expect_err("nothing is provisioned there");
        let message = err.to_string();
        assert!(message.contains("kube-apiserver"), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("make tools"), "{message}");
    }

    #[test]
    fn a_linked_tool_resolves_to_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("etcd-v1");
        std::fs::write(&target, b"#!/bin/sh\n").expect("write");
        std::os::unix::fs::symlink(&target, dir.path().join("etcd")).expect("symlink");
        let found = locate(dir.path(), "etcd").expect("linked tool is found");
        assert_eq!(found, std::fs::canonicalize(&target).expect("canonical"));
    }
}
