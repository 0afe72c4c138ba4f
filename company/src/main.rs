//! `gatehouse-company`: parses the command line, runs it, maps errors to exit codes.
use clap::Parser;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = gatehouse_company::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-company: {e:#}");
            ExitCode::FAILURE
        }
    }
}
