//! Starting a container's process: in the pod's network namespace, with its own mount and UTS
//! namespaces, so its `mountPath`s resolve to the pod's volumes and its hostname is the pod's
//! name, while the rest of the host's file system looks as it does outside.
//!
//! The container's root is a tmpfs, private to its mount namespace, that mirrors the host's
//! `/`: each top-level entry is bind-mounted (or re-created as a symlink). Directories on the
//! way to a `mountPath` are mirrored entry by entry instead, so a `mountPath` that does not
//! exist on the host (`/models`) is created in the tmpfs, never on the host. Everything that
//! needs memory is computed before `fork`; the child only makes system calls.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::NodeAgentError;

/// A volume as one container sees it.
#[derive(Debug, Clone)]
pub struct MountSpec {
    /// Directory or file on the host.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    pub read_only: bool,
}

/// Everything needed to start one container process.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// The pod's network namespace file; `None` runs in the host's (simulated pods never
    /// start processes, so this is only for tests of the launcher itself).
    pub netns: Option<PathBuf>,
    pub hostname: String,
    /// An empty directory the container's root tmpfs is mounted on.
    pub root: PathBuf,
    pub mounts: Vec<MountSpec>,
    pub log: PathBuf,
}

/// One step the child takes before `exec`.
#[derive(Debug)]
enum Op {
    Mkdir(CString),
    Symlink {
        target: CString,
        at: CString,
    },
    Touch(CString),
    Bind {
        source: CString,
        at: CString,
        recursive: bool,
        read_only: bool,
    },
}

fn cstring(path: &Path) -> Result<CString, NodeAgentError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| NodeAgentError::ContainerConfig(format!("path {} has a NUL", path.display())))
}

fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// `path` with its longest existing prefix resolved through symlinks, so that no step of it
/// inside the container's root is a symlink.
fn effective(path: &Path) -> PathBuf {
    let mut existing = PathBuf::from("/");
    let mut rest = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) if rest.is_empty() && existing.join(name).exists() => {
                existing.push(name)
            }
            Component::Normal(name) => rest.push(name.to_os_string()),
            _ => {}
        }
    }
    let mut resolved = std::fs::canonicalize(&existing).unwrap_or(existing);
    resolved.extend(rest);
    resolved
}

