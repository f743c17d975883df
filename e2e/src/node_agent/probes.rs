//! Startup, readiness and liveness probes, run against the pod's IP as the kubelet runs them:
//! httpGet (any status in 200..400 passes), tcpSocket (a connection), exec (exit 0, run in the
//! container's namespaces) and grpc (`grpc.health.v1`, SERVING).

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where a probe goes: the pod's address and the container's process (for exec).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub ip: Ipv4Addr,
    pub pid: u32,
}

/// The timing of a probe, with the kubelet's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.map_or(default, |v| v.max(0) as u64))
}

pub fn timing(probe: &Probe) -> Timing {
    Timing {
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: probe.success_threshold.map_or(1, |v| v.max(1) as u32),
        failure_threshold: probe.failure_threshold.map_or(3, |v| v.max(1) as u32),
    }
}

/// A port given by number or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// Runs `probe` once; `Err` says why it failed.
pub async fn check(probe: &Probe, container: &Container, target: Target) -> Result<(), String> {
    let limit = timing(probe).timeout;
    match tokio::time::timeout(limit, check_inner(probe, container, target)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {limit:?}")),
    }
}

async fn check_inner(probe: &Probe, container: &Container, target: Target) -> Result<(), String> {
    if let Some(http) = &probe.http_get {
        let port = resolve_port(&http.port, container).ok_or("unknown port")?;
        if http.scheme.as_deref() == Some("HTTPS") {
            return Err("HTTPS probes are not supported by the node agent".into());
        }
        let host = http.host.clone().unwrap_or_else(|| target.ip.to_string());
        let path = http.path.as_deref().unwrap_or("/");
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let status = http_get(&host, port, path, &headers).await?;
        return if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {status}"))
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container).ok_or("unknown port")?;
        let host = tcp.host.clone().unwrap_or_else(|| target.ip.to_string());
        return TcpStream::connect((host.as_str(), port))
            .await
            .map(drop)
            .map_err(|e| format!("dial tcp {host}:{port}: {e}"));
    }
    if let Some(exec) = &probe.exec {
        return exec_in(target.pid, exec.command.as_deref().unwrap_or_default()).await;
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| "bad port")?;
        return grpc_health(target.ip, port, grpc.service.clone().unwrap_or_default()).await;
    }
    Err("the probe names no handler".into())
}

/// A minimal HTTP/1.1 GET; returns the status code.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<u16, String> {
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    request.push_str("User-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or_else(|| "malformed HTTP response".to_string())
}

/// The status code of an HTTP response's first line.
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

/// Runs `command` in the container's namespaces and root (as `kubectl exec` would).
async fn exec_in(pid: u32, command: &[String]) -> Result<(), String> {
    if command.is_empty() {
        return Err("empty exec command".into());
    }
    let target = pid.to_string();
    let mut nsenter = tokio::process::Command::new("nsenter");
    nsenter
        .args(["-t", &target, "-n", "-m", "-u", "-r", "-w", "--"])
        .args(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let output = nsenter.output().await.map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "command {command:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

async fn grpc_health(ip: Ipv4Addr, port: u16, service: String) -> Result<(), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}"))
        .map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|status| format!("health rpc failed: {}", status.message()))?;
    let status = response.into_inner().status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(format!("service unhealthy (responded with {status})"))
    }
}

/// Counts consecutive results against a probe's thresholds. Pure.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    successes: u32,
    failures: u32,
    passing: Option<bool>,
}

impl Verdict {
    pub fn new() -> Self {
        Self {
            successes: 0,
            failures: 0,
            passing: None,
        }
    }

    /// Records one result; returns the probe's state once a threshold is crossed.
    pub fn record(&mut self, ok: bool, timing: &Timing) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= timing.success_threshold {
                self.passing = Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= timing.failure_threshold {
                self.passing = Some(false);
            }
        }
        self.passing
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    #[test]
    fn kubelet_defaults_apply_to_an_empty_probe() {
        let t = timing(&Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let t = Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 2,
        };
        let mut v = Verdict::new();
        assert_eq!(v.record(true, &t), None);
        assert_eq!(v.record(false, &t), None);
        assert_eq!(v.record(true, &t), None);
        assert_eq!(v.record(true, &t), Some(true));
        assert_eq!(v.record(false, &t), Some(true));
        assert_eq!(v.record(false, &t), Some(false));
    }

    #[test]
    fn named_ports_resolve_through_the_container() {
        let container = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        };
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &container),
            Some(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::Int(9000), &container),
            Some(9000)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("grpc".into()), &container),
            None
        );
    }

    #[test]
    fn the_status_line_gives_the_code() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 500 Oops\r\nx"), Some(500));
        assert_eq!(parse_status(b"garbage"), None);
    }
}
