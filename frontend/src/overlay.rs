//! Remote carets and selections over the textarea (the mirror-div technique).
//!
//! A textarea cannot style parts of its text, so a hidden *mirror* with the
//! same box, font and wrapping holds the same text, and DOM `Range`s over
//! it measure where a character offset is drawn; caret and selection boxes
//! are placed there in an overlay that scrolls with the textarea.
//!
//! The mirror holds one block per paragraph (hard lines wrap independently,
//! so this lays out exactly like the textarea) and is updated with the same
//! splices as the document: a keystroke re-lays out one paragraph, not the
//! whole text, so remote carets stay cheap in a 1 MB document. It exists
//! only while someone else has a cursor to show; redraws happen at most once
//! per animation frame.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::JsString;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{DomRect, HtmlElement, HtmlTextAreaElement};
use yrs::{Doc, Text, TextRef, Transact};

use crate::browser::document;
use crate::diff::Splice;
use crate::plain::{TEXT_NAME, TextChange, resolve_sticky};
use crate::presence::{CaretMoves, Peer};

/// Paragraphs drawn around the viewport when a selection spans many.
const VIEW_MARGIN_PX: f64 = 400.0;

pub struct Overlay {
    doc: Doc,
    text: TextRef,
    ta: HtmlTextAreaElement,
    mirror: HtmlElement,
    layer: HtmlElement,
    /// The mirror's paragraphs: one `<div>` with one text node each.
    paras: RefCell<Vec<web_sys::Text>>,
    /// UTF-16 offset where each paragraph starts.
    starts: RefCell<Vec<u32>>,
    /// The mirror no longer matches the textarea and must be rebuilt.
    stale: Cell<bool>,
    peers: RefCell<Vec<Peer>>,
    /// Each peer's last head and when it last moved (for the name label).
    moved: RefCell<CaretMoves>,
    label_timer: RefCell<Option<crate::browser::Timer>>,
    frame_pending: Cell<bool>,
    this: RefCell<Weak<Overlay>>,
}

fn px(v: f64) -> String {
    format!("{v:.1}px")
}

/// A translucent version of `#rgb`/`#rrggbb` for selection highlights.
fn translucent(color: &str) -> String {
    let hex = color.trim_start_matches('#');
    let full: String = if hex.len() == 3 {
        hex.chars().flat_map(|c| [c, c]).collect()
    } else {
        hex.to_owned()
    };
    format!("#{full}33")
}

fn js_len(s: &JsString) -> u32 {
    s.length()
}

fn data_of(node: &web_sys::Text) -> JsString {
    js_sys::Reflect::get(node, &JsValue::from_str("data"))
        .ok()
        .and_then(|v| v.dyn_into::<JsString>().ok())
        .unwrap_or_else(|| JsString::from(""))
}

fn set_data(node: &web_sys::Text, data: &JsString) {
    let _ = js_sys::Reflect::set(node, &JsValue::from_str("data"), data);
}

impl Overlay {
    pub fn new(
        doc: Doc,
        ta: HtmlTextAreaElement,
        mirror: HtmlElement,
        layer: HtmlElement,
    ) -> Rc<Self> {
        mirror.set_inner_html("");
        let text = doc.get_or_insert_text(TEXT_NAME);
        let overlay = Rc::new(Self {
            doc,
            text,
            ta,
            mirror,
            layer,
            paras: RefCell::new(Vec::new()),
            starts: RefCell::new(Vec::new()),
            stale: Cell::new(true),
            peers: RefCell::new(Vec::new()),
            moved: RefCell::new(CaretMoves::default()),
            label_timer: RefCell::new(None),
            frame_pending: Cell::new(false),
            this: RefCell::new(Weak::new()),
        });
        *overlay.this.borrow_mut() = Rc::downgrade(&overlay);
        overlay
    }

    pub fn set_peers(&self, peers: Vec<Peer>) {
        let now = js_sys::Date::now();
        self.moved.borrow_mut().update(&peers, now);
        *self.peers.borrow_mut() = peers;
        self.schedule();
    }

