//! ModelFleet's gRPC API, `modelfleet.engine.v1` (`proto/modelfleet/engine/v1/`), generated
//! at build time: the engine serves it, the load generator and the harness call it.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod v1 {
    tonic::include_proto!("modelfleet.engine.v1");

    /// The encoded descriptors of this package, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("modelfleet_engine_v1_descriptor");
}
