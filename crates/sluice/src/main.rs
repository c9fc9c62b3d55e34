//! The `sluice` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sluice::cli::Cli::parse();
    if let Err(e) = sluice::logging::init() {
        eprintln!("sluice: {e}");
        return ExitCode::from(sluice::cli::EXIT_CONFIG);
    }
    sluice::cli::main(cli)
}
