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

/// How a kubeconfig reaches the API server.
#[derive(Debug, Clone, Copy)]
pub struct Server<'a> {
    pub url: &'a str,
    /// The CA the server's certificate chains to, PEM.
    pub ca_pem: &'a str,
    /// The name to check the certificate against when `url` names an address it was not
    /// issued for (a forwarder).
    pub tls_server_name: Option<&'a str>,
}

/// Writes a kubeconfig that reaches `server` as the user of `credentials`.
pub fn write_for_client_cert(
    path: &Path,
    server: &str,
    ca_pem: &str,
    credentials: &ClientCredentials,
) -> Result<(), Error> {
    write(
        path,
        &Server {
            url: server,
            ca_pem,
            tls_server_name: None,
        },
        credentials,
    )
}

/// Writes a kubeconfig that reaches `server` as the user of `credentials`.
pub fn write(
    path: &Path,
    server: &Server<'_>,
    credentials: &ClientCredentials,
) -> Result<(), Error> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| Error::io(&format!("reading {}", p.display()), e));
    let user = json!({
        "client-certificate-data": STANDARD.encode(read(&credentials.cert)?),
        "client-key-data": STANDARD.encode(read(&credentials.key)?),
    });
    write_file(path, &render(server, &credentials.identity.user, user))
}

/// Writes a kubeconfig that reaches `server` with a bearer token (a service account's).
pub fn write_for_token(
    path: &Path,
    server: &Server<'_>,
    user: &str,
    token: &str,
) -> Result<(), Error> {
    write_file(path, &render(server, user, json!({ "token": token })))
}

/// The YAML of a one-cluster, one-user, one-context kubeconfig.
fn render(server: &Server<'_>, user_name: &str, user: serde_json::Value) -> String {
    let mut cluster = json!({
        "server": server.url,
        "certificate-authority-data": STANDARD.encode(server.ca_pem),
    });
    if let Some(name) = server.tls_server_name {
        cluster["tls-server-name"] = json!(name);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CONTEXT,
            "cluster": cluster,
        }],
        "users": [{ "name": user_name, "user": user }],
        "contexts": [{ "name": CONTEXT, "context": { "cluster": CONTEXT, "user": user_name } }],
        "current-context": CONTEXT,
    });
    // Serialising a `serde_json::Value` to YAML cannot fail.
    serde_yaml::to_string(&config).unwrap_or_default()
}

fn write_file(path: &Path, yaml: &str) -> Result<(), Error> {
    std::fs::write(path, yaml).map_err(|e| Error::io(&format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_kubeconfig_parses_as_one_context() {
        let yaml = render(
            &Server {
                url: "https://127.0.0.1:6443",
                ca_pem: "-----BEGIN CERTIFICATE-----\n",
                tls_server_name: None,
            },
            "alice",
            json!({ "token": "abc" }),
        );
        let parsed: kube::config::Kubeconfig = serde_yaml::from_str(&yaml).expect("valid");
        assert_eq!(parsed.current_context.as_deref(), Some(CONTEXT));
        assert_eq!(parsed.clusters.len(), 1);
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(parsed.auth_infos[0].name, "alice");
        assert_eq!(cluster.tls_server_name, None);
    }

    #[test]
    fn a_kubeconfig_through_a_forwarder_names_the_certificate_it_expects() {
        let yaml = render(
            &Server {
                url: "https://10.196.0.1:443",
                ca_pem: "CA",
                tls_server_name: Some("kubernetes.default.svc"),
            },
            "system:node:n",
            json!({ "token": "abc" }),
        );
        let parsed: kube::config::Kubeconfig = serde_yaml::from_str(&yaml).expect("valid");
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(
            cluster.tls_server_name.as_deref(),
            Some("kubernetes.default.svc")
        );
    }
}
