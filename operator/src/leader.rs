//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Written here rather than taken from a crate because the election crates for kube-rs
//! track older kube releases than the kube 5 this workspace uses, and the algorithm is
//! small: it follows client-go's `leaderelection` package. A candidate takes the lease when
//! it is free or when its holder has not renewed it for `lease_duration`; the leader renews
//! every `retry_period` and gives up (the process stops reconciling) if it cannot renew for
//! `renew_deadline`. Writes use the lease's resourceVersion, so two candidates racing for
//! the same lease cannot both win.
//!
//! Every call to the API server is bounded in time, a renewal by what is left of the renew
//! deadline: a request that hangs (a partitioned node, a black-holed connection; the
//! client's own timeouts are minutes) ends leadership on time instead of keeping an old
//! leader reconciling after a standby took the lease. Since `renew_deadline <
//! lease_duration`, the old leader always stops before anyone else may start.
//!
//! Expiry is judged by the local monotonic clock from when this candidate last saw the
//! lease record change, never by comparing `renewTime` with the local wall clock, so clock
//! skew between nodes cannot hand the lease to two processes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Which lease to contend for, as whom, and how fast.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per process (the pod name in a cluster).
    pub identity: String,
    /// How long a lease lasts without renewal before others may take it.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The lease record last seen and when it was first seen in that state.
struct Observation {
    spec: LeaseSpec,
    since: Instant,
}

/// Contends for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observation>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Waits until this candidate holds the lease. Returns `false` if cancelled first.
    /// `on_attempt` runs after every attempt that reached the API server.
    pub async fn acquire(
        &mut self,
        cancel: &CancellationToken,
        mut on_attempt: impl FnMut(),
    ) -> bool {
        loop {
            let attempt =
                tokio::time::timeout(self.config.renew_deadline, self.try_acquire_or_renew());
            let outcome = tokio::select! {
                () = cancel.cancelled() => return false,
                outcome = attempt => outcome,
            };
            match outcome {
                Ok(Ok(true)) => {
                    on_attempt();
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return true;
                }
                Ok(Ok(false)) => on_attempt(),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not reach the leader lease; retrying");
                }
                Err(_) => tracing::warn!(
                    timeout = ?self.config.renew_deadline,
                    "no answer from the API server about the leader lease; retrying"
                ),
            }
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Keeps renewing the lease until `cancel` fires (returns `Ok`; the caller stops its
    /// work and then calls [`Self::release`]) or leadership is lost (returns
    /// [`Error::LeadershipLost`]).
    pub async fn hold(&mut self, cancel: &CancellationToken) -> Result<()> {
        // Counted from when the last successful renewal was sent, not answered: the lease
        // says it was renewed at about that time, so a standby's wait starts no earlier.
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            let deadline = renewed + self.config.renew_deadline;
            let sent = Instant::now();
            let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew());
            let outcome = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                outcome = attempt => outcome,
            };
            match outcome {
                Ok(Ok(true)) => renewed = sent,
                Ok(Ok(false)) => return Err(self.lost()),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not renew the leader lease");
                    if Instant::now() >= deadline {
                        return Err(self.lost());
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        deadline = ?self.config.renew_deadline,
                        "the lease renewal got no answer within the renew deadline"
                    );
                    return Err(self.lost());
                }
            }
        }
    }

    fn lost(&self) -> Error {
        Error::LeadershipLost {
            lease: self.config.name.clone(),
            deadline: self.config.renew_deadline,
        }
    }

    /// One attempt: take the lease if it is free, expired or ours (renewing it), else report
    /// that another candidate holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let name = self.config.name.clone();
        let lease = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("reading the leader lease", e))?;

        let Some(mut lease) = lease else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(next_record(None, &self.config, now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.unwrap_or_default());
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(Error::kube("creating the leader lease", e)),
            };
        };

        let current = lease.spec.clone().unwrap_or_default();
        self.observe(current.clone());
        let holder = current.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.config.identity.as_str());
        if !ours && holder.is_some() && !self.expired(&current) {
            return Ok(false);
        }

        lease.spec = Some(next_record(Some(&current), &self.config, now));
        // `replace` sends the resourceVersion we read: if anyone wrote in between, the API
        // server answers 409 and we lost this round.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(updated.spec.unwrap_or_default());
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(Error::kube("updating the leader lease", e)),
        }
    }

    /// Gives the lease up so a standby takes over at once instead of after expiry. Bounded
    /// by the renew deadline: a shutdown never waits longer on an API server that does not
    /// answer (the lease then expires on its own).
    pub async fn release(&mut self) {
        if tokio::time::timeout(self.config.renew_deadline, self.try_release())
            .await
            .is_err()
        {
            tracing::warn!("could not release the leader lease in time; it will expire");
        }
    }

    async fn try_release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(error) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "could not release the leader lease; it will expire");
        } else {
            tracing::info!(lease = %self.config.name, "released the leader lease");
        }
    }

    fn observe(&mut self, spec: LeaseSpec) {
        if self.observed.as_ref().is_none_or(|o| o.spec != spec) {
            self.observed = Some(Observation {
                spec,
                since: Instant::now(),
            });
        }
    }

    /// Whether the holder of `current` has let it lapse, judged from when this candidate
    /// first saw `current` unchanged.
    fn expired(&self, current: &LeaseSpec) -> bool {
        let duration = current
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        match &self.observed {
            Some(o) if &o.spec == current => o.since.elapsed() >= duration,
            _ => false,
        }
    }
}

/// The record `config.identity` writes when taking or renewing a lease that holds
/// `current` (`None`: the lease does not exist yet). As in client-go, a change of holder
/// counts a transition and resets the acquire time; a renewal keeps both.
fn next_record(current: Option<&LeaseSpec>, config: &LeaseConfig, now: MicroTime) -> LeaseSpec {
    let ours = current.and_then(|c| c.holder_identity.as_deref()) == Some(config.identity.as_str());
    let transitions = current.and_then(|c| c.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(duration_seconds(config.lease_duration)),
        acquire_time: if ours {
            current.and_then(|c| c.acquire_time.clone())
        } else {
            Some(now.clone())
        },
        renew_time: Some(now),
        lease_transitions: Some(if ours || current.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

fn duration_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> MicroTime {
        MicroTime(Timestamp::from_second(seconds).expect("timestamp"))
    }

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig::new("ns", "lease", identity)
    }

    #[test]
    fn a_new_lease_starts_with_no_transitions() {
        let record = next_record(None, &config("a"), at(10));
        assert_eq!(record.holder_identity.as_deref(), Some("a"));
        assert_eq!(record.lease_transitions, Some(0));
        assert_eq!(record.acquire_time, Some(at(10)));
        assert_eq!(record.lease_duration_seconds, Some(15));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let first = next_record(None, &config("a"), at(10));
        let renewed = next_record(Some(&first), &config("a"), at(12));
        assert_eq!(renewed.acquire_time, Some(at(10)));
        assert_eq!(renewed.renew_time, Some(at(12)));
        assert_eq!(renewed.lease_transitions, Some(0));
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let first = next_record(None, &config("a"), at(10));
        let taken = next_record(Some(&first), &config("b"), at(40));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(at(40)));
        assert_eq!(taken.lease_transitions, Some(1));
    }
}
