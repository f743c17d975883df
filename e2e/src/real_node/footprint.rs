//! What a real node leaves on the host while it runs, found and removed by name.
//!
//! Every node has a tag, `mfnode-<owner pid>-<n>` in hex, and everything it makes on the host
//! is named from it: its network namespace and cgroup root are the tag, its directory is
//! `<tmp>/modelfleet-node-<pid>-<n>`, the host end of its link `mfh<pid>x<n>`, its CNI network
//! the tag. So [`sweep`] can remove a node's remains without a record of them, and the next
//! node can sweep those of a test process that was killed before it could clean up
//! ([`sweep_stale`]); [`leftovers`] says what is still there.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{cgroups, link};

/// Prefix of every node's tag.
pub const TAG_PREFIX: &str = "mfnode-";
/// Where the kubelet links every container's log, whatever its root directory.
const CONTAINER_LOG_LINKS: &str = "/var/log/containers";
/// Where libcni caches each attachment's result, whatever containerd's configuration.
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// How long the kernel gets to tear down what a removed namespace or a killed process held.
const SETTLE: Duration = Duration::from_secs(10);

/// The names of one node's things on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    pub tag: String,
    pub dir: PathBuf,
    pub host_end: String,
}

impl Footprint {
    /// The footprint of node `n` of process `pid`.
    pub fn of(pid: u32, n: u32) -> Self {
        Self {
            tag: format!("{TAG_PREFIX}{pid:x}-{n:x}"),
            dir: std::env::temp_dir().join(format!("modelfleet-node-{pid:x}-{n:x}")),
            host_end: format!("mfh{pid:x}x{n:x}"),
        }
    }

    /// The footprint a tag names, if it is one.
    pub fn from_tag(tag: &str) -> Option<(u32, Self)> {
        let rest = tag.strip_prefix(TAG_PREFIX)?;
        let (pid, n) = rest.split_once('-')?;
        let pid = u32::from_str_radix(pid, 16).ok()?;
        let n = u32::from_str_radix(n, 16).ok()?;
        Some((pid, Self::of(pid, n)))
    }

    pub fn netns(&self) -> &str {
        &self.tag
    }

    pub fn cgroup_root(&self) -> &str {
        &self.tag
    }

    pub fn cni_network(&self) -> &str {
        &self.tag
    }
}

/// Removes whatever of `footprint` is on the host: kills the processes in the node's cgroup
/// root (every pod's) and in its network namespace (containerd, its shims, the kubelet,
/// kube-proxy), unmounts what is mounted under its directory, deletes the log links and CNI
/// results pointing into it, the namespace, the cgroups and the directory.
pub fn sweep(footprint: &Footprint) {
    kill_until_gone(|| cgroups::processes(footprint.cgroup_root()));
    kill_until_gone(|| processes_in_netns(footprint.netns()));
    unmount_below(&footprint.dir);
    for path in log_links_into(&footprint.dir)
        .into_iter()
        .chain(cni_results_of(footprint.cni_network()))
    {
        let _ = std::fs::remove_file(path);
    }
    link::remove_netns(footprint.netns(), &footprint.host_end);
    let deadline = Instant::now() + SETTLE;
    while !cgroups::remove(footprint.cgroup_root()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Err(err) = std::fs::remove_dir_all(&footprint.dir)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %footprint.dir.display(), error = %err, "removing the node's directory failed");
    }
}

