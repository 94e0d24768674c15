//! The `nixdag` binary: parse, run, report. Everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    nixdag::cli::tune_allocator();
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
