//! What the benchmark reads from the operator (its `/metrics` and `/proc`) and how it reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;

const RECONCILES: &str = "modelfleet_operator_reconciles_total";
const RECONCILE_SECONDS: &str = "modelfleet_operator_reconcile_duration_seconds";
const TICK_SECONDS: &str = "modelfleet_operator_autoscaler_tick_duration_seconds";
const API_REQUESTS: &str = "modelfleet_operator_api_requests_total";

/// The operator's counters and histograms at one moment, and its process's RSS and CPU time.
#[derive(Clone, Debug, Default)]
pub struct OperatorSample {
    reconciles: f64,
    /// By HTTP method.
    api_requests: BTreeMap<String, f64>,
    reconcile_buckets: Vec<(f64, f64)>,
    tick_buckets: Vec<(f64, f64)>,
    rss_bytes: u64,
    cpu_seconds: f64,
}

impl OperatorSample {
    pub async fn take(metrics_url: &str, pid: u32) -> anyhow::Result<Self> {
        let text = get(metrics_url).await?;
        let mut sample = Self::parse(&text);
        let (rss, cpu) = process_usage(pid)?;
        sample.rss_bytes = rss;
        sample.cpu_seconds = cpu;
        Ok(sample)
    }

    /// The figures in a Prometheus text exposition (the operator's own metric names).
    fn parse(text: &str) -> Self {
        let mut sample = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.trim_matches('"').to_string())
                })
            };
            let bound = || match label("le").as_deref() {
                Some("+Inf") => Some(f64::INFINITY),
                Some(le) => le.parse().ok(),
                None => None,
            };
            match name {
                RECONCILES => sample.reconciles = value,
                API_REQUESTS => {
                    sample
                        .api_requests
                        .insert(label("method").unwrap_or_default(), value);
                }
                n if n == format!("{RECONCILE_SECONDS}_bucket") => {
                    sample.reconcile_buckets.extend(bound().map(|b| (b, value)));
                }
                n if n == format!("{TICK_SECONDS}_bucket") => {
                    sample.tick_buckets.extend(bound().map(|b| (b, value)));
                }
                _ => {}
            }
        }
        sample
    }

    fn api_total(&self) -> f64 {
        self.api_requests.values().sum()
    }
}

/// RSS in bytes and CPU time (user + system) in seconds of process `pid`.
fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("the operator's /proc status")?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .context("the operator's /proc stat")?;
    // Fields after the command (which may hold spaces), from its closing parenthesis.
    let fields: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..]
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the command.
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((rss_kib * 1024, (ticks(11) + ticks(12)) / per_second))
}

async fn get(url: &str) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse()?;
    let base: http::Uri = format!("http://{}", uri.authority().context("an address")?).parse()?;
    let client = kube::Client::try_from(kube::Config::new(base))?;
    let request = http::Request::get(uri.path()).body(Vec::new())?;
    Ok(client.request_text(request).await?)
}

/// The `q` quantile of a cumulative histogram's `(upper bound, count)` buckets, interpolated
/// within its bucket as PromQL's `histogram_quantile` does; `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in &buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower); // beyond the largest finite bound: report that bound
            }
            let inside = count - below;
            let share = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * share);
        }
        (lower, below) = (bound, count);
    }
    Some(lower)
}

/// The difference of two cumulative histograms (what was observed between them).
fn delta(later: &[(f64, f64)], earlier: &[(f64, f64)]) -> Vec<(f64, f64)> {
    later
        .iter()
        .map(|&(bound, count)| {
            let before = earlier
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c);
            (bound, count - before)
        })
        .collect()
}

/// One fleet size's figures.
pub struct Run {
    count: usize,
    outcome: Result<Figures, String>,
}

/// What one fleet size measured.
pub struct Figures {
    pub created_in: Duration,
    pub ready_in: Duration,
    pub at_ready: OperatorSample,
    pub steady: OperatorSample,
    pub end: OperatorSample,
    pub steady_for: Duration,
    pub reactions: Vec<Duration>,
}

impl Run {
    pub fn new(count: usize, figures: Figures) -> Self {
        Self {
            count,
            outcome: Ok(figures),
        }
    }

    pub fn failed(count: usize, why: String) -> Self {
        Self {
            count,
            outcome: Err(why),
        }
    }

    pub fn summary(&self) -> String {
        match &self.outcome {
            Ok(f) => format!(
                "[bench-operator] {}: Ready in {:.1} s, reconcile p99 {}, {:.1} API requests per reconcile, RSS {:.0} MiB",
                self.count,
                f.ready_in.as_secs_f64(),
                quantile_ms(&f.end.reconcile_buckets, 0.99),
                per_reconcile(&f.at_ready, &OperatorSample::default()),
                mib(f.end.rss_bytes)
            ),
            Err(why) => format!("[bench-operator] {}: failed: {why}", self.count),
        }
    }
}

fn per_reconcile(later: &OperatorSample, earlier: &OperatorSample) -> f64 {
    let reconciles = later.reconciles - earlier.reconciles;
    if reconciles <= 0.0 {
        return 0.0;
    }
    (later.api_total() - earlier.api_total()) / reconciles
}

