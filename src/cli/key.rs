//! `nixdag key show`: the gateway's public key, for `trusted-public-keys`.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::gateway::key;

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Print the public key (creating the key pair in the store if there is none yet)
    Show,
}

pub fn run(store_dir: &std::path::Path, args: KeyArgs) -> Result<()> {
    match args.command {
        KeyCommand::Show => {
            std::fs::create_dir_all(store_dir)?;
            println!("{}", key::load_or_create(store_dir, None)?.public());
        }
    }
    Ok(())
}
