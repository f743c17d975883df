//! `modelfleet-engine`: wires the command line to the engine.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => cli::generate::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Fetch(args) => modelfleet_engine::fetch::run(args)
            .map(drop)
            .map_err(anyhow::Error::from),
        Command::Serve => Err(anyhow::anyhow!(
            "this subcommand is not yet available in this build of modelfleet-engine"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("modelfleet-engine: {error:#}");
            ExitCode::FAILURE
        }
    }
}
