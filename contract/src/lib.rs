//! What ModelFleet's operator, engine and test harness must agree on, each defined once.
//!
//! - [`ports`]: the engine's gRPC and HTTP ports and their names.
//! - [`serve`]: the `modelfleet-engine serve` flags as a typed value; the operator turns it
//!   into arguments, the engine's command line parses it with this same code.
//! - [`metrics`]: the engine's series and their labels, and the labels Prometheus's
//!   relabelling puts on them.
//! - [`labels`]: the labels on engine pods and the field managers that apply objects.
//! - [`prometheus`]: the Prometheus HTTP API's instant-query answer and (feature
//!   `prometheus-client`) a client for it.
//!
//! A change here changes every side at once; the tests beside each module prove that what
//! one side writes, the other reads.

pub mod labels;
pub mod metrics;
pub mod ports;
pub mod prometheus;
pub mod serve;
