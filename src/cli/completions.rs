//! `nixdag completions SHELL`: a shell completion script on stdout, generated from the same clap
//! definitions the binary parses with, so it never lags behind a flag. Packagers install its output
//! (the flake's postInstall does); users may `source <(nixdag completions bash)`.

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    shell: clap_complete::Shell,
}

pub fn run(args: CompletionsArgs) -> Result<()> {
    use std::io::Write;
    let mut cmd = super::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "nixdag", &mut out);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).and_then(|_| stdout.flush()).context("writing the completion script")
}
