//! Importing files as new documents (the home page's Import button and
//! drops on its list): read the file, pick its kind by extension, `POST`
//! it under a name made from the file's, trying `name-2`, `name-3`… while
//! the name is taken.

use wasm_bindgen_futures::JsFuture;

use crate::api::{self, ApiError};
use crate::files::{ImportKind, NAME_ATTEMPTS, candidate, doc_name_from_file};

/// One imported file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The file's name.
    pub file: String,
    /// The document it became.
    pub doc: String,
}

/// Imports `file` into a new document; the error says why not, in words
/// that name the file.
pub async fn import_file(file: &web_sys::File) -> Result<Imported, String> {
    let file_name = file.name();
    let Some(kind) = ImportKind::of_file(&file_name) else {
        return Err(format!(
            "“{file_name}” is not a file Quire imports (use Markdown .md, HTML .html, text .txt or a Yjs update .yjs)"
        ));
    };
    let bytes = read(file)
        .await
        .map_err(|e| format!("Could not read “{file_name}”: {e}"))?;
    let stem = doc_name_from_file(&file_name);
    for attempt in 0..NAME_ATTEMPTS {
        let name = candidate(&stem, attempt);
        match api::create_doc(&name, kind.content_type(), &bytes).await {
            Ok(doc) => {
                return Ok(Imported {
                    file: file_name,
                    doc,
                });
            }
            Err(err) if err.status == 409 => continue,
            Err(err) => return Err(format!("Could not import “{file_name}”: {}", words(&err))),
        }
    }
    Err(format!(
        "Could not import “{file_name}”: the names “{stem}” to “{}” are all taken; rename the file or one of those documents",
        candidate(&stem, NAME_ATTEMPTS - 1)
    ))
}

/// The error of a refused import, for the user.
fn words(err: &ApiError) -> String {
    match err.status {
        413 => format!("the file is larger than the server accepts ({err})"),
        415 => format!("the server does not take this kind of file ({err})"),
        400 => format!("the server could not read the file ({err})"),
        _ => err.to_string(),
    }
}

async fn read(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| {
        e.as_string()
            .or_else(|| {
                wasm_bindgen::JsCast::dyn_ref::<js_sys::Error>(&e).map(|e| e.message().into())
            })
            .unwrap_or_else(|| "the browser refused".into())
    })?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// The files of a `FileList` (from the picker or a drop).
pub fn files_of(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    let Some(list) = list else {
        return Vec::new();
    };
    (0..list.length()).filter_map(|i| list.item(i)).collect()
}