fn millis(seconds: Option<f64>) -> String {
    seconds.map_or("–".into(), |s| format!("{:.1} ms", s * 1000.0))
}

/// The `q` quantile of `buckets` in milliseconds, or "> N ms" when it lies beyond the largest
/// finite bucket.
fn quantile_ms(buckets: &[(f64, f64)], q: f64) -> String {
    let largest = buckets
        .iter()
        .map(|(bound, _)| *bound)
        .filter(|bound| bound.is_finite())
        .fold(0.0, f64::max);
    let finite_count = buckets
        .iter()
        .filter(|(bound, _)| *bound == largest)
        .map(|(_, count)| *count)
        .next()
        .unwrap_or(0.0);
    let total = buckets.iter().map(|(_, count)| *count).fold(0.0, f64::max);
    if total > 0.0 && finite_count < q * total {
        return format!("> {:.0} ms", largest * 1000.0);
    }
    millis(quantile(buckets, q))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The Markdown report of every run.
pub fn report(
    runs: &[Run],
    component_qps: u32,
    autoscale_interval: Duration,
    scrape_interval: Duration,
) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# The operator at fleet sizes (`make bench-operator`)\n"
    );
    let _ = writeln!(
        out,
        "Machine: {cpu}, {cores} cores, shared by the control plane (etcd, kube-apiserver, \
         controller-manager and scheduler at {} requests/s), kwok, Prometheus and the \
         operator. Autoscaler interval {} s, scrape interval {} s; 10 ModelDeployments per \
         namespace, each autoscaled between 1 and 3 replicas on kwok's simulated nodes, each \
         with a synthetic queue-depth series in Prometheus.\n",
        component_qps,
        autoscale_interval.as_secs(),
        scrape_interval.as_secs()
    );
    let _ = writeln!(
        out,
        "| ModelDeployments | created in | all Ready in | reconcile p50 / p99 (to Ready) | reconcile p50 / p99 (after) | API requests / reconcile (to Ready) | API requests / reconcile (steady) | reconciles / s (steady) | RSS | CPU (to Ready) | CPU (steady) | autoscaler tick p50 / p99 | queue step → replicas |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in runs {
        match &run.outcome {
            Ok(f) => {
                let steady_s = f.steady_for.as_secs_f64();
                let reactions: Vec<String> = f
                    .reactions
                    .iter()
                    .map(|r| format!("{:.1} s", r.as_secs_f64()))
                    .collect();
                let ticks = delta(&f.end.tick_buckets, &f.at_ready.tick_buckets);
                let after = delta(&f.end.reconcile_buckets, &f.at_ready.reconcile_buckets);
                let _ = writeln!(
                    out,
                    "| {} | {:.1} s | {:.1} s | {} / {} | {} / {} | {:.1} | {:.1} | {:.2} | {:.0} MiB | {:.1} s | {:.0}% | {} / {} | {} |",
                    run.count,
                    f.created_in.as_secs_f64(),
                    f.ready_in.as_secs_f64(),
                    quantile_ms(&f.at_ready.reconcile_buckets, 0.5),
                    quantile_ms(&f.at_ready.reconcile_buckets, 0.99),
                    quantile_ms(&after, 0.5),
                    quantile_ms(&after, 0.99),
                    per_reconcile(&f.at_ready, &OperatorSample::default()),
                    per_reconcile(&f.steady, &f.at_ready),
                    (f.steady.reconciles - f.at_ready.reconciles) / steady_s,
                    mib(f.end.rss_bytes),
                    f.at_ready.cpu_seconds,
                    100.0 * (f.steady.cpu_seconds - f.at_ready.cpu_seconds) / steady_s,
                    quantile_ms(&ticks, 0.5),
                    quantile_ms(&ticks, 0.99),
                    reactions.join(", "),
                );
            }
            Err(why) => {
                let _ = writeln!(out, "| {} | failed: {} |", run.count, why.replace('|', "/"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let buckets = [
            (0.01, 50.0),
            (0.1, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(&buckets, 0.5), Some(0.01));
        let p70 = quantile(&buckets, 0.7).expect("observations");
        assert!((p70 - 0.055).abs() < 1e-9, "{p70}");
        assert_eq!(quantile(&[(0.1, 0.0)], 0.5), None);
        let slow = [(0.01, 1.0), (10.0, 5.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile_ms(&slow, 0.99), "> 10000 ms");
        // Rank 3 of 10 is the second of the four observations between 10 ms and 10 s.
        assert_eq!(quantile_ms(&slow, 0.3), "5005.0 ms");
    }

    #[test]
    fn the_operators_exposition_is_read() {
        let text = "# HELP x\nmodelfleet_operator_reconciles_total 10\n\
            modelfleet_operator_api_requests_total{method=\"GET\"} 4\n\
            modelfleet_operator_api_requests_total{method=\"PATCH\"} 16\n\
            modelfleet_operator_reconcile_duration_seconds_bucket{le=\"0.01\"} 7\n\
            modelfleet_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"} 10\n";
        let sample = OperatorSample::parse(text);
        assert_eq!(per_reconcile(&sample, &OperatorSample::default()), 2.0);
        assert_eq!(
            sample.reconcile_buckets,
            [(0.01, 7.0), (f64::INFINITY, 10.0)]
        );
    }
}