fn mirror(
    dir: &Path,
    root: &Path,
    mirrored: &BTreeSet<PathBuf>,
    ops: &mut Vec<Op>,
) -> Result<(), NodeAgentError> {
    let entries = std::fs::read_dir(dir).map_err(|source| NodeAgentError::Io {
        context: format!("listing {}", dir.display()),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let at = cstring(&under(root, &path))?;
        if mirrored.contains(&path) {
            ops.push(Op::Mkdir(at));
            mirror(&path, root, mirrored, ops)?;
        } else if meta.file_type().is_symlink() {
            let Ok(target) = std::fs::read_link(&path) else {
                continue;
            };
            ops.push(Op::Symlink {
                target: cstring(&target)?,
                at,
            });
        } else if meta.is_dir() {
            // The root's own mount point is not worth a bind of its own.
            if path == root {
                continue;
            }
            ops.push(Op::Mkdir(at.clone()));
            ops.push(Op::Bind {
                source: cstring(&path)?,
                at,
                recursive: true,
                read_only: false,
            });
        } else {
            ops.push(Op::Touch(at.clone()));
            ops.push(Op::Bind {
                source: cstring(&path)?,
                at,
                recursive: false,
                read_only: false,
            });
        }
    }
    Ok(())
}

/// The steps that build the container's root under `root` and mount its volumes.
fn plan(root: &Path, mounts: &[MountSpec]) -> Result<Vec<Op>, NodeAgentError> {
    let targets: Vec<(PathBuf, &MountSpec)> =
        mounts.iter().map(|m| (effective(&m.target), m)).collect();
    let mut mirrored = BTreeSet::new();
    for (target, _) in &targets {
        for ancestor in target.ancestors().skip(1) {
            if ancestor != Path::new("/") && ancestor.is_dir() {
                mirrored.insert(ancestor.to_path_buf());
            }
        }
    }
    let mut ops = Vec::new();
    mirror(Path::new("/"), root, &mirrored, &mut ops)?;
    let mut made = BTreeSet::new();
    for (target, mount) in &targets {
        let missing: Vec<&Path> = target
            .ancestors()
            .take_while(|a| !a.exists())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        for path in missing {
            if made.insert(path.to_path_buf()) {
                let at = cstring(&under(root, path))?;
                if path == target && mount.source.is_file() {
                    ops.push(Op::Touch(at));
                } else {
                    ops.push(Op::Mkdir(at));
                }
            }
        }
        ops.push(Op::Bind {
            source: cstring(&mount.source)?,
            at: cstring(&under(root, target))?,
            recursive: true,
            read_only: mount.read_only,
        });
    }
    Ok(ops)
}

fn check(result: libc::c_int) -> std::io::Result<()> {
    if result == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the child between `fork` and `exec`: only system calls on prepared data.
fn run_ops(ops: &[Op]) -> std::io::Result<()> {
    let none = std::ptr::null();
    for op in ops {
        // SAFETY: every pointer is a NUL-terminated string owned by `ops`, alive for the call.
        unsafe {
            match op {
                Op::Mkdir(at) => {
                    if libc::mkdir(at.as_ptr(), 0o755) == -1
                        && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Op::Symlink { target, at } => check(libc::symlink(target.as_ptr(), at.as_ptr()))?,
                Op::Touch(at) => {
                    let fd = libc::open(at.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
                    check(fd)?;
                    libc::close(fd);
                }
                Op::Bind {
                    source,
                    at,
                    recursive,
                    read_only,
                } => {
                    let flags = if *recursive {
                        libc::MS_BIND | libc::MS_REC
                    } else {
                        libc::MS_BIND
                    };
                    check(libc::mount(
                        source.as_ptr(),
                        at.as_ptr(),
                        none,
                        flags,
                        none as _,
                    ))?;
                    if *read_only {
                        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                        check(libc::mount(none, at.as_ptr(), none, flags, none as _))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The `tokio` command for `spec`, ready to spawn on the [`Spawner`].
pub fn command(spec: &LaunchSpec) -> Result<Command, NodeAgentError> {
    let ops = plan(&spec.root, &spec.mounts)?;
    let netns = match &spec.netns {
        Some(path) => Some(File::open(path).map_err(|source| NodeAgentError::Io {
            context: format!("opening {}", path.display()),
            source,
        })?),
        None => None,
    };
    let root = cstring(&spec.root)?;
    let tmpfs = c"tmpfs";
    let tmpfs_options = c"mode=755";
    let slash = c"/";
    let netns_dir = c"/run/netns";
    let hostname = spec.hostname.as_bytes().to_vec();
    let working_dir = cstring(Path::new(spec.working_dir.as_deref().unwrap_or("/")))?;
    let working_dir_steps: Vec<CString> = Path::new(spec.working_dir.as_deref().unwrap_or("/"))
        .ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(cstring)
        .collect::<Result<_, _>>()?;

    let log = File::options()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|source| NodeAgentError::Io {
            context: format!("opening {}", spec.log.display()),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| NodeAgentError::Io {
        context: "duplicating a log handle".into(),
        source,
    })?;

    // The program is opened here, on the host, and run through its descriptor: inside the
    // container its path may be hidden, e.g. a binary under /tmp when the pod mounts an
    // emptyDir at /tmp.
    let program = File::open(&spec.program).map_err(|source| NodeAgentError::Io {
        context: format!("opening {}", spec.program.display()),
        source,
    })?;
    let program_fd = program.as_raw_fd();
    let mut command = Command::new(format!("/proc/self/fd/{program_fd}"));
    command
        .arg0(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .kill_on_drop(false);
    // SAFETY: the closure runs in the child between fork and exec; it only makes system
    // calls on data prepared above and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let none = std::ptr::null();
            // Own process group, so a stop reaches everything the container forks; and no
            // container outlives the agent's process.
            check(libc::setpgid(0, 0))?;
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            // Kept open across exec, so a script's interpreter can read it too.
            check(libc::fcntl(program.as_raw_fd(), libc::F_SETFD, 0))?;
            if let Some(netns) = &netns {
                check(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            }
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::sethostname(
                hostname.as_ptr().cast(),
                hostname.len().min(64),
            ))?;
            // Nothing mounted from here on may reach the host's mount namespace.
            check(libc::mount(
                none,
                slash.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none as _,
            ))?;
            // The copy of the host's mounts holds every pod's network namespace file; a
            // container holding them would keep deleted pods' namespaces (and veths) alive.
            libc::umount2(netns_dir.as_ptr(), libc::MNT_DETACH);
            check(libc::mount(
                tmpfs.as_ptr(),
                root.as_ptr(),
                tmpfs.as_ptr(),
                0,
                tmpfs_options.as_ptr().cast(),
            ))?;
            run_ops(&ops)?;
            check(libc::chroot(root.as_ptr()))?;
            for step in &working_dir_steps {
                libc::mkdir(step.as_ptr(), 0o755);
            }
            check(libc::chdir(working_dir.as_ptr()))?;
            Ok(())
        });
    }
    Ok(command)
}

type Job = Box<dyn FnOnce() + Send>;

/// Starts processes from one long-lived thread. `PR_SET_PDEATHSIG` fires when the *thread*
/// that forked a child exits, and tokio's worker and blocking threads come and go; this
/// thread lives exactly as long as the agent, so its processes die with it and not before.
pub struct Spawner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawner {
    pub fn new() -> Result<Self, NodeAgentError> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("node-agent-spawner".into())
            .spawn(move || {
                while let Ok(job) = receiver.recv() {
                    job();
                }
            })
            .map_err(|source| NodeAgentError::Io {
                context: "starting the spawner thread".into(),
                source,
            })?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Spawns `command` on the spawner thread, registered with the current tokio runtime.
    pub async fn spawn(&self, mut command: Command) -> Result<Child, NodeAgentError> {
        let runtime = tokio::runtime::Handle::current();
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _entered = runtime.enter();
            let _ = reply.send(command.spawn());
        });
        let gone = || NodeAgentError::Network("the spawner thread has stopped".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(|source| NodeAgentError::Io {
                context: "starting a container process".into(),
                source,
            })
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_mount_path_is_made_in_the_root_and_never_on_the_host() {
        let root = Path::new("/tmp/root");
        let mounts = [MountSpec {
            source: PathBuf::from("/tmp"),
            target: PathBuf::from("/no-such-dir-for-a-test/models"),
            read_only: true,
        }];
        let ops = plan(root, &mounts).expect("plan");
        let mkdirs: Vec<String> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Mkdir(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        assert!(mkdirs.contains(&"/tmp/root/no-such-dir-for-a-test".to_string()));
        assert!(mkdirs.contains(&"/tmp/root/no-such-dir-for-a-test/models".to_string()));
        let last = ops.last().expect("ops");
        assert!(matches!(
            last,
            Op::Bind { at, read_only: true, .. }
                if at.to_string_lossy() == "/tmp/root/no-such-dir-for-a-test/models"
        ));
        assert!(!Path::new("/no-such-dir-for-a-test").exists());
    }

    #[test]
    fn directories_on_the_way_to_a_mount_path_are_mirrored_not_bound() {
        let root = Path::new("/tmp/root");
        let mounts = [MountSpec {
            source: PathBuf::from("/tmp"),
            target: PathBuf::from("/usr/no-such-dir-for-a-test"),
            read_only: false,
        }];
        let ops = plan(root, &mounts).expect("plan");
        let bound = |p: &str| {
            ops.iter()
                .any(|op| matches!(op, Op::Bind { source, .. } if source.to_string_lossy() == p))
        };
        assert!(!bound("/usr"), "/usr is mirrored entry by entry");
        assert!(bound("/usr/bin") || bound("/usr/lib"));
        assert!(bound("/etc"));
    }
}
