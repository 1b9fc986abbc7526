//! A small safe wrapper over zlib's inflate (libz-rs-sys, pure Rust), for
//! what flate2 does not expose: stopping at deflate block boundaries
//! (`Z_BLOCK`), reading the window, and restarting mid-stream with
//! `inflatePrime` and `inflateSetDictionary` (zran-style random access).

use libz_rs_sys as z;
use std::ffi::c_int;

pub const WINDOW: usize = 32 * 1024;
/// windowBits for a gzip member with its header and trailer.
pub const GZIP: c_int = 15 + 16;
/// windowBits for raw deflate data (restart from a checkpoint).
pub const RAW: c_int = -15;

pub struct Inflater {
    // zlib keeps a pointer back to the stream, so it must not move: boxed.
    strm: Box<z::z_stream>,
}

// SAFETY: the stream's state belongs to it alone (allocated by zlib for this
// stream, pointers into caller buffers cleared after each call), and zlib has
// no thread affinity, so it may be moved to and used from another thread.
unsafe impl Send for Inflater {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    StreamEnd,
    /// No progress possible: needs more input or more output space.
    BufError,
}

impl Inflater {
    pub fn new(window_bits: c_int) -> Result<Inflater, String> {
        let mut strm = Box::new(z::z_stream::default());
        // SAFETY: strm is a valid, default-initialized z_stream (zalloc/zfree
        // set to the defaults) and the version/size match the linked library.
        let ret = unsafe {
            z::inflateInit2_(
                &mut *strm,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if ret != z::Z_OK {
            return Err(format!("inflateInit2 failed ({ret})"));
        }
        Ok(Inflater { strm })
    }

    /// Inflates from `input` into `output`; returns (consumed, produced, status).
    pub fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: c_int,
    ) -> Result<(usize, usize, Status), String> {
        let avail_in = input.len().min(u32::MAX as usize) as u32;
        let avail_out = output.len().min(u32::MAX as usize) as u32;
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        // SAFETY: next_in/next_out point into live slices of the given lengths
        // for the duration of this call; the stream was initialized in new().
        let ret = unsafe { z::inflate(&mut *self.strm, flush) };
        let consumed = (avail_in - self.strm.avail_in) as usize;
        let produced = (avail_out - self.strm.avail_out) as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        let status = match ret {
            z::Z_OK => Status::Ok,
            z::Z_STREAM_END => Status::StreamEnd,
            z::Z_BUF_ERROR => Status::BufError,
            z::Z_NEED_DICT => return Err("stream needs a preset dictionary".into()),
            _ => return Err(self.message(ret)),
        };
        Ok((consumed, produced, status))
    }

    fn message(&self, ret: c_int) -> String {
        if self.strm.msg.is_null() {
            return format!("inflate error {ret}");
        }
        // SAFETY: zlib sets msg to a NUL-terminated static string or leaves it null.
        unsafe { std::ffi::CStr::from_ptr(self.strm.msg) }
            .to_string_lossy()
            .into_owned()
    }

    /// zlib's data_type: unused bits of the last input byte, +64 in the last
    /// block, +128 right after a block ended.
    pub fn data_type(&self) -> c_int {
        self.strm.data_type
    }

    /// Feeds the `bits` low bits of `value` before the next input byte.
    pub fn prime(&mut self, bits: c_int, value: c_int) -> Result<(), String> {
        // SAFETY: the stream was initialized in new().
        match unsafe { z::inflatePrime(&mut *self.strm, bits, value) } {
            z::Z_OK => Ok(()),
            r => Err(format!("inflatePrime failed ({r})")),
        }
    }

    pub fn set_dictionary(&mut self, dict: &[u8]) -> Result<(), String> {
        // SAFETY: dict is a live slice of the given length; the stream was initialized.
        match unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), dict.len() as u32) }
        {
            z::Z_OK => Ok(()),
            r => Err(format!("inflateSetDictionary failed ({r})")),
        }
    }

    /// The current sliding window (the last up to 32 KiB of output).
    pub fn dictionary(&self) -> Vec<u8> {
        let mut buf = vec![0u8; WINDOW];
        let mut len: u32 = 0;
        // SAFETY: buf has room for the 32 KiB zlib may copy; len receives its length.
        let ret = unsafe { z::inflateGetDictionary(&*self.strm, buf.as_mut_ptr(), &mut len) };
        if ret != z::Z_OK {
            return Vec::new();
        }
        buf.truncate(len as usize);
        buf
    }

    /// Starts a new gzip member with the same settings.
    pub fn reset(&mut self) -> Result<(), String> {
        // SAFETY: the stream was initialized in new().
        match unsafe { z::inflateReset(&mut *self.strm) } {
            z::Z_OK => Ok(()),
            r => Err(format!("inflateReset failed ({r})")),
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialized in new() and is ended once.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

pub fn crc32(crc: u32, data: &[u8]) -> u32 {
    // SAFETY: data is a live slice of the given length.
    unsafe { z::crc32_z(crc as _, data.as_ptr(), data.len()) as u32 }
}
