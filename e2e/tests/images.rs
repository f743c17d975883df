//! The images `make images` builds, read back from their docker-archives: tagged as the chart
//! and the operator default to, labelled with version and source, run as 65532, and minimal
//! (the binary, the libraries it links, a CA bundle, passwd and group; no shell, no package
//! manager). That they run is proven where they run: the engine in the fleet scenarios, the
//! operator in the Helm tests, on the real node.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use modelfleet_e2e::images::{Image, VERSION};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    config: ContainerConfig,
}

#[derive(Debug, Deserialize)]
struct ContainerConfig {
    #[serde(rename = "User")]
    user: String,
    #[serde(rename = "Entrypoint")]
    entrypoint: Vec<String>,
    #[serde(rename = "Env", default)]
    env: Vec<String>,
    #[serde(rename = "Labels", default)]
    labels: BTreeMap<String, String>,
}

/// An image read from its archive: tags, configuration, and every path in its layers.
struct Archive {
    tags: Vec<String>,
    config: ContainerConfig,
    paths: BTreeSet<String>,
}

fn read(image: Image) -> Archive {
    let archive = image.archive().expect("the image's archive (make images)");
    let files = entries(&std::fs::read(&archive).expect("read the archive"));
    let manifest: Vec<ManifestEntry> =
        serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    assert_eq!(manifest.len(), 1, "one image per archive");
    let entry = &manifest[0];
    let config: ImageConfig =
        serde_json::from_slice(&files[&entry.config]).expect("the image configuration");
    let mut paths = BTreeSet::new();
    for layer in &entry.layers {
        paths.extend(entries(&files[layer]).into_keys());
    }
    Archive {
        tags: entry.repo_tags.clone(),
        config: config.config,
        paths,
    }
}

/// Every entry of a tar archive: path (without a leading `./` or `/`) to contents.
fn entries(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .expect("a tar archive")
        .map(|entry| {
            let mut entry = entry.expect("an entry");
            let path = entry.path().expect("a path").display().to_string();
            let path = path
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_string();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("contents");
            (path.trim_end_matches('/').to_string(), contents)
        })
        .collect()
}

/// What `ldd` says `binary` loads, as paths inside an image (no leading `/`).
fn libraries_of(binary: &Path) -> Vec<String> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .map(|p| p.trim_start_matches('/').to_string())
        .collect()
}

fn check_product_image(image: Image, binary: &str) {
    let archive = read(image);
    assert_eq!(archive.tags, [image.tag()]);
    let config = &archive.config;
    assert_eq!(config.user, "65532:65532");
    assert_eq!(config.entrypoint, [format!("/usr/local/bin/{binary}")]);
    assert!(
        config.env.contains(&"PATH=/usr/local/bin".to_string()),
        "{:?}",
        config.env
    );
    let label = |name: &str| config.labels.get(name).map(String::as_str);
    assert_eq!(label("org.opencontainers.image.version"), Some(VERSION));
    assert_eq!(
        label("org.opencontainers.image.source"),
        Some("https://github.com/modelfleet/modelfleet")
    );
    assert_eq!(
        label("org.opencontainers.image.licenses"),
        Some("Apache-2.0")
    );
    assert!(
        label("org.opencontainers.image.revision").is_some_and(|r| r.len() == 40),
        "the git commit: {:?}",
        label("org.opencontainers.image.revision")
    );

    let paths = &archive.paths;
    assert!(paths.contains(&format!("usr/local/bin/{binary}")));
    let built = modelfleet_e2e::binaries::workspace_binary(binary, binary).expect("the binary");
    for library in libraries_of(&built) {
        assert!(
            paths.contains(&library),
            "{library} (ldd) is in the image: {paths:?}"
        );
    }
    assert!(paths.contains("etc/ssl/certs/ca-certificates.crt"));
    let passwd = paths.contains("etc/passwd");
    assert!(passwd, "passwd names the user");
    for absent in [
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "usr/bin/apt",
        "usr/bin/dpkg",
        "sbin/apk",
    ] {
        assert!(!paths.contains(absent), "{absent} is not in the image");
    }
    // Nothing else: the binary, shared libraries, certificates, passwd and group, the
    // directories they are in, /tmp and the user's home.
    let is_file_allowed = |p: &str| {
        p == format!("usr/local/bin/{binary}")
            || [
                "etc/passwd",
                "etc/group",
                "etc/ssl/certs/ca-certificates.crt",
            ]
            .contains(&p)
            || (p.starts_with("lib/x86_64-linux-gnu/lib") && p.contains(".so"))
            || p == "lib64/ld-linux-x86-64.so.2"
    };
    let files: Vec<&String> = paths.iter().filter(|p| is_file_allowed(p)).collect();
    let unexpected: Vec<&String> = paths
        .iter()
        .filter(|p| {
            let directory_of_a_file = files.iter().any(|f| f.starts_with(&format!("{p}/")));
            !is_file_allowed(p)
                && !directory_of_a_file
                && !["tmp", "home", "home/nonroot"].contains(&p.as_str())
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected in the image: {unexpected:?}"
    );
}

#[test]
fn the_engine_image_is_minimal_labelled_and_unprivileged() {
    check_product_image(Image::Engine, "modelfleet-engine");
}

#[test]
fn the_operator_image_is_minimal_labelled_and_unprivileged() {
    check_product_image(Image::Operator, "modelfleet-operator");
}
