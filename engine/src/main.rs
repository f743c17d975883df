//! `modelfleet-engine`: wires the command line to the engine.

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server's life (loading, ready, draining) is worth logging; one-shot commands keep
    // stderr quiet unless RUST_LOG asks.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Generate(args) => cli::generate::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Fetch(args) => modelfleet_fetch::run(args)
            .map(drop)
            .map_err(anyhow::Error::from),
        Command::Serve(args) => cli::serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("modelfleet-engine: {error:#}");
            ExitCode::FAILURE
        }
    }
}
