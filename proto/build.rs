//! Compiles every `.proto` under `proto/` with the pure-Rust `protox` compiler, so building
//! Corral never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/corral/v1/agent.proto",
        "proto/corral/v1/admin.proto",
        "proto/corral/v1/query.proto",
        "proto/corral/v1/types.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // The encoded descriptors are served by the registry's gRPC reflection service, so
    // grpcurl and similar tools can list and call the API without the .proto files.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("corral_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Package chunks: the registry shares one read of a chunk between the downloads
        // that send it, and the agent takes it out of the receive buffer without a copy.
        .bytes(".corral.v1.DownloadChunk.data")
        // Endpoint metadata: in key order, so every answer (JSON, templates) is stable.
        .btree_map(".corral.v1.Endpoint.meta")
        // Smaller stream buffers than tonic's 8 KiB (src/codec.rs says why).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
