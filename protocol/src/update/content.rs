//! An item's content: how many clock ticks it spans, read past without
//! building it. Two kinds that yrs and Yjs read differently are refused
//! rather than guessed: legacy JSON content and XML hooks.

use super::any::skip_any;
use super::format::*;
use super::reader::{Reader, Walked, refuse};

/// Skips an item's content of kind `kind`; returns how many clock ticks it
/// spans.
pub(super) fn content_len(reader: &mut Reader, kind: u8) -> Walked<u64> {
    Ok(match kind {
        CONTENT_DELETED => reader.clock("deleted length")?,
        // yrs 0.28 reads one string more than the count says.
        CONTENT_JSON => return refuse("legacy JSON item content is not accepted"),
        CONTENT_BINARY | CONTENT_EMBED => {
            reader.var_bytes("value")?;
            1
        }
        CONTENT_STRING => reader.var_string("string")?.encode_utf16().count() as u64,
        CONTENT_FORMAT => {
            reader.var_string("format key")?;
            reader.var_string("format value")?;
            1
        }
        CONTENT_TYPE => {
            // Its kind is one byte in yrs.
            match reader.u8("type kind")? {
                Y_ARRAY | Y_MAP | Y_TEXT | Y_XML_FRAGMENT | Y_XML_TEXT | Y_DOC | Y_UNDEFINED => {}
                Y_XML_ELEMENT => {
                    reader.var_string("tag name")?;
                }
                // A name in Yjs, nothing in yrs.
                Y_XML_HOOK => return refuse("XML hooks are not accepted"),
                other => {
                    return refuse(format!(
                        "the update does not decode: unknown type kind {other}"
                    ));
                }
            }
            1
        }
        CONTENT_ANY => {
            let n = reader.count("value count", 1)?;
            for _ in 0..n {
                skip_any(reader, 0)?;
            }
            n
        }
        CONTENT_DOC => {
            reader.var_string("subdocument guid")?;
            skip_any(reader, 0)?;
            1
        }
        other => {
            return refuse(format!(
                "the update does not decode: unknown item content kind {other}"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_of(kind: u8, bytes: &[u8]) -> Result<u64, String> {
        let mut reader = Reader::new(bytes);
        let len = content_len(&mut reader, kind)?;
        reader.finish()?;
        Ok(len)
    }

    #[test]
    fn each_kind_spans_its_ticks() {
        assert_eq!(len_of(CONTENT_DELETED, &[7]), Ok(7));
        assert_eq!(len_of(CONTENT_BINARY, &[2, 0xff, 0]), Ok(1));
        assert_eq!(len_of(CONTENT_EMBED, b"\x02{}"), Ok(1));
        // "é😀": one UTF-16 unit, then two.
        assert_eq!(len_of(CONTENT_STRING, "\x06é😀".as_bytes()), Ok(3));
        assert_eq!(len_of(CONTENT_FORMAT, b"\x04bold\x04true"), Ok(1));
        assert_eq!(len_of(CONTENT_TYPE, &[Y_MAP]), Ok(1));
        assert_eq!(len_of(CONTENT_TYPE, b"\x03\x01p"), Ok(1));
        assert_eq!(
            len_of(CONTENT_ANY, &[3, ANY_NULL, ANY_TRUE, ANY_UNDEFINED]),
            Ok(3)
        );
        assert_eq!(len_of(CONTENT_DOC, b"\x01g\x76\x00"), Ok(1));
    }

    #[test]
    fn kinds_read_differently_by_yrs_and_yjs_are_refused() {
        let err = len_of(CONTENT_JSON, b"\x01\x04null").unwrap_err();
        assert!(err.contains("legacy JSON"), "{err}");
        let err = len_of(CONTENT_TYPE, b"\x05\x04hook").unwrap_err();
        assert!(err.contains("XML hooks"), "{err}");
        for unknown in [Y_WEAK_LINK, 8, 16] {
            let err = len_of(CONTENT_TYPE, &[unknown]).unwrap_err();
            assert!(err.contains("unknown type kind"), "{err}");
        }
        for unknown in [11, 31] {
            let err = len_of(unknown, &[0]).unwrap_err();
            assert!(err.contains("unknown item content kind"), "{err}");
        }
    }
}