    /// The textarea's text changed by `change`.
    pub fn text_changed(&self, change: TextChange<'_>) {
        if !self.stale.get() {
            match change {
                TextChange::Splices(splices) if self.has_cursors() => {
                    for splice in splices {
                        self.apply_splice(splice);
                    }
                }
                // Not shown: rebuilt from scratch when it is needed again.
                _ => self.stale.set(true),
            }
        }
        if self.has_cursors() {
            self.schedule();
        }
    }

    /// The textarea scrolled or changed size.
    pub fn layout_changed(&self) {
        if self.has_cursors() {
            self.schedule();
        }
    }

    fn has_cursors(&self) -> bool {
        self.peers.borrow().iter().any(|p| p.head.is_some())
    }

    fn schedule(&self) {
        if self.frame_pending.replace(true) {
            return;
        }
        let weak = self.this.borrow().clone();
        leptos::prelude::request_animation_frame(move || {
            if let Some(overlay) = weak.upgrade() {
                overlay.frame_pending.set(false);
                overlay.render();
            }
        });
    }

    fn new_paragraph(&self, data: &JsString) -> (HtmlElement, web_sys::Text) {
        let document = document();
        let div: HtmlElement = document
            .create_element("div")
            .expect("create div")
            .unchecked_into();
        let node = document.create_text_node("");
        set_data(&node, data);
        let _ = div.append_child(&node);
        (div, node)
    }

    /// Rebuilds the mirror from the textarea's value.
    fn rebuild(&self) {
        self.mirror.set_inner_html("");
        let value = js_sys::Reflect::get(&self.ta, &JsValue::from_str("value"))
            .ok()
            .and_then(|v| v.dyn_into::<JsString>().ok())
            .unwrap_or_else(|| JsString::from(""));
        let lines = value.split("\n");
        let fragment = document().create_document_fragment();
        let mut paras = Vec::with_capacity(lines.length() as usize);
        let mut starts = Vec::with_capacity(lines.length() as usize);
        let mut at = 0u32;
        for line in lines.iter() {
            let line: JsString = line.unchecked_into();
            let (div, node) = self.new_paragraph(&line);
            let _ = fragment.append_child(&div);
            paras.push(node);
            starts.push(at);
            at += js_len(&line) + 1;
        }
        let _ = self.mirror.append_child(&fragment);
        *self.paras.borrow_mut() = paras;
        *self.starts.borrow_mut() = starts;
        self.stale.set(false);
    }

