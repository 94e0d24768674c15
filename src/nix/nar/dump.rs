//! Serializing a file tree, like `nix-store --dump`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::encoder::NarEncoder;
use super::error::NarWriteError;
use super::{NarSink, NarSummary};

/// Size of the buffer file contents are streamed through.
const BUF_LEN: usize = 64 * 1024;

/// Serializes `path` (a regular file, directory or symlink; symlinks are not followed) into
/// `sink`, producing exactly what `nix-store --dump` produces.
///
/// As in Nix: directory entries are sorted by the bytes of their names, a file is executable
/// when its owner-execute bit is set, and nothing else of the metadata (times, owners, other
/// mode bits) is recorded. File contents stream through a 64 KiB buffer, so memory does not
/// grow with file size. A file whose size changes while it is read is an error, since its
/// length has already been written.
pub fn dump_path(path: &Path, sink: &mut impl NarSink) -> Result<NarSummary, NarWriteError> {
    let mut enc = NarEncoder::new(sink);
    let mut buf = vec![0u8; BUF_LEN];
    dump_node(path, &mut enc, &mut buf)?;
    let (nar_size, hash) = enc.finish().map_err(sink_err)?;
    Ok(NarSummary { nar_size, nar_hash: hash.expect("a hashing encoder returns its hash") })
}

fn sink_err(error: io::Error) -> NarWriteError {
    NarWriteError::Sink { error }
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> NarWriteError + '_ {
    move |error| NarWriteError::Read { path: path.to_owned(), error }
}

/// Recursion depth equals directory depth, which the file system bounds (full paths are used,
/// so `PATH_MAX` applies).
fn dump_node<S: NarSink>(path: &Path, enc: &mut NarEncoder<S>, buf: &mut [u8]) -> Result<(), NarWriteError> {
    let meta = fs::symlink_metadata(path).map_err(read_err(path))?;
    let ft = meta.file_type();
    if ft.is_file() {
        dump_file(path, &meta, enc, buf)
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(read_err(path))?;
        enc.symlink(target.as_os_str().as_bytes()).map_err(sink_err)
    } else if ft.is_dir() {
        let mut names = fs::read_dir(path)
            .and_then(|entries| entries.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<OsString>>>())
            .map_err(read_err(path))?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        enc.directory_begin().map_err(sink_err)?;
        for name in names {
            enc.entry_begin(name.as_bytes()).map_err(sink_err)?;
            dump_node(&path.join(&name), enc, buf)?;
            enc.entry_end().map_err(sink_err)?;
        }
        enc.directory_end().map_err(sink_err)
    } else {
        let kind = if ft.is_socket() {
            "socket"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_char_device() {
            "character device"
        } else {
            "unknown"
        };
        Err(NarWriteError::UnsupportedFileType { path: path.to_owned(), kind })
    }
}

fn dump_file<S: NarSink>(
    path: &Path,
    lstat: &fs::Metadata,
    enc: &mut NarEncoder<S>,
    buf: &mut [u8],
) -> Result<(), NarWriteError> {
    let mut file = File::open(path).map_err(read_err(path))?;
    let meta = file.metadata().map_err(read_err(path))?;
    // `open` follows symlinks; if the file was swapped for something else since `lstat`, we
    // would be archiving a different object under this name.
    if !meta.is_file() || meta.ino() != lstat.ino() || meta.dev() != lstat.dev() {
        return Err(NarWriteError::FileChanged {
            path: path.to_owned(),
            expected: lstat.len(),
            detail: "it was replaced",
        });
    }
    let len = meta.len();
    let executable = meta.mode() & 0o100 != 0;
    enc.regular_begin(executable, len).map_err(sink_err)?;
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = read_some(&mut file, &mut buf[..want]).map_err(read_err(path))?;
        if n == 0 {
            return Err(NarWriteError::FileChanged { path: path.to_owned(), expected: len, detail: "it ended early" });
        }
        enc.regular_data(&buf[..n]).map_err(sink_err)?;
        left -= n as u64;
    }
    if read_some(&mut file, &mut buf[..1]).map_err(read_err(path))? != 0 {
        return Err(NarWriteError::FileChanged { path: path.to_owned(), expected: len, detail: "it grew" });
    }
    enc.regular_end().map_err(sink_err)
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
