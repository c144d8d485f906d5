//! Remote carets and selections over the rich editor: each peer's
//! `cursor` (Yjs relative positions, from Quire or from a Tiptap app's
//! CollaborationCaret) is resolved to DOM points in the editor, measured
//! with a DOM `Range` and drawn in an overlay layer: a bar in the peer's
//! colour with a name label, and translucent boxes over a selection.
//! Redraws happen at most once per animation frame.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use web_sys::{DomRect, HtmlElement};

use crate::browser::{Timer, document};
use crate::presence::{CaretMoves, Peer};
use crate::rich::RichEditor;

/// At most this many boxes are drawn for one selection.
const MAX_BOXES: u32 = 400;

pub struct Carets {
    editor: Weak<RichEditor>,
    layer: HtmlElement,
    peers: RefCell<Vec<Peer>>,
    /// Each peer's last head and when it last moved (for the name label).
    moved: RefCell<CaretMoves>,
    label_timer: RefCell<Option<Timer>>,
    frame_pending: Cell<bool>,
    this: Weak<Carets>,
}

fn px(v: f64) -> String {
    format!("{v:.1}px")
}

impl Carets {
    pub fn new(editor: &Rc<RichEditor>, layer: HtmlElement) -> Rc<Self> {
        layer.set_inner_html("");
        Rc::new_cyclic(|this| Self {
            editor: Rc::downgrade(editor),
            layer,
            peers: RefCell::new(Vec::new()),
            moved: RefCell::new(CaretMoves::default()),
            label_timer: RefCell::new(None),
            frame_pending: Cell::new(false),
            this: this.clone(),
        })
    }

    pub fn set_peers(&self, peers: Vec<Peer>) {
        let now = js_sys::Date::now();
        self.moved.borrow_mut().update(&peers, now);
        *self.peers.borrow_mut() = peers;
        self.schedule();
    }

    /// The document or the layout changed: redraw soon.
    pub fn schedule(&self) {
        if self.frame_pending.replace(true) {
            return;
        }
        let weak = self.this.clone();
        leptos::prelude::request_animation_frame(move || {
            if let Some(carets) = weak.upgrade() {
                carets.frame_pending.set(false);
                carets.render();
            }
        });
    }

    fn render(&self) {
        self.layer.set_inner_html("");
        let Some(editor) = self.editor.upgrade() else {
            return;
        };
        let origin = self.layer.get_bounding_client_rect();
        let now = js_sys::Date::now();
        let mut next_fade: Option<f64> = None;
        for peer in self.peers.borrow().iter() {
            let (Some(anchor), Some(head)) = (peer.anchor.as_ref(), peer.head.as_ref()) else {
                continue;
            };
            let Some((a, h)) = editor.resolve_cursor(anchor, head) else {
                continue;
            };
            let label_until = self.moved.borrow().label_until(peer.client, now);
            let labelled = label_until.is_some();
            if let Some(fade) = label_until {
                next_fade = Some(next_fade.map_or(fade, |f: f64| f.min(fade)));
            }
            let Ok(range) = document().create_range() else {
                continue;
            };
            if range.set_start(&a.0, a.1).is_err() || range.set_end(&a.0, a.1).is_err() {
                continue;
            }
            let _ = range.set_end(&h.0, h.1);
            if range.collapsed() {
                // The head is before the anchor: measure the other way round.
                let _ = range.set_start(&h.0, h.1);
                let _ = range.set_end(&a.0, a.1);
            }
            if !range.collapsed()
                && let Some(rects) = range.get_client_rects()
            {
                let background = format!("{}33", peer.color);
                for i in 0..rects.length().min(MAX_BOXES) {
                    if let Some(r) = rects.get(i) {
                        self.highlight(&origin, &r, &background);
                    }
                }
            }
            self.caret(&origin, &h, peer, labelled);
        }
        if let Some(at) = next_fade {
            let weak = self.this.clone();
            let delay = (at - now).max(0.0) as u32 + 20;
            *self.label_timer.borrow_mut() = Some(Timer::once(delay, move || {
                if let Some(carets) = weak.upgrade() {
                    carets.schedule();
                }
            }));
        }
    }

    fn highlight(&self, origin: &DomRect, r: &DomRect, background: &str) {
        if r.width() <= 0.0 {
            return;
        }
        let Ok(el) = document().create_element("div") else {
            return;
        };
        el.set_class_name("remote-selection");
        let _ = el.set_attribute(
            "style",
            &format!(
                "left:{};top:{};width:{};height:{};background:{background}",
                px(r.left() - origin.left()),
                px(r.top() - origin.top()),
                px(r.width()),
                px(r.height())
            ),
        );
        let _ = self.layer.append_child(&el);
    }

    fn caret(&self, origin: &DomRect, at: &(web_sys::Node, u32), peer: &Peer, labelled: bool) {
        let Ok(range) = document().create_range() else {
            return;
        };
        if range.set_start(&at.0, at.1).is_err() {
            return;
        }
        range.collapse_with_to_start(true);
        let rect = range
            .get_client_rects()
            .and_then(|l| l.get(0))
            .filter(|r| r.height() > 0.0)
            .or_else(|| {
                // An empty block has no text to measure: use the element itself.
                let el: Option<web_sys::Element> =
                    wasm_bindgen::JsCast::dyn_into(at.0.clone()).ok();
                el.map(|e| e.get_bounding_client_rect())
            });
        let Some(rect) = rect else { return };
        let height = rect.height().clamp(12.0, 48.0);
        let document = document();
        let (Ok(caret), Ok(label)) = (
            document.create_element("div"),
            document.create_element("span"),
        ) else {
            return;
        };
        let top = rect.top() - origin.top();
        let mut class = String::from("remote-caret");
        if top < 20.0 {
            class.push_str(" label-below");
        }
        if !labelled {
            class.push_str(" quiet");
        }
        caret.set_class_name(&class);
        let _ = caret.set_attribute("data-user", &peer.name);
        let _ = caret.set_attribute("data-client", &peer.client.to_string());
        let _ = caret.set_attribute(
            "style",
            &format!(
                "left:{};top:{};height:{};--peer:{}",
                px(rect.left() - origin.left()),
                px(top),
                px(height),
                peer.color
            ),
        );
        label.set_class_name("remote-caret-label");
        label.set_text_content(Some(&peer.name));
        let _ = caret.append_child(&label);
        let _ = self.layer.append_child(&caret);
    }
}