    /// The paragraph holding offset `at` (a paragraph owns its end, before the newline).
    fn paragraph_at(&self, at: u32) -> usize {
        let starts = self.starts.borrow();
        match starts.binary_search(&at) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        }
    }

    /// Applies one replacement to the mirror, touching only the paragraphs it spans.
    fn apply_splice(&self, splice: &Splice) {
        let (k0, k1) = (
            self.paragraph_at(splice.at),
            self.paragraph_at(splice.at + splice.delete),
        );
        let (start0, start1) = {
            let starts = self.starts.borrow();
            (starts[k0], starts[k1])
        };
        let (first, last) = {
            let paras = self.paras.borrow();
            (data_of(&paras[k0]), data_of(&paras[k1]))
        };
        let head_len = splice.at - start0;
        let tail_from = splice.at + splice.delete - start1;
        if head_len > js_len(&first) || tail_from > js_len(&last) {
            self.stale.set(true); // out of step: rebuild on the next draw
            return;
        }
        let combined = first
            .slice(0, head_len)
            .concat(&JsValue::from_str(&splice.insert))
            .concat(&last.slice(tail_from, js_len(&last)));
        let lines: Vec<JsString> = combined
            .split("\n")
            .iter()
            .map(|l| l.unchecked_into())
            .collect();

        let mut paras = self.paras.borrow_mut();
        if k0 == k1 && lines.len() == 1 {
            // The common case: an edit inside one paragraph.
            set_data(&paras[k0], &lines[0]);
        } else {
            let before = paras
                .get(k1 + 1)
                .and_then(|n| n.parent_node())
                .map(|n| n.unchecked_into::<web_sys::Node>());
            for node in &paras[k0..=k1] {
                if let Some(div) = node.parent_element() {
                    div.remove();
                }
            }
            let fragment = document().create_document_fragment();
            let mut fresh = Vec::with_capacity(lines.len());
            for line in &lines {
                let (div, node) = self.new_paragraph(line);
                let _ = fragment.append_child(&div);
                fresh.push(node);
            }
            let _ = self.mirror.insert_before(&fragment, before.as_ref());
            paras.splice(k0..=k1, fresh);
        }
        // Re-number the paragraphs from k0 on.
        let mut starts = self.starts.borrow_mut();
        starts.truncate(k0);
        let mut at = start0;
        for node in &paras[k0..] {
            starts.push(at);
            at += node.length() + 1;
        }
    }

    fn render(&self) {
        self.layer.set_inner_html("");
        let style = self.mirror.style();
        if !self.has_cursors() {
            let _ = style.set_property("display", "none");
            return;
        }
        let _ = style.set_property("display", "block");
        let _ = style.set_property("width", &px(f64::from(self.ta.client_width())));
        let _ = style.set_property("left", &px(f64::from(self.ta.client_left())));
        let _ = style.set_property("top", &px(f64::from(self.ta.client_top())));
        if self.stale.get() {
            self.rebuild();
        }
        let len = {
            let paras = self.paras.borrow();
            let starts = self.starts.borrow();
            match (paras.last(), starts.last()) {
                (Some(node), Some(start)) => start + node.length(),
                _ => 0,
            }
        };
        let (scroll_top, scroll_left) = (
            f64::from(self.ta.scroll_top()),
            f64::from(self.ta.scroll_left()),
        );
        let _ = self.layer.style().set_property(
            "transform",
            &format!("translate({}, {})", px(-scroll_left), px(-scroll_top)),
        );
        let origin = self.mirror.get_bounding_client_rect();
        let view = (
            scroll_top - VIEW_MARGIN_PX,
            scroll_top + f64::from(self.ta.client_height()) + VIEW_MARGIN_PX,
        );
        let Ok(txn) = self.doc.try_transact() else {
            return;
        };
        // The document may be ahead of the textarea for a moment (held-back changes).
        let doc_len = self.text.len(&txn);
        let peers = self.peers.borrow();
        let now = js_sys::Date::now();
        let mut next_fade: Option<f64> = None;
        for peer in peers.iter() {
            let label_until = self.moved.borrow().label_until(peer.client, now);
            let labelled = label_until.is_some();
            if let Some(fade) = label_until {
                next_fade = Some(next_fade.map_or(fade, |f: f64| f.min(fade)));
            }
            let Some(head) = peer.head.as_ref().and_then(|h| resolve_sticky(h, &txn)) else {
                continue;
            };
            let anchor = peer
                .anchor
                .as_ref()
                .and_then(|a| resolve_sticky(a, &txn))
                .unwrap_or(head);
            let clamp = |v: u32| v.min(len).min(doc_len);
            let (head, anchor) = (clamp(head), clamp(anchor));
            if anchor != head {
                self.draw_selection(
                    &origin,
                    anchor.min(head),
                    anchor.max(head),
                    &peer.color,
                    view,
                );
            }
            self.draw_caret(&origin, head, peer, labelled);
        }
        drop(peers);
        drop(txn);
        // Redraw when the next label is due to fade.
        if let Some(at) = next_fade {
            let weak = self.this.borrow().clone();
            let delay = (at - now).max(0.0) as u32 + 20;
            *self.label_timer.borrow_mut() = Some(crate::browser::Timer::once(delay, move || {
                if let Some(overlay) = weak.upgrade() {
                    overlay.schedule();
                }
            }));
        }
    }

    fn range(&self, node: &web_sys::Text, start: u32, end: u32) -> Option<web_sys::Range> {
        let range = document().create_range().ok()?;
        range.set_start(node, start).ok()?;
        range.set_end(node, end).ok()?;
        Some(range)
    }

    fn draw_selection(&self, origin: &DomRect, from: u32, to: u32, color: &str, view: (f64, f64)) {
        let background = translucent(color);
        let (k0, k1) = (self.paragraph_at(from), self.paragraph_at(to));
        let paras = self.paras.borrow();
        let starts = self.starts.borrow();
        for k in k0..=k1.min(paras.len().saturating_sub(1)) {
            let node = &paras[k];
            let Some(div) = node.parent_element() else {
                continue;
            };
            let block = div.get_bounding_client_rect();
            let (top, bottom) = (block.top() - origin.top(), block.bottom() - origin.top());
            if bottom < view.0 || top > view.1 {
                continue; // far from what is on screen
            }
            let start = if k == k0 { from - starts[k] } else { 0 };
            let end = if k == k1 {
                to - starts[k]
            } else {
                node.length()
            };
            let mut rects = Vec::new();
            if end > start
                && let Some(list) = self
                    .range(node, start, end)
                    .and_then(|r| r.get_client_rects())
            {
                rects.extend((0..list.length()).filter_map(|i| list.get(i)));
            }
            for r in &rects {
                self.highlight(
                    origin,
                    r.left(),
                    r.top(),
                    r.width(),
                    r.height(),
                    &background,
                );
            }
            // The newline at the end of a selected paragraph shows as a small block.
            if k < k1 {
                let (left, line_top, height) = match rects.last() {
                    Some(r) => (r.right(), r.top(), r.height()),
                    None => (block.left(), block.top(), block.height()),
                };
                self.highlight(origin, left, line_top, 6.0, height, &background);
            }
        }
    }

    fn highlight(
        &self,
        origin: &DomRect,
        left: f64,
        top: f64,
        width: f64,
        height: f64,
        background: &str,
    ) {
        if width <= 0.0 {
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
                px(left - origin.left()),
                px(top - origin.top()),
                px(width),
                px(height),
            ),
        );
        let _ = self.layer.append_child(&el);
    }

    /// Where a caret at `index` is drawn: (left, top, height) relative to the mirror.
    fn caret_box(&self, origin: &DomRect, index: u32) -> Option<(f64, f64, f64)> {
        let k = self.paragraph_at(index);
        let paras = self.paras.borrow();
        let node = paras.get(k)?;
        let local = index - self.starts.borrow()[k];
        let len = node.length();
        let data = data_of(node);
        let rect = if len == 0 {
            let block = node.parent_element()?.get_bounding_client_rect();
            let line = self.line_height();
            (block.left(), block.top(), line)
        } else if local < len {
            let unit = data.char_code_at(local) as u16;
            let width = if (0xD800..0xDC00).contains(&unit) && local + 1 < len {
                2
            } else {
                1
            };
            let r = self
                .range(node, local, local + width)?
                .get_client_rects()?
                .get(0)?;
            (r.left(), r.top(), r.height())
        } else {
            // At the end of the paragraph: just after its last character.
            let unit = data.char_code_at(local - 1) as u16;
            let width = if (0xDC00..0xE000).contains(&unit) && local >= 2 {
                2
            } else {
                1
            };
            let list = self.range(node, local - width, local)?.get_client_rects()?;
            let r = list.get(list.length().checked_sub(1)?)?;
            (r.right(), r.top(), r.height())
        };
        Some((rect.0 - origin.left(), rect.1 - origin.top(), rect.2))
    }

    fn line_height(&self) -> f64 {
        crate::browser::window()
            .get_computed_style(&self.mirror)
            .ok()
            .flatten()
            .and_then(|s| s.get_property_value("line-height").ok())
            .and_then(|v| v.trim_end_matches("px").parse().ok())
            .unwrap_or(24.0)
    }

    fn draw_caret(&self, origin: &DomRect, index: u32, peer: &Peer, labelled: bool) {
        let Some((left, top, height)) = self.caret_box(origin, index) else {
            return;
        };
        let document = document();
        let (Ok(caret), Ok(label)) = (
            document.create_element("div"),
            document.create_element("span"),
        ) else {
            return;
        };
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
                px(left),
                px(top),
                px(height.max(12.0)),
                peer.color
            ),
        );
        label.set_class_name("remote-caret-label");
        label.set_text_content(Some(&peer.name));
        let _ = caret.append_child(&label);
        let _ = self.layer.append_child(&caret);
    }
}
