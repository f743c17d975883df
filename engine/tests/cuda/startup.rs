//! Asking for the CUDA backend where there is no driver is a clear error and exit status
//! 1, never a panic; the same command on the CPU backend works (the positive control).

use std::process::Command;

use modelfleet_engine::backend::cuda::driver;

use super::support::fixtures_dir;

fn generate(backend: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_modelfleet-engine"))
        .args(["generate", "--model"])
        .arg(fixtures_dir().join("tiny-llama"))
        .args(["--prompt", "ab", "--max-tokens", "2", "--backend", backend])
        .output()
        .expect("runs the engine")
}

#[test]
fn without_a_driver_the_cuda_backend_is_refused_by_name_and_the_cpu_backend_runs() {
    let cpu = generate("cpu");
    assert!(
        cpu.status.success(),
        "{}",
        String::from_utf8_lossy(&cpu.stderr)
    );
    if driver::check_libraries().is_ok() {
        eprintln!("a CUDA driver is present here: the refusal is not what happens");
        return;
    }
    let cuda = generate("cuda");
    let stderr = String::from_utf8_lossy(&cuda.stderr);
    assert_eq!(cuda.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("backend 'cuda' is not available") && stderr.contains("libcuda"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
