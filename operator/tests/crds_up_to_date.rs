//! `crds/` must hold exactly what the Rust types generate: the Helm chart and users install
//! those files, so a type change without `make crds` would ship a stale schema.

use std::path::PathBuf;

use modelfleet_operator::crdgen::{CRD_FILE, crd_yaml};

#[test]
fn crds_directory_matches_the_rust_types() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(CRD_FILE);
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; run `make crds`", path.display()));
    let generated = crd_yaml().expect("render CRD");
    assert!(
        on_disk == generated,
        "{} is stale: run `make crds` and commit the result",
        path.display()
    );
}

#[test]
fn crd_declares_the_scale_subresource_and_printer_columns() {
    let crd = crd_yaml().expect("render CRD");
    let crd: serde_yaml::Value = serde_yaml::from_str(&crd).expect("parse CRD");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["names"]["shortNames"][0].as_str(), Some("md"));
    assert_eq!(
        version["subresources"]["scale"]["specReplicasPath"].as_str(),
        Some(".spec.replicas.count")
    );
    assert_eq!(
        version["subresources"]["scale"]["labelSelectorPath"].as_str(),
        Some(".status.selector")
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_sequence()
        .expect("printer columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        columns,
        vec![
            "Ready",
            "Desired",
            "Revision",
            "Queue",
            "Status",
            "Message",
            "Rollout",
            "Rollout-Message",
            "Age"
        ]
    );
}
