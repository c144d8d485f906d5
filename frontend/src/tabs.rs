//! Tabs of the same browser share a document through a `BroadcastChannel`
//! named `quire:doc:<name>`, with or without the server:
//!
//! - `{t: "u", d}`: an update (every change not itself from another tab);
//! - `{t: "s1", d, r}`: a state vector, sent when a tab opens the document;
//!   the others answer with `s2` (what it lacks) and, unless `r` is set,
//!   with their own `s1` (marked `r`) so the newcomer sends what they lack;
//! - `{t: "s2", d}`: the answer to `s1`, applied like `u`.
//!
//! Received updates are applied with [`TAB_ORIGIN`], so they are not sent
//! back to the channel and are not undone by this tab's undo; right before
//! each, `before_apply` runs (the editor takes the caret as it is on screen).

use std::rc::Rc;

use js_sys::{Object, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{BroadcastChannel, MessageEvent};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use crate::plain::TAB_ORIGIN;

const OBSERVER_KEY: &str = "quire-tabs";

pub struct Tabs {
    channel: BroadcastChannel,
    doc: Doc,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

fn message(kind: &str, data: &[u8], reply: bool) -> JsValue {
    let object = Object::new();
    let _ = Reflect::set(&object, &"t".into(), &kind.into());
    let _ = Reflect::set(&object, &"d".into(), &Uint8Array::from(data));
    if reply {
        let _ = Reflect::set(&object, &"r".into(), &JsValue::TRUE);
    }
    object.into()
}

impl Tabs {
    /// Joins the channel of `name`; `before_apply` runs right before an
    /// update from another tab is applied, `changed` after it was (to send
    /// it to the server, save it, ...).
    pub fn join(
        name: &str,
        doc: Doc,
        before_apply: impl Fn() + 'static,
        changed: impl Fn() + 'static,
    ) -> Option<Rc<Self>> {
        let channel = BroadcastChannel::new(&format!("quire:doc:{name}")).ok()?;

        let sender = channel.clone();
        doc.observe_update_v1(OBSERVER_KEY, move |txn, event| {
            let from_tab = txn
                .origin()
                .is_some_and(|o| o.as_ref() == TAB_ORIGIN.as_bytes());
            if !from_tab {
                let _ = sender.post_message(&message("u", &event.update, false));
            }
        })
        .ok()?;

        let replier = channel.clone();
        let receiver = doc.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let kind = Reflect::get(&data, &"t".into())
                .ok()
                .and_then(|k| k.as_string())
                .unwrap_or_default();
            let Ok(bytes) =
                Reflect::get(&data, &"d".into()).and_then(|d| d.dyn_into::<Uint8Array>())
            else {
                return;
            };
            let bytes = bytes.to_vec();
            match kind.as_str() {
                "u" | "s2" => {
                    let Ok(update) = Update::decode_v1(&bytes) else {
                        return;
                    };
                    before_apply();
                    let applied = match receiver.try_transact_mut_with(TAB_ORIGIN) {
                        Ok(mut txn) => txn.apply_update(update).is_ok(),
                        Err(_) => false,
                    };
                    if applied {
                        changed();
                    }
                }
                "s1" => {
                    let Ok(sv) = StateVector::decode_v1(&bytes) else {
                        return;
                    };
                    let Ok(txn) = receiver.try_transact() else {
                        return;
                    };
                    let diff = txn.encode_diff_v1(&sv);
                    let own = txn.state_vector().encode_v1();
                    drop(txn);
                    let _ = replier.post_message(&message("s2", &diff, false));
                    let is_reply = Reflect::get(&data, &"r".into()).is_ok_and(|r| r.is_truthy());
                    if !is_reply {
                        let _ = replier.post_message(&message("s1", &own, true));
                    }
                }
                _ => {}
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));

        // Ask the tabs already open for what this one lacks.
        let sv = doc.transact().state_vector().encode_v1();
        let _ = channel.post_message(&message("s1", &sv, false));
        Some(Rc::new(Self {
            channel,
            doc,
            _on_message: on_message,
        }))
    }
}

impl Drop for Tabs {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
        let _ = self.doc.unobserve_update_v1(OBSERVER_KEY);
    }
}
