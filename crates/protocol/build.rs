//! Generates the wire types from `proto/meshtalk.proto` (room messages)
//! and `proto/peer_record.proto` (peer discovery records) with a pure-Rust
//! protobuf compiler, so no system `protoc` is needed.

fn main() {
    let protos = ["proto/meshtalk.proto", "proto/peer_record.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = match protox::compile(protos, ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(e) => {
            eprintln!("error: cannot compile {protos:?}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = prost_build::Config::new().compile_fds(descriptors) {
        eprintln!("error: cannot generate Rust code for {protos:?}: {e}");
        std::process::exit(1);
    }
}