/// What of `footprint` is still on the host, each named; empty when nothing is. Waits up to
/// a few seconds for the kernel to finish tearing down a namespace that was just removed.
pub fn leftovers(footprint: &Footprint) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let found = on_host(footprint);
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What of `footprint` is on the host now, each named.
pub fn on_host(footprint: &Footprint) -> Vec<String> {
    let mut found = Vec::new();
    let pids = cgroups::processes(footprint.cgroup_root());
    if !pids.is_empty() {
        found.push(format!("processes in its cgroups: {pids:?}"));
    }
    if cgroups::exists(footprint.cgroup_root()) {
        found.push(format!("cgroup /{}", footprint.cgroup_root()));
    }
    if link::named_namespaces()
        .iter()
        .any(|n| n == footprint.netns())
    {
        found.push(format!("network namespace {}", footprint.netns()));
    }
    let pids = processes_in_netns(footprint.netns());
    if !pids.is_empty() {
        found.push(format!("processes in its network namespace: {pids:?}"));
    }
    if Path::new("/sys/class/net")
        .join(&footprint.host_end)
        .exists()
    {
        found.push(format!("interface {}", footprint.host_end));
    }
    found.extend(
        mounts_below(&footprint.dir)
            .into_iter()
            .map(|m| format!("mount {}", m.display())),
    );
    found.extend(
        log_links_into(&footprint.dir)
            .into_iter()
            .chain(cni_results_of(footprint.cni_network()))
            .map(|p| format!("file {}", p.display())),
    );
    if footprint.dir.exists() {
        found.push(format!("directory {}", footprint.dir.display()));
    }
    found
}

/// Sweeps the footprints of nodes whose owning process is gone (a test killed by SIGKILL
/// cannot clean up after itself).
pub fn sweep_stale() {
    let mut tags = link::named_namespaces();
    tags.extend(cgroups::named_with_prefix(TAG_PREFIX));
    tags.sort();
    tags.dedup();
    for tag in tags {
        if let Some((pid, footprint)) = Footprint::from_tag(&tag)
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            tracing::warn!(%tag, "removing what a node of a process that is gone left behind");
            sweep(&footprint);
        }
    }
}

/// SIGKILLs what `list` names until it names nothing (or a deadline passes).
fn kill_until_gone(list: impl Fn() -> Vec<u32>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let pids = list();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Processes whose network namespace is the named one.
pub fn processes_in_netns(netns: &str) -> Vec<u32> {
    let Ok(meta) = std::fs::metadata(link::netns_path(netns)) else {
        return Vec::new();
    };
    let wanted = format!("net:[{}]", meta.ino());
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.as_os_str() == wanted.as_str())
        })
        .filter(|pid| *pid != std::process::id())
        .collect()
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_path(field)))
        .filter(|path| path.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes.
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = field
                .get(i + 1..i + 4)
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount at or below `dir`, deepest first (a bind of a directory onto itself
/// is mounted over as often as it was bound).
fn unmount_below(dir: &Path) {
    for _ in 0..8 {
        let mounts = mounts_below(dir);
        if mounts.is_empty() {
            return;
        }
        for mount in mounts {
            let Ok(path) = CString::new(mount.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: umount2(2) on a NUL-terminated path we own.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The kubelet's links in /var/log/containers to logs under `dir`.
fn log_links_into(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(CONTAINER_LOG_LINKS)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| std::fs::read_link(p).is_ok_and(|target| target.starts_with(dir)))
        .collect()
}

/// libcni's cached results for attachments to `network`.
fn cni_results_of(network: &str) -> Vec<PathBuf> {
    let prefix = format!("{network}-");
    std::fs::read_dir(CNI_RESULTS)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_footprint_is_named_from_its_tag_and_back() {
        let footprint = Footprint::of(0x1a2b, 3);
        assert_eq!(footprint.tag, "mfnode-1a2b-3");
        assert_eq!(footprint.host_end, "mfh1a2bx3");
        assert!(footprint.dir.ends_with("modelfleet-node-1a2b-3"));
        assert_eq!(
            Footprint::from_tag("mfnode-1a2b-3"),
            Some((0x1a2b, footprint))
        );
        assert_eq!(Footprint::from_tag("mfnode-zz-1"), None);
        assert_eq!(Footprint::from_tag("mfns-1a2b-3"), None);
        // The longest pid Linux hands out still leaves a valid interface name.
        assert!(Footprint::of(4_194_304, 0xff).host_end.len() < 15);
    }

    #[test]
    fn mount_paths_with_escapes_read_back() {
        assert_eq!(unescape_mount_path("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain/path"), "/plain/path");
        assert_eq!(unescape_mount_path("/x\\134y"), "/x\\y");
    }
}
