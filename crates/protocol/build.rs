//! Generates the wire types from `proto/meshtalk.proto` with a pure-Rust
//! protobuf compiler, so no system `protoc` is needed.

fn main() {
    let proto = "proto/meshtalk.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = match protox::compile([proto], ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(e) => {
            eprintln!("error: cannot compile {proto}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = prost_build::Config::new().compile_fds(descriptors) {
        eprintln!("error: cannot generate Rust code for {proto}: {e}");
        std::process::exit(1);
    }
}
