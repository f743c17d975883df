//! The CUDA backend. Without a GPU (CI): every kernel source compiles with NVRTC and
//! assembles with ptxas for sm_80 and sm_90. With one (scripts/gpu-check.sh): each kernel
//! equals the CPU kernel on random inputs, the model equals the golden fixtures, and a
//! sequence's output does not depend on its batch. Device tests say why they skip when
//! there is no GPU; `MODELFLEET_REQUIRE_GPU=1` makes skipping a failure.
#![cfg(feature = "cuda")]

#[path = "cuda/support.rs"]
mod support;

#[path = "cuda/compile.rs"]
mod compile;

#[path = "cuda/kernels.rs"]
mod kernels;

#[path = "cuda/model.rs"]
mod model;

#[path = "cuda/startup.rs"]
mod startup;
