//! The ModelFleet operator: the `ModelDeployment` API and the controller that reconciles it.

pub mod api;
pub mod crdgen;
pub mod desired;
pub mod error;

pub use error::{Error, Result};
