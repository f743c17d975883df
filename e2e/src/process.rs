//! A child process the harness owns: output to a log file, stopped for sure.
//!
//! Each child gets its own process group (so a stop reaches anything it forked) and asks the
//! kernel to kill it when the harness process dies, so even a test binary killed with SIGKILL
//! leaves no control plane behind.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub struct ManagedProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `program args…` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Self, Error> {
        Self::spawn_with_env(name, program, args, &[], log)
    }

    /// Like [`ManagedProcess::spawn`], with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        log: &Path,
    ) -> Result<Self, Error> {
        Self::spawn_in(name, program, args, env, log, None)
    }

    /// Like [`ManagedProcess::spawn_with_env`], in the network namespace bound at `netns`
    /// (`/run/netns/<name>`) when given; the mount namespace stays the host's.
    pub fn spawn_in(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        log: &Path,
        netns: Option<&Path>,
    ) -> Result<Self, Error> {
        // Opened here: between fork and exec only async-signal-safe calls may run.
        let netns = netns
            .map(|path| {
                File::open(path).map_err(|e| {
                    Error::io(&format!("opening network namespace {}", path.display()), e)
                })
            })
            .transpose()?;
        let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(&format!("opening the log of {name}"), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("duplicating a log handle", e))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: the closure runs in the child between fork and exec and only makes
        // async-signal-safe system calls on a descriptor the parent keeps open.
        unsafe {
            command.pre_exec(move || {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            name: name.to_string(),
            program: program.to_path_buf(),
            source,
        })?;
        drop(netns);
        Ok(Self {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` if the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `max_bytes` of the process's log.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        tail(&self.log, max_bytes)
    }

    /// SIGTERM to the process group, then SIGKILL after a grace period. Idempotent.
    pub fn stop(&mut self) {
        stop_all(std::slice::from_mut(self));
    }

    /// Sends SIGTERM to the process group unless the process already exited.
    fn terminate(&mut self) {
        if self.exit_status().is_none() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        }
    }

    /// SIGKILL to the process group, then reap the process.
    fn kill_group(&mut self) {
        if self.exit_status().is_none() {
            // SAFETY: as above.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }

    /// SIGKILL to the process alone, as a crash would; for failure tests.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops processes together: SIGTERM to all, one shared grace period, then SIGKILL to
/// whatever is left. Stopping them one by one would add up the grace periods.
pub fn stop_all(processes: &mut [ManagedProcess]) {
    for process in processes.iter_mut() {
        process.terminate();
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && processes.iter_mut().any(|p| p.exit_status().is_none()) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for process in processes.iter_mut() {
        process.kill_group();
    }
}

/// The last `max_bytes` of a file, lossily decoded; empty if it cannot be read.
pub fn tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
