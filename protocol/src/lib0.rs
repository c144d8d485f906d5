//! The lib0 binary encoding used by Yjs: unsigned LEB128 integers
//! ("varUint") and length-prefixed byte strings.
//!
//! Only the pieces the y-websocket protocol needs live here. Decoding is
//! strict: a truncated buffer, an integer wider than 53 bits (JavaScript's
//! safe range) or a string that is not UTF-8 is an error, never a guess.

use thiserror::Error;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("frame ended early while reading {0}")]
    UnexpectedEnd(&'static str),
    #[error("integer does not fit in 53 bits")]
    IntegerTooLarge,
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("awareness state of client {0} is not valid JSON")]
    InvalidAwarenessJson(u64),
    #[error("awareness update names client {0} twice")]
    DuplicateAwarenessClient(u64),
    #[error("unknown Quire extension message {0}")]
    UnknownExtension(u64),
    #[error("fragmented frame larger than the limit")]
    FragmentTooLarge,
    #[error("fragment does not continue the frame being reassembled")]
    FragmentMismatch,
}

/// Largest integer JavaScript can represent exactly; lib0 never writes more.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Appends `value` as a varUint.
pub fn write_var_uint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Appends a length-prefixed byte string.
pub fn write_var_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    write_var_uint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Appends a length-prefixed UTF-8 string.
pub fn write_var_string(buf: &mut Vec<u8>, s: &str) {
    write_var_bytes(buf, s.as_bytes());
}

/// A read position in a borrowed frame.
#[derive(Debug)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub fn read_var_uint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            // Eight 7-bit groups already exceed 53 bits; a ninth is never valid.
            if shift > 49 {
                return Err(DecodeError::IntegerTooLarge);
            }
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or(DecodeError::UnexpectedEnd(what))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if value > MAX_SAFE_INTEGER {
            return Err(DecodeError::IntegerTooLarge);
        }
        Ok(value)
    }

    pub fn read_var_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.read_var_uint(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::UnexpectedEnd(what))?;
        self.read_bytes(len, what)
    }

    pub fn read_var_string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.read_var_bytes(what)?).map_err(|_| DecodeError::InvalidUtf8)
    }

    pub fn read_u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.read_bytes(1, what)?[0])
    }

    /// The next `len` bytes as they are.
    pub fn read_bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_uint_round_trips_at_every_width() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            MAX_SAFE_INTEGER,
        ] {
            let mut buf = Vec::new();
            write_var_uint(&mut buf, value);
            let mut cursor = Cursor::new(&buf);
            assert_eq!(cursor.read_var_uint("n").unwrap(), value);
            cursor.finish().unwrap();
        }
    }

    #[test]
    fn var_uint_matches_lib0_bytes() {
        let mut buf = Vec::new();
        write_var_uint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
    }

    #[test]
    fn over_wide_integers_are_rejected() {
        let mut buf = Vec::new();
        write_var_uint(&mut buf, MAX_SAFE_INTEGER + 1);
        assert_eq!(
            Cursor::new(&buf).read_var_uint("n"),
            Err(DecodeError::IntegerTooLarge)
        );
        let endless = [0xff; 12];
        assert_eq!(
            Cursor::new(&endless).read_var_uint("n"),
            Err(DecodeError::IntegerTooLarge)
        );
    }

    #[test]
    fn truncated_byte_strings_are_rejected() {
        let mut buf = Vec::new();
        write_var_bytes(&mut buf, b"hello");
        buf.truncate(4);
        assert_eq!(
            Cursor::new(&buf).read_var_bytes("update"),
            Err(DecodeError::UnexpectedEnd("update"))
        );
    }
}
