//! A read position in an update that enforces the format's two size rules
//! in one place: a declared count must fit the bytes that follow it (yrs
//! reserves memory for whatever a count says: 40 bytes once asked for
//! 6.4 GB), and clocks and lengths fit in 32 bits (yrs keeps them in a
//! `u32` and larger ones wrap).

use crate::lib0::{Cursor, DecodeError};

/// One block ID: (client, clock).
pub(super) type Id = (u64, u64);

/// yrs keeps clocks and lengths in 32 bits (larger values wrap), so a
/// larger one would mean one thing to the walk and another to yrs.
pub(super) const MAX_CLOCK: u64 = u32::MAX as u64;

/// Why the walk stopped.
#[derive(Debug)]
pub(super) enum WalkError {
    /// Decodes, but is something the walk refuses; says what.
    Refused(String),
    /// Does not decode.
    Malformed(DecodeError),
}

impl From<DecodeError> for WalkError {
    fn from(err: DecodeError) -> Self {
        WalkError::Malformed(err)
    }
}

impl From<WalkError> for String {
    fn from(err: WalkError) -> Self {
        match err {
            WalkError::Refused(why) => why,
            WalkError::Malformed(err) => format!("the update does not decode: {err}"),
        }
    }
}

pub(super) type Walked<T> = Result<T, WalkError>;

/// Refuses with `why`.
pub(super) fn refuse<T>(why: impl Into<String>) -> Walked<T> {
    Err(WalkError::Refused(why.into()))
}

