//! The tar-aware splitter (`chunk::TarSplit`) watches decompressed tarball content: untrusted bytes.
//!
//! Properties: it never panics; every byte reaches the chunker unchanged and in order, however the input
//! is cut into writes; announced contents begin and end in pairs, each end at most the announced length
//! after its begin (exactly, but for a stream cut short: the unit tests check real archives).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nixdag::chunk::TarSplit;
use nixdag::nix::nar::NarSink;

#[derive(Default)]
struct Log {
    bytes: Vec<u8>,
    open: Option<(u64, u64)>,
}

impl NarSink for Log {
    fn write_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.bytes.extend_from_slice(b);
        Ok(())
    }
    fn file_contents_begin(&mut self, len: u64) -> std::io::Result<()> {
        assert!(self.open.is_none(), "contents begin inside contents");
        self.open = Some((self.bytes.len() as u64, len));
        Ok(())
    }
    fn file_contents_end(&mut self) -> std::io::Result<()> {
        let (at, len) = self.open.take().expect("contents end without a begin");
        assert!(self.bytes.len() as u64 - at <= len, "contents end late");
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let step = usize::from(cut).max(1) * 7;
    let mut t = TarSplit::new(Log::default());
    for piece in data.chunks(step) {
        t.write(piece).unwrap();
    }
    let log = t.finish().unwrap();
    assert!(log.open.is_none(), "contents left open");
    assert!(log.bytes == data, "bytes changed on the way through");
});
