//! `nixdag forget`: drop manifests; `gc` then frees what nothing else uses.

use anyhow::{bail, Result};
use clap::Args;

use super::{parse_file_hash, parse_nar_hash};
use crate::store::Store;

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ForgetArgs {
    /// A NAR (and the store paths recorded with it), by NarHash
    #[arg(long, value_name = "H")]
    nar_hash: Option<String>,
    /// A file, by any of its hashes
    #[arg(long, value_name = "H")]
    file_hash: Option<String>,
}

pub fn run(store: &Store, args: ForgetArgs) -> Result<()> {
    let removed = if let Some(h) = &args.nar_hash {
        store.forget_nar(&parse_nar_hash(h)?)?
    } else if let Some(h) = &args.file_hash {
        store.forget_file(&parse_file_hash(h)?)?
    } else {
        false
    };
    if !removed {
        bail!("nothing in the store matches");
    }
    Ok(())
}
