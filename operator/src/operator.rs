//! One operator process: optional leader election around the controller, plus telemetry.

use std::net::SocketAddr;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::controller::{ControllerConfig, run_controller};
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;
use crate::telemetry::{self, Readiness};

/// Everything one operator process needs to know.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub controller: ControllerConfig,
    /// Contend for this lease and reconcile only while holding it; `None` always reconciles.
    pub leader_election: Option<LeaseConfig>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None` serves nothing.
    pub telemetry_addr: Option<SocketAddr>,
}

/// Runs until `shutdown` fires (returns `Ok`) or leadership is lost (returns
/// [`crate::Error::LeadershipLost`]: the process should exit and be restarted, so that a
/// new term starts from fresh caches, as client-go's operators do).
pub async fn run(
    client: Client,
    config: OperatorConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<()> {
    let readiness = Readiness::default();
    let telemetry = match config.telemetry_addr {
        Some(addr) => {
            let (bound, server) =
                telemetry::serve(addr, metrics.clone(), readiness.clone(), shutdown.clone())
                    .await?;
            tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
            futures::future::Either::Left(server)
        }
        None => futures::future::Either::Right(std::future::ready(Ok(()))),
    };
    // Both run to their end, so the controller always gets to stop and release the lease
    // before the process exits; whichever ends first stops the other.
    let (reconciled, served) = tokio::join!(
        async {
            let result =
                reconcile_while_allowed(client, config, metrics, readiness, shutdown.clone()).await;
            shutdown.cancel();
            result
        },
        async {
            let result = telemetry.await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        },
    );
    reconciled.and(served)
}

async fn reconcile_while_allowed(
    client: Client,
    config: OperatorConfig,
    metrics: Metrics,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<()> {
    let Some(lease) = config.leader_election else {
        readiness.set(true);
        return run_controller(client, config.controller, metrics, shutdown).await;
    };
    let mut elector = LeaderElector::new(client.clone(), lease);
    tracing::info!(lease = %elector.config().name, identity = %elector.config().identity, "waiting to lead");
    if !elector.acquire(&shutdown, || readiness.set(true)).await {
        return Ok(());
    }
    metrics.leader.set(1);
    // The controller stops when the process shuts down or when leadership is lost.
    let term = shutdown.child_token();
    let result = tokio::select! {
        held = elector.hold(&shutdown) => held,
        ran = run_controller(client, config.controller, metrics.clone(), term.clone()) => ran,
    };
    // The controller future is dropped by now, so no reconcile of this term is in flight.
    term.cancel();
    metrics.leader.set(0);
    match &result {
        Err(error) => tracing::error!(%error, "stopped leading"),
        // Shutting down: hand the lease over now rather than make the standby wait it out.
        Ok(()) => elector.release().await,
    }
    result
}
