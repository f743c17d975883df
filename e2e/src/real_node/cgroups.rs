//! The node's cgroup root: `/<name>` in every cgroup hierarchy, under which the kubelet makes
//! `kubepods` and every pod's and container's cgroup. One per node, so two kubelets on one
//! machine never share (and fight over) `kubepods`; and every process of every pod is in it,
//! so nothing a pod started can outlive the node unnoticed.

use std::path::{Path, PathBuf};

use crate::Error;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// `/sys/fs/cgroup/<hierarchy>` for cgroups v1 (one per mounted controller set), or
/// `/sys/fs/cgroup` itself for the unified hierarchy (v2).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_FS);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Creates `/<name>` in every hierarchy (the kubelet refuses a cgroup root that is missing
/// in one). A new cpuset cgroup has no CPUs or memory nodes until given its parent's.
pub fn create(name: &str) -> Result<(), Error> {
    for hierarchy in hierarchies() {
        let dir = hierarchy.join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(&format!("creating cgroup {}", dir.display()), e))?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = hierarchy.join(file);
            if parent.exists() {
                let value = std::fs::read_to_string(&parent)
                    .map_err(|e| Error::io(&format!("reading {}", parent.display()), e))?;
                std::fs::write(dir.join(file), value.trim())
                    .map_err(|e| Error::io(&format!("writing {file} of {}", dir.display()), e))?;
            }
        }
    }
    Ok(())
}

/// Every process in `/<name>` or below, in any hierarchy.
pub fn processes(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = hierarchies()
        .iter()
        .flat_map(|h| directories_below(&h.join(name)))
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Removes `/<name>` and everything below it from every hierarchy (deepest first); what
/// still holds a process stays, and is returned.
pub fn remove(name: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    for hierarchy in hierarchies() {
        let mut dirs = directories_below(&hierarchy.join(name));
        dirs.reverse();
        for dir in dirs {
            if std::fs::remove_dir(&dir).is_err() && dir.exists() {
                left.push(dir);
            }
        }
    }
    left
}

/// Whether `/<name>` exists in some hierarchy.
pub fn exists(name: &str) -> bool {
    hierarchies().iter().any(|h| h.join(name).exists())
}

/// Cgroup roots named `<prefix>…` in any hierarchy.
pub fn named_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = hierarchies()
        .iter()
        .filter_map(|h| std::fs::read_dir(h).ok())
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `dir` and every directory below it, parents before children.
fn directories_below(dir: &Path) -> Vec<PathBuf> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let mut all = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = std::fs::read_dir(&all[i]) {
            all.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        i += 1;
    }
    all
}
