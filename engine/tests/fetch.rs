//! `modelfleet-engine fetch`, the pod's init container, as a process: it fetches, and exits
//! non-zero with a message naming the source when it cannot. The fetcher itself is tested in
//! its own crate.

use std::process::Command;

use modelfleet_fetch::is_complete;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn the_binary_fetches_and_exits_non_zero_with_a_clear_message() -> TestResult {
    let source = tempfile::tempdir()?;
    std::fs::write(source.path().join("config.json"), b"{}")?;
    let dest = tempfile::tempdir()?;
    let binary = env!("CARGO_BIN_EXE_modelfleet-engine");
    let uri = format!("file://{}", source.path().display());

    let ok = Command::new(binary)
        .args(["fetch", "--source", &uri, "--revision", "v1", "--dest"])
        .arg(dest.path())
        .output()?;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("fetch: config.json done"));
    assert!(is_complete(dest.path(), &uri, "v1"));

    let missing = format!("file://{}/absent", source.path().display());
    let failed = Command::new(binary)
        .args(["fetch", "--source", &missing, "--revision", "v1", "--dest"])
        .arg(dest.path().join("other"))
        .output()?;
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains(&missing), "{stderr}");
    Ok(())
}
