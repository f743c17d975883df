//! The ModelFleet operator: the `ModelDeployment` API and the controller that reconciles it.
