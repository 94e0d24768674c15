//! `nixdag man DIR`: the manual pages, `nixdag.1` and one `nixdag-COMMAND.1` per command (and per
//! `peer` subcommand), rendered from the clap definitions by clap_mangen. A release step, not a user
//! command: hidden from `--help`; the flake's postInstall runs it and installs the pages.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(args: ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(super::command(), &args.dir)
        .with_context(|| format!("writing the manual pages into {}", args.dir.display()))
}
