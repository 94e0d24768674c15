//! A minimal safe wrapper over the C zlib (`libz-sys`): raw deflate with every `deflateInit2` parameter,
//! raw inflate, and CRC-32.
//!
//! We call zlib directly rather than through `flate2` because a recipe must name `memLevel` and the
//! strategy as well as the level, and `flate2` exposes only the level. Each `z_stream` is boxed: zlib keeps
//! a pointer back to it in its internal state and refuses a stream that has moved.
use std::os::raw::{c_int, c_uint};

use libz_sys as z;

/// Most bytes handed to zlib in one call (`avail_in`/`avail_out` are 32-bit).
const MAX_CALL: usize = 1 << 30;

unsafe extern "C" fn zalloc(_opaque: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: calloc with any sizes is sound; it returns null on overflow or exhaustion, which zlib handles.
    unsafe { libc::calloc(items as libc::size_t, size as libc::size_t) }
}

unsafe extern "C" fn zfree(_opaque: z::voidpf, ptr: z::voidpf) {
    // SAFETY: zlib frees only pointers it received from `zalloc`.
    unsafe { libc::free(ptr) }
}

/// A zeroed stream with our allocator, ready for `deflateInit2_`/`inflateInit2_` (tests use it too).
pub(crate) fn new_stream() -> Box<z::z_stream> {
    Box::new(z::z_stream {
        next_in: std::ptr::null_mut(),
        avail_in: 0,
        total_in: 0,
        next_out: std::ptr::null_mut(),
        avail_out: 0,
        total_out: 0,
        msg: std::ptr::null_mut(),
        state: std::ptr::null_mut(),
        zalloc,
        zfree,
        opaque: std::ptr::null_mut(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    })
}

/// The version string of the linked zlib, e.g. `1.2.13`.
pub(crate) fn version() -> String {
    // SAFETY: zlibVersion returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(z::zlibVersion()) }.to_string_lossy().into_owned()
}

/// Updates a CRC-32 (the gzip trailer's) with `data`.
pub(crate) fn crc32(mut crc: u32, data: &[u8]) -> u32 {
    for piece in data.chunks(MAX_CALL) {
        // SAFETY: the pointer and length describe a live slice; zlib only reads it.
        crc = unsafe { z::crc32(crc as z::uLong, piece.as_ptr(), piece.len() as c_uint) } as u32;
    }
    crc
}

/// A raw deflate compressor (no zlib or gzip wrapper).
pub(crate) struct Deflate {
    strm: Box<z::z_stream>,
}

// SAFETY: the stream owns its zlib state exclusively; zlib keeps no thread-local state.
unsafe impl Send for Deflate {}

impl Deflate {
    /// `deflateInit2(level, Z_DEFLATED, -window_bits, mem_level, strategy)`; `None` if zlib rejects them.
    pub(crate) fn new(level: u8, window_bits: u8, mem_level: u8, strategy: u8) -> Option<Deflate> {
        let mut strm = new_stream();
        // SAFETY: strm is a fresh, boxed z_stream with valid allocators; the version and size are zlib's own.
        let rc = unsafe {
            z::deflateInit2_(
                &mut *strm,
                c_int::from(level),
                z::Z_DEFLATED,
                -c_int::from(window_bits),
                c_int::from(mem_level),
                c_int::from(strategy),
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        (rc == z::Z_OK).then_some(Deflate { strm })
    }

    /// Compresses all of `input` (no flush), appending whatever zlib emits to `out`.
    pub(crate) fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        for piece in input.chunks(MAX_CALL) {
            self.run(piece, z::Z_NO_FLUSH, out)?;
        }
        Ok(())
    }

    /// Ends the stream, appending the rest of the output.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.run(&[], z::Z_FINISH, out)
    }

    fn run(&mut self, input: &[u8], flush: c_int, out: &mut Vec<u8>) -> Result<(), String> {
        self.strm.next_in = input.as_ptr() as *mut u8;
        self.strm.avail_in = input.len() as c_uint;
        loop {
            out.reserve(64 * 1024);
            let spare = (out.capacity() - out.len()).min(MAX_CALL);
            let before = out.len();
            // SAFETY: next_out points at `spare` writable bytes of out's allocation past its length; zlib
            // writes at most avail_out bytes there and reads only avail_in bytes of `input`, which outlives
            // the call. We then extend the length by exactly the bytes zlib reports written.
            let rc = unsafe {
                self.strm.next_out = out.as_mut_ptr().add(before);
                self.strm.avail_out = spare as c_uint;
                let rc = z::deflate(&mut *self.strm, flush);
                let written = spare - self.strm.avail_out as usize;
                out.set_len(before + written);
                rc
            };
            match rc {
                z::Z_STREAM_END => break,
                z::Z_OK | z::Z_BUF_ERROR => {
                    if flush == z::Z_NO_FLUSH && self.strm.avail_in == 0 && self.strm.avail_out != 0 {
                        break;
                    }
                }
                other => return Err(format!("zlib deflate returned {other}")),
            }
        }
        self.strm.next_in = std::ptr::null_mut();
        self.strm.avail_in = 0;
        Ok(())
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by deflateInit2_ and is ended once.
        unsafe { z::deflateEnd(&mut *self.strm) };
    }
}

/// What one [`Inflate::inflate`] call did.
pub(crate) struct Step {
    /// Input bytes consumed.
    pub consumed: usize,
    /// The deflate stream's last block has been decoded.
    pub done: bool,
}

/// A raw inflater (no zlib or gzip wrapper).
pub(crate) struct Inflate {
    strm: Box<z::z_stream>,
}

// SAFETY: as for Deflate.
unsafe impl Send for Inflate {}

impl Inflate {
    pub(crate) fn new() -> Option<Inflate> {
        let mut strm = new_stream();
        // SAFETY: as in Deflate::new.
        let rc =
            unsafe { z::inflateInit2_(&mut *strm, -15, z::zlibVersion(), std::mem::size_of::<z::z_stream>() as c_int) };
        (rc == z::Z_OK).then_some(Inflate { strm })
    }

    /// Decodes from `input`, appending at most `max_out` bytes to `out`. `Err` on corrupt data.
    pub(crate) fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>, max_out: usize) -> Result<Step, String> {
        let input = &input[..input.len().min(MAX_CALL)];
        let max_out = max_out.clamp(1, MAX_CALL);
        out.reserve(max_out);
        let before = out.len();
        // SAFETY: as in Deflate::run: zlib reads `input` and writes at most max_out reserved bytes.
        let (rc, consumed) = unsafe {
            self.strm.next_in = input.as_ptr() as *mut u8;
            self.strm.avail_in = input.len() as c_uint;
            self.strm.next_out = out.as_mut_ptr().add(before);
            self.strm.avail_out = max_out as c_uint;
            let rc = z::inflate(&mut *self.strm, z::Z_NO_FLUSH);
            out.set_len(before + (max_out - self.strm.avail_out as usize));
            (rc, input.len() - self.strm.avail_in as usize)
        };
        self.strm.next_in = std::ptr::null_mut();
        self.strm.avail_in = 0;
        match rc {
            z::Z_STREAM_END => Ok(Step { consumed, done: true }),
            z::Z_OK | z::Z_BUF_ERROR => Ok(Step { consumed, done: false }),
            other => Err(format!("zlib inflate returned {other}")),
        }
    }
}

impl Drop for Inflate {
    fn drop(&mut self) {
        // SAFETY: initialised by inflateInit2_, ended once.
        unsafe { z::inflateEnd(&mut *self.strm) };
    }
}
