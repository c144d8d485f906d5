//! The numbers Yjs' update format v1 gives names to, under Yjs' and lib0's
//! own names (yjs/src/structs/, yjs/src/utils/UpdateDecoder.js,
//! lib0/decoding.js `readAny`), so the walk reads like the format.

/// The info byte that starts every struct: its low five bits say what the
/// struct is (a GC block, a skip, or an item and its content kind), its top
/// three which optional fields follow.
pub const STRUCT_KIND_BITS: u8 = 0x1f;
/// An item: its left origin (the ID of the item it was inserted after) follows.
pub const HAS_ORIGIN: u8 = 0x80;
/// An item: its right origin (the item it was inserted before) follows.
pub const HAS_RIGHT_ORIGIN: u8 = 0x40;
/// An item without origins: the map key it is set under follows its parent.
pub const HAS_PARENT_SUB: u8 = 0x20;

/// Struct kind `GC`: a garbage-collected run of clocks; only its length.
pub const GC: u8 = 0;
/// Struct kind `Skip`: clocks the update does not carry (written by merged
/// and diffed updates); only its length.
pub const SKIP: u8 = 10;

// Item content kinds (the `ref` of each `Content*` class in Yjs).

/// `ContentDeleted`: a deleted item's length, nothing else.
pub const CONTENT_DELETED: u8 = 1;
/// `ContentJSON`: legacy values as JSON strings (Yjs writes `ContentAny`
/// instead since v13).
pub const CONTENT_JSON: u8 = 2;
/// `ContentBinary`: one byte string.
pub const CONTENT_BINARY: u8 = 3;
/// `ContentString`: text, one clock tick per UTF-16 code unit.
pub const CONTENT_STRING: u8 = 4;
/// `ContentEmbed`: one embedded value, as a JSON string.
pub const CONTENT_EMBED: u8 = 5;
/// `ContentFormat`: a formatting attribute's key and JSON value.
pub const CONTENT_FORMAT: u8 = 6;
/// `ContentType`: a nested shared type.
pub const CONTENT_TYPE: u8 = 7;
/// `ContentAny`: values in lib0's self-describing encoding.
pub const CONTENT_ANY: u8 = 8;
/// `ContentDoc`: a subdocument's GUID and options.
pub const CONTENT_DOC: u8 = 9;

// Shared type kinds inside `ContentType` (Yjs' `Y*RefID`; yrs writes the
// last three too).

pub const Y_ARRAY: u8 = 0;
pub const Y_MAP: u8 = 1;
pub const Y_TEXT: u8 = 2;
/// Followed by the element's tag name.
pub const Y_XML_ELEMENT: u8 = 3;
pub const Y_XML_FRAGMENT: u8 = 4;
/// Followed by the hook's name in Yjs, by nothing in yrs.
pub const Y_XML_HOOK: u8 = 5;
pub const Y_XML_TEXT: u8 = 6;
/// yrs' weak links (a yrs extension no Yjs client writes).
pub const Y_WEAK_LINK: u8 = 7;
/// yrs: a subdocument reference.
pub const Y_DOC: u8 = 9;
/// yrs: a type whose kind is not known yet.
pub const Y_UNDEFINED: u8 = 15;

// lib0 `Any` value tags (`readAny` in lib0/decoding.js).

pub const ANY_UNDEFINED: u8 = 127;
pub const ANY_NULL: u8 = 126;
/// A signed varint: a continuation bit in every byte but the last.
pub const ANY_INTEGER: u8 = 125;
pub const ANY_FLOAT32: u8 = 124;
pub const ANY_FLOAT64: u8 = 123;
/// Eight bytes.
pub const ANY_BIGINT: u8 = 122;
pub const ANY_FALSE: u8 = 121;
pub const ANY_TRUE: u8 = 120;
pub const ANY_STRING: u8 = 119;
/// A count, then per entry a key string and a value.
pub const ANY_OBJECT: u8 = 118;
/// A count, then the values.
pub const ANY_ARRAY: u8 = 117;
pub const ANY_UINT8ARRAY: u8 = 116;

/// An item's parent, when it has no origins: `PARENT_ROOT` and a root
/// type's name, or `PARENT_ID` and the ID of the item holding the type.
/// yrs reads this as a wrapping u32, so only these two values mean the same
/// to it and to Yjs.
pub const PARENT_ROOT: u64 = 1;
pub const PARENT_ID: u64 = 0;
