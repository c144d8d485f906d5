//! The local copy of each document in IndexedDB: database `quire`, object
//! store `docs`, key = document name, value `{state, pending, at}` where
//! `state` is the whole document as one Yjs update and `pending` says whether
//! it held edits the server had not confirmed when it was written.

use std::cell::RefCell;

use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbRequest, IdbTransactionMode};

use crate::browser::window;

const DB_NAME: &str = "quire";
const STORE: &str = "docs";

thread_local! {
    static DB: RefCell<Option<IdbDatabase>> = const { RefCell::new(None) };
}

/// What is stored for one document.
pub struct Record {
    pub state: Vec<u8>,
    pub pending: bool,
}

/// Resolves when `request` succeeds (with its result) or fails.
fn wait(request: &IdbRequest) -> JsFuture {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let done = request.clone();
        let on_success = Closure::once_into_js(move || {
            let result = done.result().unwrap_or(JsValue::UNDEFINED);
            let _ = resolve.call1(&JsValue::NULL, &result);
        });
        let failed = request.clone();
        let on_error = Closure::once_into_js(move || {
            let error = failed.error().ok().flatten().map_or_else(
                || JsValue::from_str("IndexedDB request failed"),
                JsValue::from,
            );
            let _ = reject.call1(&JsValue::NULL, &error);
        });
        request.set_onsuccess(Some(on_success.unchecked_ref()));
        request.set_onerror(Some(on_error.unchecked_ref()));
    });
    JsFuture::from(promise)
}

async fn db() -> Result<IdbDatabase, JsValue> {
    if let Some(db) = DB.with(|d| d.borrow().clone()) {
        return Ok(db);
    }
    let factory = window()
        .indexed_db()?
        .ok_or_else(|| JsValue::from_str("IndexedDB is not available"))?;
    let open = factory.open_with_u32(DB_NAME, 1)?;
    let upgrading = open.clone();
    let on_upgrade = Closure::once_into_js(move || {
        if let Ok(result) = upgrading.result() {
            let db: IdbDatabase = result.unchecked_into();
            if !db.object_store_names().contains(STORE) {
                let _ = db.create_object_store(STORE);
            }
        }
    });
    open.set_onupgradeneeded(Some(on_upgrade.unchecked_ref()));
    let db: IdbDatabase = wait(&open).await?.unchecked_into();
    DB.with(|d| *d.borrow_mut() = Some(db.clone()));
    Ok(db)
}

pub async fn load(name: &str) -> Result<Option<Record>, JsValue> {
    let db = db().await?;
    let tx = db.transaction_with_str(STORE)?;
    let request = tx.object_store(STORE)?.get(&JsValue::from_str(name))?;
    let value = wait(&request).await?;
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    let state = Reflect::get(&value, &"state".into())?;
    let Ok(state) = state.dyn_into::<Uint8Array>() else {
        return Ok(None);
    };
    let pending = Reflect::get(&value, &"pending".into())?.is_truthy();
    Ok(Some(Record {
        state: state.to_vec(),
        pending,
    }))
}

pub async fn save(name: &str, state: &[u8], pending: bool) -> Result<(), JsValue> {
    let db = db().await?;
    let value = Object::new();
    Reflect::set(&value, &"state".into(), &Uint8Array::from(state))?;
    Reflect::set(&value, &"pending".into(), &JsValue::from_bool(pending))?;
    Reflect::set(
        &value,
        &"at".into(),
        &JsValue::from_f64(js_sys::Date::now()),
    )?;
    let tx = db.transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)?;
    let request = tx
        .object_store(STORE)?
        .put_with_key(&value, &JsValue::from_str(name))?;
    wait(&request).await?;
    Ok(())
}

pub async fn remove(name: &str) -> Result<(), JsValue> {
    let db = db().await?;
    let tx = db.transaction_with_str_and_mode(STORE, IdbTransactionMode::Readwrite)?;
    let request = tx.object_store(STORE)?.delete(&JsValue::from_str(name))?;
    wait(&request).await?;
    Ok(())
}