/// The bytes of one update and how far the walk has read.
pub(super) struct Reader<'a> {
    cursor: Cursor<'a>,
    /// The whole update's length (`cursor` may start part-way).
    len: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(update: &'a [u8]) -> Self {
        Self::at(update, 0)
    }

    /// Reads `update` from byte `offset` on (to read a part again).
    pub(super) fn at(update: &'a [u8], offset: usize) -> Self {
        let rest = update.get(offset..).unwrap_or_default();
        Self {
            cursor: Cursor::new(rest),
            len: update.len(),
        }
    }

    /// Where in the update the next byte is.
    pub(super) fn offset(&self) -> usize {
        self.len - self.cursor.remaining()
    }

    /// A count of entries that take at least `min_bytes` each: refused if
    /// the bytes left cannot hold that many. Every count the walk reads
    /// goes through here.
    pub(super) fn count(&mut self, what: &'static str, min_bytes: u64) -> Walked<u64> {
        let count = self.cursor.read_var_uint(what)?;
        let left = self.cursor.remaining();
        if count > left as u64 / min_bytes {
            return refuse(format!(
                "the update declares {count} entries ({what}) in {left} bytes"
            ));
        }
        Ok(count)
    }

    /// A clock or length: at most [`MAX_CLOCK`].
    pub(super) fn clock(&mut self, what: &'static str) -> Walked<u64> {
        let value = self.cursor.read_var_uint(what)?;
        if value > MAX_CLOCK {
            return refuse(format!(
                "the update does not decode: {what} {value} is past {MAX_CLOCK}"
            ));
        }
        Ok(value)
    }

    /// A block ID (an origin or a parent).
    pub(super) fn id(&mut self) -> Walked<Id> {
        Ok((self.var_uint("origin client")?, self.clock("origin clock")?))
    }

    pub(super) fn var_uint(&mut self, what: &'static str) -> Walked<u64> {
        Ok(self.cursor.read_var_uint(what)?)
    }

    pub(super) fn var_string(&mut self, what: &'static str) -> Walked<&'a str> {
        Ok(self.cursor.read_var_string(what)?)
    }

    pub(super) fn var_bytes(&mut self, what: &'static str) -> Walked<&'a [u8]> {
        Ok(self.cursor.read_var_bytes(what)?)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Walked<u8> {
        Ok(self.cursor.read_u8(what)?)
    }

    pub(super) fn skip(&mut self, len: usize, what: &'static str) -> Walked<()> {
        self.cursor.read_bytes(len, what)?;
        Ok(())
    }

    /// Fails unless every byte was read (yrs would ignore the rest unread).
    pub(super) fn finish(self) -> Walked<()> {
        Ok(self.cursor.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::refused;
    use super::*;

    /// yrs reserves memory for declared counts before reading them.
    #[test]
    fn counts_larger_than_the_bytes_are_refused() {
        // 2^30 values declared in a handful of bytes.
        let bomb = [
            1, 1, 1, 0, 0x08, 1, 1, b'a', 0x80, 0x80, 0x80, 0x80, 0x04, 126, 0,
        ];
        let err = check(&bomb).unwrap_err();
        assert!(err.contains("declares 1073741824 entries"), "{err}");
        // The same in the delete set.
        let bomb = [0, 0x80, 0x80, 0x80, 0x80, 0x04, 1, 1];
        assert!(check(&bomb).unwrap_err().contains("declares"));
    }

    #[test]
    fn a_count_may_use_exactly_the_bytes_left() {
        let mut reader = Reader::new(&[2, 0, 0, 0, 0]);
        assert_eq!(reader.count("pairs", 2).unwrap(), 2);
        let mut reader = Reader::new(&[3, 0, 0, 0, 0]);
        assert!(matches!(
            reader.count("pairs", 2),
            Err(WalkError::Refused(_))
        ));
    }

    /// Found in review: yrs keeps clocks and lengths in 32 bits; a GC
    /// block of length 2^32 + 5 was 5 long to yrs, so an item naming
    /// clock 100 of it passed as complete and went pending.
    #[test]
    fn regression_clocks_past_32_bits_meant_something_else_to_yrs() {
        let mut update = vec![1, 1, 1, 0, 0];
        crate::lib0::write_var_uint(&mut update, (1 << 32) + 5);
        update.push(0);
        assert!(refused(&update).contains("past 4294967295"));
    }

    /// yrs asserts that client IDs fit 53 bits (debug builds panic; release
    /// builds mask the rest away and take the block for another client's).
    /// lib0's varint reader refuses anything past 2^53 - 1, so updates never
    /// carried one; the room fuzz target found a state vector that did
    /// (`check_state_vector` now reads those too).
    #[test]
    fn regression_client_ids_past_53_bits_reached_yrs() {
        // One section of client 2^53 with one string item.
        let mut update = vec![1, 1];
        crate::lib0::write_var_uint(&mut update, 1 << 53);
        update.extend([0, 4, 1, 1, b'x', 1, b'y', 0]);
        assert!(refused(&update).contains("53 bits"));
        // The largest allowed client passes (as an empty-named root's text).
        let mut update = vec![1, 1];
        crate::lib0::write_var_uint(&mut update, (1 << 53) - 1);
        update.extend([0, 4, 1, 1, b'x', 1, b'y', 0]);
        assert!(check(&update).is_ok(), "{:?}", check(&update));
        // A deletion of client 2^60.
        let mut update = vec![0, 1];
        crate::lib0::write_var_uint(&mut update, 1 << 60);
        update.extend([1, 0, 1]);
        assert!(refused(&update).contains("53 bits"));
        // State vectors.
        let mut sv = vec![1];
        crate::lib0::write_var_uint(&mut sv, 1 << 60);
        sv.push(0);
        assert!(
            super::super::check_state_vector(&sv)
                .unwrap_err()
                .contains("53 bits")
        );
        assert!(super::super::check_state_vector(&[1, 5, 9]).is_ok());
        assert!(super::super::check_state_vector(&[0]).is_ok());
        assert!(
            super::super::check_state_vector(&[1, 5, 9, 0]).is_err(),
            "bytes left over"
        );
        assert!(
            super::super::check_state_vector(&[5, 1, 1]).is_err(),
            "count past the bytes"
        );
    }
}
