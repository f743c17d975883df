//! Kubeconfig files for the cluster's users, with certificates embedded so a file still
//! works when copied elsewhere.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::Error;
use crate::pki::ClientCredentials;

/// The context (and cluster) name every generated kubeconfig uses.
pub const CONTEXT: &str = "modelfleet-local";

/// Writes a kubeconfig that reaches `server` as the user of `credentials`.
pub fn write_for_client_cert(
    path: &Path,
    server: &str,
    ca_pem: &str,
    credentials: &ClientCredentials,
) -> Result<(), Error> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| Error::io(&format!("reading {}", p.display()), e));
    let user = json!({
        "client-certificate-data": STANDARD.encode(read(&credentials.cert)?),
        "client-key-data": STANDARD.encode(read(&credentials.key)?),
    });
    write(
        path,
        &render(server, ca_pem, &credentials.identity.user, user),
    )
}

/// The YAML of a one-cluster, one-user, one-context kubeconfig.
fn render(server: &str, ca_pem: &str, user_name: &str, user: serde_json::Value) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CONTEXT,
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_pem),
            },
        }],
        "users": [{ "name": user_name, "user": user }],
        "contexts": [{ "name": CONTEXT, "context": { "cluster": CONTEXT, "user": user_name } }],
        "current-context": CONTEXT,
    });
    // Serialising a `serde_json::Value` to YAML cannot fail.
    serde_yaml::to_string(&config).unwrap_or_default()
}

fn write(path: &Path, yaml: &str) -> Result<(), Error> {
    std::fs::write(path, yaml).map_err(|e| Error::io(&format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_kubeconfig_parses_as_one_context() {
        let yaml = render(
            "https://127.0.0.1:6443",
            "-----BEGIN CERTIFICATE-----\n",
            "alice",
            json!({ "token": "abc" }),
        );
        let parsed: kube::config::Kubeconfig = serde_yaml::from_str(&yaml).expect("valid");
        assert_eq!(parsed.current_context.as_deref(), Some(CONTEXT));
        assert_eq!(parsed.clusters.len(), 1);
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(parsed.auth_infos[0].name, "alice");
    }
}
