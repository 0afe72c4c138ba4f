//! `gatehouse-company`: parses the command line, runs it, maps errors to exit codes.
use clap::Parser;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,rumqttc=warn,rumqttd=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = gatehouse_company::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-company: {e:#}");
            ExitCode::FAILURE
        }
    }
}
