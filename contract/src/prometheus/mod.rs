//! The Prometheus HTTP API: instant-query answers, and (feature `prometheus-client`) a
//! client that asks them.
//!
//! The operator's autoscaler reads one number per ModelDeployment from it; the harness
//! reads series to prove what was scraped. Both go through this one parser.

mod answer;
#[cfg(feature = "prometheus-client")]
mod client;

pub use answer::{Sample, parse_answer, percent_encode, sum};
#[cfg(feature = "prometheus-client")]
pub use client::{InvalidUrl, PrometheusClient, QueryError};
