//! Compiles Hearth's protos. The A2A model (`lf.a2a.v1`) is not generated
//! again: it maps onto the official SDK's types in `a2a-pb`; the vendored
//! `vendor/a2a.proto` is only there so protoc can resolve the imports.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // set_var is unsafe in edition 2024; build scripts run single-threaded.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc);
        }
    }
    let files = [
        "hearth/v1/bus.proto",
        "hearth/v1/engine.proto",
        "hearth/v1/toolhost.proto",
        "hearth/v1/agent.proto",
        "hearth/v1/memory.proto",
        "hearth/v1/learning.proto",
        "hearth/v1/health.proto",
        "hearth/v1/work.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        .extern_path(".lf.a2a.v1", "::a2a_pb::proto")
        .bytes(".hearth.v1")
        .compile_protos(&files, &[".", "vendor"])?;
    Ok(())
}
