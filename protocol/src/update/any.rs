//! lib0's self-describing values (`readAny` in lib0/decoding.js), skipped
//! without building them, and nested at most [`MAX_VALUE_DEPTH`] deep.

use super::format::*;
use super::reader::{Reader, Walked, refuse};

/// How deep values may nest (an array in an object in …). Deeper than any
/// document needs; bounds the recursion here and keeps yrs' decoder, which
/// recurses without a limit, from overflowing the stack (it did at about
/// 200,000 levels, aborting the server).
pub const MAX_VALUE_DEPTH: u32 = 64;

/// Skips one value; `depth` is how many containers hold it.
pub(super) fn skip_any(reader: &mut Reader, depth: u32) -> Walked<()> {
    if depth > MAX_VALUE_DEPTH {
        return refuse("values nested too deeply");
    }
    match reader.u8("value tag")? {
        ANY_UNDEFINED | ANY_NULL | ANY_FALSE | ANY_TRUE => {}
        ANY_INTEGER => while reader.u8("integer")? & 0x80 != 0 {},
        ANY_FLOAT32 => reader.skip(4, "float32")?,
        ANY_FLOAT64 | ANY_BIGINT => reader.skip(8, "float64")?,
        ANY_STRING | ANY_UINT8ARRAY => {
            reader.var_bytes("string")?;
        }
        ANY_OBJECT => {
            for _ in 0..reader.count("object size", 2)? {
                reader.var_string("object key")?;
                skip_any(reader, depth + 1)?;
            }
        }
        ANY_ARRAY => {
            for _ in 0..reader.count("array size", 1)? {
                skip_any(reader, depth + 1)?;
            }
        }
        other => {
            return refuse(format!(
                "the update does not decode: unknown value tag {other}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{any_item, refused};
    use super::*;

    /// yrs decodes nested values recursively; deep enough nesting
    /// overflowed the stack and aborted the whole server.
    #[test]
    fn values_nested_deeper_than_the_limit_are_refused_before_yrs() {
        let mut nested = Vec::new();
        for _ in 0..200_000 {
            nested.extend_from_slice(&[ANY_ARRAY, 1]); // an array of one element
        }
        nested.push(ANY_NULL);
        let update = any_item(&nested);
        let err = check(&update).unwrap_err();
        assert!(err.contains("nested too deeply"), "{err}");
        // What a document applies goes through the same walk.
        assert!(refused(&update).contains("nested too deeply"));
        // Shallow nesting is fine.
        check(&any_item(&[ANY_ARRAY, 1, ANY_ARRAY, 1, ANY_NULL])).unwrap();
    }

    #[test]
    fn the_limit_itself_is_allowed() {
        let mut at_limit = Vec::new();
        for _ in 0..MAX_VALUE_DEPTH {
            at_limit.extend_from_slice(&[ANY_ARRAY, 1]);
        }
        at_limit.push(ANY_NULL);
        check(&any_item(&at_limit)).unwrap();
        let mut past = vec![ANY_ARRAY, 1];
        past.extend_from_slice(&at_limit);
        assert!(
            check(&any_item(&past))
                .unwrap_err()
                .contains("nested too deeply")
        );
    }

    #[test]
    fn every_value_tag_is_skipped_by_its_size() {
        let mut values = vec![ANY_UNDEFINED, ANY_NULL, ANY_FALSE, ANY_TRUE];
        values.extend_from_slice(&[ANY_INTEGER, 0x81, 0x80, 0x01]);
        values.push(ANY_FLOAT32);
        values.extend_from_slice(&1.5f32.to_be_bytes());
        values.push(ANY_FLOAT64);
        values.extend_from_slice(&0.1f64.to_be_bytes());
        values.push(ANY_BIGINT);
        values.extend_from_slice(&(-5i64).to_be_bytes());
        values.extend_from_slice(&[ANY_STRING, 2, b'h', b'i']);
        values.extend_from_slice(&[ANY_UINT8ARRAY, 3, 1, 2, 3]);
        values.extend_from_slice(&[ANY_OBJECT, 1, 1, b'k', ANY_ARRAY, 1, ANY_NULL]);
        let mut reader = Reader::new(&values);
        for _ in 0..11 {
            skip_any(&mut reader, 0).unwrap();
        }
        reader.finish().unwrap();
        let mut unknown = Reader::new(&[115]);
        let err = String::from(skip_any(&mut unknown, 0).unwrap_err());
        assert!(err.contains("unknown value tag 115"), "{err}");
    }
}
