//! The formatting toolbar, like a document editor's: undo/redo, the block
//! type menu (Normal text, Heading 1–3, Quote, Code block), bold, italic,
//! underline, strikethrough, inline code, link, bullet and numbered
//! lists, indent/outdent, horizontal rule; each button shows the state at
//! the selection. Also the link dialog (Ctrl+K) and, for plain-text
//! documents, the "Convert to rich text" action.

use std::rc::Rc;

use leptos::prelude::*;
use quire_protocol::rich::schema::link_from_input;
use quire_protocol::rich::{MarkType, NodeType};

use crate::rich::RichEditor;
use crate::rich::edit::BlockType;
use crate::runtime::{Mode, Runtime, Ui};

type Rt = StoredValue<Option<Rc<Runtime>>, LocalStorage>;

fn with_rich(runtime: Rt, f: impl FnOnce(&RichEditor)) {
    runtime.with_value(|rt| {
        if let Some(editor) = rt.as_ref().and_then(|rt| rt.rich()) {
            f(&editor);
            editor.focus();
        }
    });
}

/// Line icons for the buttons that have no letter (24×24, drawn with the
/// text colour): each is a list of SVG path data.
mod icon {
    pub const UNDO: &[&str] = &["M9 14 4 9l5-5", "M4 9h10.5a5.5 5.5 0 0 1 0 11H11"];
    pub const REDO: &[&str] = &["m15 14 5-5-5-5", "M20 9H9.5a5.5 5.5 0 0 0 0 11H13"];
    pub const LINK: &[&str] = &[
        "M10 13.5a4 4 0 0 0 6 .4l3-3a4 4 0 0 0-5.7-5.7l-1.6 1.6",
        "M14 10.5a4 4 0 0 0-6-.4l-3 3a4 4 0 0 0 5.7 5.7l1.6-1.6",
    ];
    pub const BULLETS: &[&str] = &[
        "M9 6h11",
        "M9 12h11",
        "M9 18h11",
        "M4.5 6h.01",
        "M4.5 12h.01",
        "M4.5 18h.01",
    ];
    pub const NUMBERS: &[&str] = &[
        "M10 6h10",
        "M10 12h10",
        "M10 18h10",
        "M4 4.5h1.5v4",
        "M3.8 10.5h2.4l-2.4 3h2.4",
        "M3.8 16h2.4l-1.2 1.5 1.2 1.5H3.8",
    ];
    pub const OUTDENT: &[&str] = &[
        "M4 5h16",
        "M11 10h9",
        "M11 14h9",
        "M4 19h16",
        "M7 9.5 4.5 12 7 14.5",
    ];
    pub const INDENT: &[&str] = &[
        "M4 5h16",
        "M11 10h9",
        "M11 14h9",
        "M4 19h16",
        "M4.5 9.5 7 12l-2.5 2.5",
    ];
    pub const RULE: &[&str] = &["M4 12h16"];
}

/// What a toolbar button shows: a letter (styled by its class) or an icon.
#[derive(Clone, Copy)]
enum Face {
    Text(&'static str),
    Icon(&'static [&'static str]),
}

fn face_view(face: Face) -> AnyView {
    match face {
        Face::Text(label) => label.into_any(),
        Face::Icon(paths) => view! {
            <svg class="tool-icon" viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"
                fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
                {paths.iter().map(|d| view! { <path d=*d/> }).collect_view()}
            </svg>
        }
        .into_any(),
    }
}

/// A toolbar button that keeps the editor's selection (it never takes focus on press).
#[component]
fn ToolButton(
    id: &'static str,
    face: Face,
    title: &'static str,
    #[prop(into)] pressed: Signal<bool>,
    #[prop(into)] disabled: Signal<bool>,
    on_press: impl Fn() + 'static,
    #[prop(optional)] class: &'static str,
) -> impl IntoView {
    view! {
        <button
            type="button"
            id=id
            class=format!("tool {class}")
            aria-label=title
            title=title
            aria-pressed=move || pressed.get().to_string()
            class:active=move || pressed.get()
            disabled=move || disabled.get()
            on:mousedown=|ev| ev.prevent_default()
            on:click=move |_| on_press()
        >
            {face_view(face)}
        </button>
    }
}

