//! Unpacking a NAR into the file system, like `nix-store --restore`.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::NarError;
use super::parser::{parse, NarVisitor};
use super::NarSummary;

/// Unpacks the NAR read from `r` at `dest`, which must not exist (its parent must).
///
/// Modes follow `nix-store --restore`: files are created with 0666 and directories with 0777,
/// both minus the umask, and an executable file then gets all three execute bits added (so 0755
/// and 0644 under the usual umask 022). Nothing is created outside `dest`: the parser has
/// already rejected names with `/`, `.` and `..`, entries are unique, and every object is
/// created anew (`O_EXCL`), never opened through an existing symlink.
///
/// On error the partly restored tree is left in place for the caller to remove; the error's
/// entry path says where it stopped.
pub fn restore<R: Read>(r: R, dest: &Path) -> Result<NarSummary, NarError> {
    let mut restorer = Restorer { path: dest.to_owned(), file: None };
    parse(r, &mut restorer)
}

struct Restorer {
    /// The object being written.
    path: PathBuf,
    /// The open file and whether it is executable, between `regular_begin` and `regular_end`.
    file: Option<(File, bool)>,
}

impl Restorer {
    /// Adds the file system path to an error, which otherwise would only name the NAR entry.
    fn ctx<T>(&self, what: &str, r: io::Result<T>) -> io::Result<T> {
        r.map_err(|e| io::Error::new(e.kind(), format!("cannot {what} {}: {e}", self.path.display())))
    }
}

impl NarVisitor for Restorer {
    fn regular_begin(&mut self, executable: bool, _len: u64, _offset: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).create_new(true).mode(0o666).open(&self.path);
        let file = self.ctx("create", file)?;
        self.file = Some((file, executable));
        Ok(())
    }

    fn regular_data(&mut self, data: &[u8]) -> io::Result<()> {
        let r = match &mut self.file {
            Some((file, _)) => file.write_all(data),
            None => Err(io::Error::other("contents outside a file")),
        };
        self.ctx("write", r)
    }

    fn regular_end(&mut self) -> io::Result<()> {
        if let Some((file, executable)) = self.file.take() {
            if executable {
                let r = file.metadata().and_then(|meta| {
                    let mode = meta.permissions().mode() | 0o111;
                    file.set_permissions(fs::Permissions::from_mode(mode))
                });
                self.ctx("chmod", r)?;
            }
        }
        Ok(())
    }

    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        let r = std::os::unix::fs::symlink(OsStr::from_bytes(target), &self.path);
        self.ctx("create symlink", r)
    }

    fn directory_begin(&mut self) -> io::Result<()> {
        let r = fs::create_dir(&self.path);
        self.ctx("create directory", r)
    }

    fn entry_begin(&mut self, name: &[u8]) -> io::Result<()> {
        self.path.push(OsStr::from_bytes(name));
        Ok(())
    }

    fn entry_end(&mut self) -> io::Result<()> {
        self.path.pop();
        Ok(())
    }
}
