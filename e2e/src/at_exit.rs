//! State that lives as long as the process: a control plane a test binary starts once and
//! shares between its tests has an owner that is never dropped, so its directory (~120 MB
//! of etcd data, certificates and logs) would outlive every run. Registered directories are
//! removed when the process exits, unless a test panicked: then they are kept, and named, for
//! inspection, as [`crate::Cluster`] keeps its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, PoisonError};

static DIRECTORIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Removes `dir` (and everything in it) when the process exits.
pub fn remove_dir_at_exit(dir: &Path) {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
        // SAFETY: `remove_registered` is a plain `extern "C"` function that does not unwind.
        if unsafe { libc::atexit(remove_registered) } != 0 {
            eprintln!(
                "could not register the removal of {} at exit",
                dir.display()
            );
        }
    });
    DIRECTORIES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(dir.to_path_buf());
}

extern "C" fn remove_registered() {
    let directories =
        std::mem::take(&mut *DIRECTORIES.lock().unwrap_or_else(PoisonError::into_inner));
    let keep = PANICKED.load(Ordering::SeqCst);
    for dir in directories {
        if keep {
            eprintln!("a test failed: kept {} for inspection", dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("could not remove {}: {e}", dir.display());
        }
    }
}
