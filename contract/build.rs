//! Compiles `proto/gatehouse/v1/*.proto` with protox (pure Rust), so building needs no `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "../proto/gatehouse/v1/uplink.proto",
        "../proto/gatehouse/v1/command.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["../proto"])?;
    // Serialize: `gatehouse-company tail` prints what gateways send as JSON lines.
    prost_build::Config::new()
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