#[component]
pub fn Toolbar(ui: Ui, runtime: Rt) -> impl IntoView {
    let rich = move || ui.mode.get() == Mode::Rich;
    let off = Signal::derive(move || ui.read_only.get() || ui.mode.get() != Mode::Rich);
    let mark_on =
        move |m: MarkType| Signal::derive(move || ui.format.with(|f| f.marks.contains(&m)));
    let toggle = move |m: MarkType| move || with_rich(runtime, |e| e.toggle_mark(m));
    let block_value = move || {
        ui.format.with(|f| {
            if f.quote && f.block == Some(BlockType::Paragraph) {
                return "quote".to_owned();
            }
            match f.block {
                Some(BlockType::Paragraph) | None => "p".to_owned(),
                Some(BlockType::Heading(l)) => format!("h{l}"),
                Some(BlockType::CodeBlock) => "code".to_owned(),
            }
        })
    };
    let on_block = move |ev: leptos::ev::Event| {
        let value = event_target_value(&ev);
        with_rich(runtime, |e| {
            let quoted = ui.format.get_untracked().quote;
            match value.as_str() {
                "quote" => {
                    if !quoted {
                        e.toggle_quote();
                    }
                }
                other => {
                    if quoted {
                        e.toggle_quote();
                    }
                    let block = match other {
                        "h1" => BlockType::Heading(1),
                        "h2" => BlockType::Heading(2),
                        "h3" => BlockType::Heading(3),
                        "code" => BlockType::CodeBlock,
                        _ => BlockType::Paragraph,
                    };
                    e.set_block(block);
                }
            }
        });
    };
    let list_on = move |k: NodeType| Signal::derive(move || ui.format.with(|f| f.list == Some(k)));
    let never = Signal::derive(|| false);
    view! {
        <div class="format-bar" role="toolbar" aria-label="Formatting" id="toolbar">
            <ToolButton id="undo" face=Face::Icon(icon::UNDO) title="Undo (Ctrl+Z)" pressed=never disabled=Signal::derive(move || ui.read_only.get())
                on_press=move || runtime.with_value(|rt| if let Some(rt) = rt { rt.undo(); rt.focus(); })/>
            <ToolButton id="redo" face=Face::Icon(icon::REDO) title="Redo (Ctrl+Shift+Z)" pressed=never disabled=Signal::derive(move || ui.read_only.get())
                on_press=move || runtime.with_value(|rt| if let Some(rt) = rt { rt.redo(); rt.focus(); })/>
            <Show when=rich>
                <span class="tool-sep" aria-hidden="true"></span>
                <label class="visually-hidden" for="block-type">"Text style"</label>
                <select
                    id="block-type"
                    class="block-select"
                    title="Text style"
                    prop:value=block_value
                    disabled=move || off.get()
                    on:change=on_block
                >
                    <option value="p">"Normal text"</option>
                    <option value="h1">"Heading 1"</option>
                    <option value="h2">"Heading 2"</option>
                    <option value="h3">"Heading 3"</option>
                    <option value="quote">"Quote"</option>
                    <option value="code">"Code block"</option>
                </select>
                <span class="tool-sep" aria-hidden="true"></span>
                <ToolButton id="tb-bold" face=Face::Text("B") class="bold" title="Bold (Ctrl+B)" pressed=mark_on(MarkType::Bold) disabled=off on_press=toggle(MarkType::Bold)/>
                <ToolButton id="tb-italic" face=Face::Text("I") class="italic" title="Italic (Ctrl+I)" pressed=mark_on(MarkType::Italic) disabled=off on_press=toggle(MarkType::Italic)/>
                <ToolButton id="tb-underline" face=Face::Text("U") class="underline" title="Underline (Ctrl+U)" pressed=mark_on(MarkType::Underline) disabled=off on_press=toggle(MarkType::Underline)/>
                <ToolButton id="tb-strike" face=Face::Text("S") class="strike" title="Strikethrough (Ctrl+Shift+X)" pressed=mark_on(MarkType::Strike) disabled=off on_press=toggle(MarkType::Strike)/>
                <ToolButton id="tb-code" face=Face::Text("</>") class="mono" title="Inline code (Ctrl+E)" pressed=mark_on(MarkType::Code) disabled=off on_press=toggle(MarkType::Code)/>
                <ToolButton id="tb-link" face=Face::Icon(icon::LINK) title="Link (Ctrl+K)" pressed=Signal::derive(move || ui.format.with(|f| f.link.is_some())) disabled=off
                    on_press=move || ui.link_dialog.set(true)/>
                <span class="tool-sep" aria-hidden="true"></span>
                <ToolButton id="tb-bullet" face=Face::Icon(icon::BULLETS) title="Bulleted list (Ctrl+Shift+8)" pressed=list_on(NodeType::BulletList) disabled=off
                    on_press=move || with_rich(runtime, |e| e.toggle_list(NodeType::BulletList))/>
                <ToolButton id="tb-ordered" face=Face::Icon(icon::NUMBERS) title="Numbered list (Ctrl+Shift+7)" pressed=list_on(NodeType::OrderedList) disabled=off
                    on_press=move || with_rich(runtime, |e| e.toggle_list(NodeType::OrderedList))/>
                <ToolButton id="tb-outdent" face=Face::Icon(icon::OUTDENT) title="Decrease indent (Shift+Tab)" pressed=never
                    disabled=Signal::derive(move || off.get() || !ui.format.with(|f| f.in_list))
                    on_press=move || with_rich(runtime, |e| e.outdent())/>
                <ToolButton id="tb-indent" face=Face::Icon(icon::INDENT) title="Increase indent (Tab)" pressed=never
                    disabled=Signal::derive(move || off.get() || !ui.format.with(|f| f.can_indent))
                    on_press=move || with_rich(runtime, |e| e.indent())/>
                <ToolButton id="tb-rule" face=Face::Icon(icon::RULE) title="Horizontal line" pressed=never disabled=off
                    on_press=move || with_rich(runtime, |e| e.insert_rule())/>
            </Show>
            <Show when=move || ui.mode.get() == Mode::Plain>
                <span class="tool-sep" aria-hidden="true"></span>
                <span class="plain-note">"Plain text document"</span>
                <button
                    type="button"
                    id="convert-rich"
                    class="button small"
                    title="Turn this plain-text document into a rich document (headings, lists, bold…). Apps that only read plain text will keep seeing the text as it is now."
                    disabled=move || ui.read_only.get()
                    on:click=move |_| runtime.with_value(|rt| if let Some(rt) = rt { rt.convert_to_rich(); rt.focus(); })
                >
                    "Convert to rich text"
                </button>
            </Show>
            <Show when=move || ui.read_only.get()>
                <span id="read-only-badge" class="read-only-badge" title="Your link only allows reading this document.">"View only"</span>
            </Show>
            <Show when=move || ui.link_dialog.get()>
                <LinkDialog ui=ui runtime=runtime/>
            </Show>
        </div>
    }
}

