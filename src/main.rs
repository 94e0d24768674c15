//! The `nixdag` binary. Everything lives in the library; the command line is its private `cli` module.

fn main() -> std::process::ExitCode {
    nixdag::cli_main()
}
