//! The `nixdag` binary: parse, run, report. Everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    nixdag::cli::tune_allocator();
    // Diagnostics go to stderr as `LEVEL span{fields}: message`; NIXDAG_LOG filters (default: info).
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIXDAG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    let cli = nixdag::cli::Cli::parse();
    match nixdag::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the whole context chain, outermost first.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