/// Set, change or remove the link at the selection.
#[component]
fn LinkDialog(ui: Ui, runtime: Rt) -> impl IntoView {
    let existing = ui.format.get_untracked().link;
    let editing = existing.is_some();
    let value = RwSignal::new(existing.unwrap_or_default());
    let error = RwSignal::new(None::<&'static str>);
    let input = NodeRef::<leptos::html::Input>::new();
    request_animation_frame(move || {
        if let Some(input) = input.get_untracked() {
            let _ = input.focus();
            input.select();
        }
    });
    let close = move || {
        ui.link_dialog.set(false);
        runtime.with_value(|rt| {
            if let Some(rt) = rt {
                rt.focus()
            }
        });
    };
    let apply = move || match link_from_input(&value.get_untracked()) {
        Some(href) => {
            ui.link_dialog.set(false);
            with_rich(runtime, |e| e.set_link(Some(href)));
        }
        None => error.set(Some("Enter a web address (https://…) or an email address.")),
    };
    view! {
        <div class="popover link-dialog" id="link-dialog" role="dialog" aria-label="Link"
            on:keydown=move |ev: leptos::ev::KeyboardEvent| if ev.key() == "Escape" { ev.prevent_default(); close(); }>
            <form on:submit=move |ev| { ev.prevent_default(); apply(); }>
                <label for="link-input">{if editing { "Edit link" } else { "Link to" }}</label>
                <input
                    id="link-input"
                    node_ref=input
                    type="text"
                    autocomplete="url"
                    placeholder="https://example.com"
                    prop:value=move || value.get()
                    on:input=move |ev| { value.set(event_target_value(&ev)); error.set(None); }
                />
                <p class="field-error" id="link-error" role="alert">{move || error.get().unwrap_or_default()}</p>
                <div class="dialog-buttons">
                    <button type="submit" id="link-apply" class="button primary small">"Apply"</button>
                    <Show when=move || editing>
                        <button type="button" id="link-remove" class="button small"
                            on:click=move |_| { ui.link_dialog.set(false); with_rich(runtime, |e| e.set_link(None)); }>
                            "Remove link"
                        </button>
                    </Show>
                    <button type="button" id="link-cancel" class="button small" on:click=move |_| close()>"Cancel"</button>
                </div>
            </form>
        </div>
    }
}
