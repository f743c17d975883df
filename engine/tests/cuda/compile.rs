//! Every kernel source compiles with NVRTC (the pinned PyPI wheel) and assembles with
//! ptxas for sm_80 (A100) and sm_90 (H100/H200), without a GPU. ptxas's register and spill
//! report is printed for each kernel.

use std::process::Command;

use modelfleet_engine::backend::cuda::compile::{checked_programs, compile};

use super::support::{compilers_dir, nvrtc_ready};

const ARCHITECTURES: [(u32, u32); 2] = [(8, 0), (9, 0)];

/// ptxas's `-v` report, one line per kernel: its name, registers and spill bytes.
fn usage_lines(report: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut function = String::new();
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            function = rest.split('\'').next().unwrap_or_default().to_string();
        }
        let is_usage =
            line.contains("spill stores") || (line.contains("Used") && line.contains("registers"));
        if let (true, Some((_, what))) = (is_usage, line.split_once(':')) {
            lines.push(format!("{function}: {}", what.trim()));
        }
    }
    lines
}

#[test]
fn every_kernel_compiles_with_nvrtc_and_assembles_with_ptxas_for_sm80_and_sm90() {
    nvrtc_ready();
    let ptxas = compilers_dir().join("bin/ptxas");
    assert!(
        ptxas.is_file(),
        "{} is missing; `make tools` provisions it",
        ptxas.display()
    );
    let scratch = tempfile::tempdir().expect("scratch dir");
    let programs = checked_programs();
    assert!(programs.len() >= 11, "{} programs", programs.len());
    let jobs: Vec<_> = programs
        .iter()
        .flat_map(|p| ARCHITECTURES.map(|arch| (p, arch)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let chunks: Vec<_> = jobs.chunks(jobs.len().div_ceil(threads)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let (ptxas, dir) = (&ptxas, scratch.path());
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|((source, defines), (major, minor))| {
                            let label = format!("{} [{defines}] sm_{major}{minor}", source.file);
                            let ptx = compile(source, defines, (*major, *minor))
                                .map_err(|e| format!("{label}: {e}"))?;
                            let file = dir.join(format!(
                                "{}-{}-sm{major}{minor}.ptx",
                                source.file,
                                defines.to_string().replace([',', '='], "_")
                            ));
                            std::fs::write(&file, &ptx).map_err(|e| e.to_string())?;
                            let out = Command::new(ptxas)
                                .arg(format!("-arch=sm_{major}{minor}"))
                                .args(["-v", "--warn-on-spills", "-o", "/dev/null"])
                                .arg(&file)
                                .output()
                                .map_err(|e| format!("{label}: running ptxas: {e}"))?;
                            let report = String::from_utf8_lossy(&out.stderr).into_owned()
                                + &String::from_utf8_lossy(&out.stdout);
                            if !out.status.success() {
                                return Err(format!("{label}: ptxas failed:\n{report}"));
                            }
                            let usage = usage_lines(&report);
                            if usage.is_empty() {
                                return Err(format!(
                                    "{label}: ptxas reported no kernel:\n{report}"
                                ));
                            }
                            Ok(format!("{label}\n    {}", usage.join("\n    ")))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compile thread"))
            .collect()
    });
    let mut failures = Vec::new();
    for result in &results {
        match result {
            Ok(report) => println!("{report}"),
            Err(e) => failures.push(e.clone()),
        }
    }
    println!(
        "{} programs × {} architectures",
        programs.len(),
        ARCHITECTURES.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn ptxas_usage_lines_name_each_kernel_with_its_registers_and_spills() {
    let report = "ptxas info    : 0 bytes gmem\n\
        ptxas info    : Compiling entry function 'rms_norm' for 'sm_90'\n\
        ptxas info    : Function properties for rms_norm\n\
        ptxas         :     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
        ptxas info    : Used 18 registers, used 1 barriers, 128 bytes smem\n";
    assert_eq!(
        usage_lines(report),
        [
            "rms_norm: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads",
            "rms_norm: Used 18 registers, used 1 barriers, 128 bytes smem"
        ]
    );
}
