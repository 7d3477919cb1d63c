//! The Corral wire protocol: every `.proto` file lives in `proto/` and is compiled here.
//!
//! * `corral.v1.Agent` — the one long-lived session an agent opens with the registry.
//! * `corral.v1.Admin` — the admin API the `registry` CLI talks to.
//!
//! Beside the wire: [`names`], the name rules both ends check (and the one parser of
//! `APP.SERVER.ADAPTER`), [`locator`], how a list of registry addresses is written, and
//! [`text`], how error messages show user input without echoing it whole. They live here
//! rather than in `corral_common` because the client library uses them too, and it
//! depends on this crate alone.

/// The protocol version an agent announces in its first message. The registry refuses
/// versions it does not speak with a message naming both. Version 3: the agent sends its
/// reports in `Reports` batches.
pub const PROTOCOL_VERSION: u32 = 3;

pub mod codec;
pub mod locator;
pub mod names;
pub mod text;
pub mod wire;

mod hash;
pub use hash::spec_hash;

/// Every Corral `.proto` file as an encoded `FileDescriptorSet`, for the gRPC reflection
/// service (grpcurl lists and calls the API with it, without the `.proto` files).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/corral_descriptor.bin"));

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, clippy::unwrap_used)]
    tonic::include_proto!("corral.v1");
}
