//! The editor page: the document, its status badge, who is here, export,
//! chat and notices.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use leptos::prelude::*;
use quire_protocol::close;
use quire_protocol::{Connection, Status};
use send_wrapper::SendWrapper;

use crate::api;
use crate::browser::{download, local_get, local_set, now_ms};
use crate::export::ExportFormat;
use crate::format::{format_clock, format_datetime};
use crate::nav::{follow, use_nav, use_user};
use crate::runtime::{Mode, Runtime, Surfaces, Ui};
use crate::toolbar::Toolbar;
use crate::widgets::{Avatar, Brand, UserMenu, input_value};

/// The badge's words. Exactly one of: "All changes saved" (connected and
/// every local edit confirmed on the server's disk), "Online" (connected,
/// some edits not yet confirmed), "Offline (N unsaved changes)" (not
/// connected, N local edits not on the server; "change" when N is 1),
/// "Reconnecting in Ns" (not connected, nothing unsaved), "Connecting…"
/// (first attempt) or "Offline" (stopped for good, nothing unsaved); and
/// while the server says it cannot save, "Not saved: the server cannot
/// store changes right now" whatever the count.
pub fn status_text(status: Option<&Status>, now: u64) -> (String, &'static str) {
    let Some(status) = status else {
        return ("Connecting…".into(), "connecting");
    };
    let unsaved = status.unsaved;
    match &status.connection {
        Connection::Syncing | Connection::Synced if status.saves_stalled => (
            "Not saved: the server cannot store changes right now".into(),
            "offline",
        ),
        Connection::Synced if status.all_saved() => ("All changes saved".into(), "saved"),
        Connection::Syncing | Connection::Synced => ("Online".into(), "online"),
        _ if unsaved > 0 => (
            format!(
                "Offline ({unsaved} unsaved change{})",
                if unsaved == 1 { "" } else { "s" }
            ),
            "offline",
        ),
        Connection::Offline { retry_at_ms, .. } => (
            format!("Reconnecting in {}s", retry_secs(*retry_at_ms, now)),
            "offline",
        ),
        Connection::Stopped { .. } => ("Offline".into(), "stopped"),
        Connection::Idle | Connection::Connecting { .. } => ("Connecting…".into(), "connecting"),
    }
}

fn retry_secs(retry_at_ms: u64, now: u64) -> u64 {
    retry_at_ms.saturating_sub(now).div_ceil(1000)
}

#[component]
pub fn EditorPage(name: String) -> impl IntoView {
    let nav = use_nav();
    let user = use_user();
    let ui = Ui::new(user);
    let ready = RwSignal::new(false);
    let now = RwSignal::new(now_ms());
    if let Ok(handle) =
        set_interval_with_handle(move || now.set(now_ms()), Duration::from_millis(500))
    {
        on_cleanup(move || handle.clear());
    }
    ui.chat_open
        .set(local_get("quire.chat-open").as_deref() == Some("1"));

    let runtime: StoredValue<Option<Rc<Runtime>>, LocalStorage> = StoredValue::new_local(None);
    let cancelled = Rc::new(Cell::new(false));
    let textarea = NodeRef::<leptos::html::Textarea>::new();
    let mirror = NodeRef::<leptos::html::Div>::new();
    let layer = NodeRef::<leptos::html::Div>::new();
    let rich = NodeRef::<leptos::html::Div>::new();
    let rich_layer = NodeRef::<leptos::html::Div>::new();

    // Start once the textarea is in the page.
    let started = Rc::new(Cell::new(false));
    let doc_name = name.clone();
    let flag = cancelled.clone();
    Effect::new(move |_| {
        let (Some(ta), Some(mirror), Some(layer), Some(rich), Some(rich_layer)) = (
            textarea.get(),
            mirror.get(),
            layer.get(),
            rich.get(),
            rich_layer.get(),
        ) else {
            return;
        };
        if started.replace(true) {
            return;
        }
        let name = doc_name.clone();
        let flag = flag.clone();
        leptos::task::spawn_local(async move {
            let surfaces = Surfaces {
                textarea: ta,
                mirror: mirror.into(),
                layer: layer.into(),
                rich: rich.into(),
                rich_layer: rich_layer.into(),
            };
            let rt = Runtime::open(name, surfaces, ui).await;
            if flag.get() {
                rt.close();
                return;
            }
            rt.focus();
            runtime.set_value(Some(rt));
            let _ = ready.try_set(true);
        });
    });
    let flag = SendWrapper::new(cancelled);
    on_cleanup(move || {
        flag.set(true);
        if let Some(Some(rt)) = runtime.try_get_value() {
            rt.close();
        }
    });
    // Name or colour changes go out as presence.
    Effect::new(move |_| {
        let user = user.get();
        runtime.with_value(|rt| {
            if let Some(rt) = rt {
                rt.set_user(user);
            }
        });
    });

    let status_view = move || {
        let (text, class) = ui.status.with(|s| status_text(s.as_ref(), now.get()));
        (text, class)
    };
    let unsaved = move || ui.status.with(|s| s.as_ref().map_or(0, |s| s.unsaved));
    let offline_retry = move || {
        ui.status.with(|s| match s.as_ref().map(|s| &s.connection) {
            Some(Connection::Offline { retry_at_ms, .. }) => Some(*retry_at_ms),
            _ => None,
        })
    };
    let title = name.clone();

    view! {
        <div class="editor-page">
        <header class="topbar editor-bar">
            <Brand/>
            <div class="doc-title">
                <span class="crumb-sep" aria-hidden="true">"/"</span>
                <h1 id="doc-name" title=title.clone()>{title.clone()}</h1>
            </div>
            <div class="status-group">
                <span
                    id="status"
                    data-testid="status"
                    class=move || format!("status {}", status_view().1)
                    role="status"
                    aria-live="polite"
                    title=move || {
                        match unsaved() {
                            0 => "Every change you made is saved on the server.".to_owned(),
                            n => format!("{n} of your changes are not yet confirmed by the server; they are kept in this browser."),
                        }
                    }
                >
                    {move || status_view().0}
                </span>
                <Show when=move || offline_retry().is_some()>
                    <span id="status-detail" class="status-detail">
                        {move || {
                            let secs = offline_retry().map_or(0, |at| retry_secs(at, now.get()));
                            if unsaved() > 0 { format!("retrying in {secs}s") } else { String::new() }
                        }}
                    </span>
                    <button
                        type="button"
                        id="retry"
                        class="link-button"
                        on:click=move |_| runtime.with_value(|rt| if let Some(rt) = rt { rt.retry_now() })
                    >
                        "Retry now"
                    </button>
                </Show>
            </div>
            <div class="spacer"></div>
            <Presence ui=ui/>
            <ExportMenu name=name.clone() runtime=runtime ui=ui/>
            <button
                type="button"
                id="chat-toggle"
                data-testid="chat-toggle"
                class="button"
                aria-controls="chat"
                aria-expanded=move || ui.chat_open.get().to_string()
                on:click=move |_| {
                    let open = !ui.chat_open.get_untracked();
                    ui.chat_open.set(open);
                    local_set("quire.chat-open", if open { "1" } else { "0" });
                    if open {
                        ui.unread.set(0);
                    }
                }
            >
                "Chat"
                <Show when=move || { ui.unread.get() > 0 }>
                    <span class="badge" id="chat-unread" aria-label="unread messages">{move || ui.unread.get()}</span>
                </Show>
            </button>
            <UserMenu/>
        </header>

        <div id="notices" class="notices" role="status" aria-live="polite">
            <For
                each=move || ui.notices.get()
                key=|n| n.id
                children=|n| view! { <div class="notice" data-testid="notice">{n.text}</div> }
            />
        </div>

        <Toolbar ui=ui runtime=runtime/>

        <Show when=move || ui.stopped.get().is_some()>
            <StoppedBanner name=name.clone() runtime=runtime ui=ui/>
        </Show>

        <main class="editor-layout" class:chat-open=move || ui.chat_open.get()>
            <div class="paper" class:rich-mode=move || ui.mode.get() != Mode::Plain>
                <label for="editor" class="visually-hidden">"Document text"</label>
                <div class="editor-frame plain-frame" class:hidden=move || ui.mode.get() != Mode::Plain>
                    <textarea
                        id=move || if ui.mode.get() == Mode::Plain { "editor" } else { "plain-editor" }
                        data-testid=move || if ui.mode.get() == Mode::Plain { "editor" } else { "plain-editor" }
                        node_ref=textarea
                        spellcheck="true"
                        autocomplete="off"
                        readonly=move || !ready.get() || ui.read_only.get()
                        aria-busy=move || (!ready.get()).to_string()
                        placeholder=move || if ready.get() { "Start writing…" } else { "Loading…" }
                    ></textarea>
                    <div class="mirror" node_ref=mirror aria-hidden="true"></div>
                    <div class="overlay" aria-hidden="true">
                        <div class="overlay-layer" node_ref=layer></div>
                    </div>
                </div>
                <div class="editor-frame rich-frame" class:hidden=move || ui.mode.get() == Mode::Plain>
                    <div
                        id=move || if ui.mode.get() == Mode::Plain { "rich-editor" } else { "editor" }
                        data-testid=move || if ui.mode.get() == Mode::Plain { "rich-editor" } else { "editor" }
                        class="rich-editor"
                        node_ref=rich
                        role="textbox"
                        aria-multiline="true"
                        aria-label="Document"
                        spellcheck="true"
                        aria-busy=move || (!ready.get()).to_string()
                        data-ready=move || ready.get().to_string()
                        data-placeholder="Start writing…"
                        class:read-only=move || ui.read_only.get()
                    ></div>
                    <div class="rich-overlay" node_ref=rich_layer aria-hidden="true"></div>
                </div>
            </div>
            <Chat ui=ui runtime=runtime/>
        </main>
        <a class="skip-home visually-hidden" href="/" on:click=follow(nav, "/".into())>"All documents"</a>
        </div>
    }
}

#[component]
fn Presence(ui: Ui) -> impl IntoView {
    const SHOWN: usize = 5;
    let shown = move || {
        let mut peers = ui.peers.get();
        peers.truncate(SHOWN);
        peers
    };
    view! {
        <ul id="presence" class="presence" aria-label="People in this document">
            <For
                each=shown
                key=|p| (p.client, p.name.clone(), p.color.clone())
                children=|p| {
                    let name = p.name.clone();
                    view! {
                        <li class="peer" data-testid="peer" data-user=p.name.clone() data-client=p.client.to_string()>
                            <Avatar name=p.name.clone() color=p.color.clone()/>
                            <span class="visually-hidden">{name}</span>
                        </li>
                    }
                }
            />
            <Show when=move || { ui.peers.with(Vec::len) > SHOWN }>
                <li class="peer more" title="More people">{move || format!("+{}", ui.peers.with(Vec::len) - SHOWN)}</li>
            </Show>
        </ul>
    }
}

#[component]
fn StoppedBanner(
    name: String,
    runtime: StoredValue<Option<Rc<Runtime>>, LocalStorage>,
    ui: Ui,
) -> impl IntoView {
    let nav = use_nav();
    let deleted = move || {
        ui.stopped.with(|s| {
            s.as_ref()
                .is_some_and(|s| s.code == close::DOCUMENT_DELETED)
        })
    };
    let restoring = RwSignal::new(false);
    let restore = move |_| {
        let Some(state) = runtime.with_value(|rt| rt.as_ref().map(|rt| rt.local_state())) else {
            return;
        };
        let name = name.clone();
        restoring.set(true);
        leptos::task::spawn_local(async move {
            match api::put_snapshot(&name, &state).await {
                Ok(()) => {
                    let _ = crate::browser::window().location().reload();
                }
                Err(err) => {
                    let _ = restoring.try_set(false);
                    ui.notify(format!("Could not restore: {err}."));
                }
            }
        });
    };
    view! {
        <div class="banner error stopped" id="stopped-banner" role="alert">
            <p>{move || ui.stopped.get().map(|s| s.message).unwrap_or_default()}</p>
            <Show
                when=deleted
                fallback=|| view! {
                    <button type="button" class="button small" on:click=|_| { let _ = crate::browser::window().location().reload(); }>
                        "Reload"
                    </button>
                }
            >
                <button type="button" id="restore-doc" class="button small primary" on:click=restore.clone() disabled=move || restoring.get()>
                    "Restore it from this copy"
                </button>
            </Show>
            <a class="button small" href="/" on:click=follow(nav, "/".into())>"All documents"</a>
        </div>
    }
}

#[component]
fn ExportMenu(
    name: String,
    runtime: StoredValue<Option<Rc<Runtime>>, LocalStorage>,
    ui: Ui,
) -> impl IntoView {
    let open = RwSignal::new(false);
    let menu = NodeRef::<leptos::html::Div>::new();
    let export = move |format: ExportFormat, name: String| {
        open.set(false);
        leptos::task::spawn_local(async move {
            let fallback_name = format!("{name}.{}", format.ext());
            let (bytes, filename) = match api::snapshot_file(&name, format.server_format()).await {
                Ok(file) => (file.bytes, file.file_name.unwrap_or(fallback_name)),
                Err(err) => {
                    // Not on the server (offline, or never saved): export this tab's copy.
                    let Some(bytes) =
                        runtime.with_value(|rt| rt.as_ref().map(|rt| rt.export_local(format)))
                    else {
                        ui.notify(format!("Export failed: {err}."));
                        return;
                    };
                    ui.notify(format!("Exported this browser’s copy ({err})."));
                    (bytes, fallback_name)
                }
            };
            if download(&bytes, &filename, format.mime()).is_err() {
                ui.notify("The browser refused the download.");
            }
        });
    };
    let close_if_outside = move |ev: leptos::ev::FocusEvent| {
        let inside = ev
            .related_target()
            .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Node>(t).ok())
            .zip(menu.get_untracked())
            .is_some_and(|(node, menu)| menu.contains(Some(&node)));
        if !inside {
            open.set(false);
        }
    };
    view! {
        <div class="menu" node_ref=menu on:focusout=close_if_outside on:keydown=move |ev: leptos::ev::KeyboardEvent| {
            if ev.key() == "Escape" {
                open.set(false);
            }
        }>
            <button
                type="button"
                id="export-button"
                data-testid="export-button"
                class="button"
                aria-haspopup="menu"
                aria-expanded=move || open.get().to_string()
                aria-controls="export-menu"
                on:click=move |_| open.update(|o| *o = !*o)
            >
                "Export"
            </button>
            <Show when=move || open.get()>
                <ul id="export-menu" class="menu-list" role="menu" aria-label="Export as">
                    {ExportFormat::ALL
                        .into_iter()
                        .map(|format| {
                            let name = name.clone();
                            view! {
                                <li role="none">
                                    <button
                                        type="button"
                                        role="menuitem"
                                        id=format!("export-{}", format.ext())
                                        data-format=format.ext()
                                        on:click=move |_| export(format, name.clone())
                                    >
                                        {format.label()}
                                    </button>
                                </li>
                            }
                        })
                        .collect_view()}
                </ul>
            </Show>
        </div>
    }
}

#[component]
fn Chat(ui: Ui, runtime: StoredValue<Option<Rc<Runtime>>, LocalStorage>) -> impl IntoView {
    let draft = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let list = NodeRef::<leptos::html::Ol>::new();
    let input = NodeRef::<leptos::html::Input>::new();
    // Read-only access (from the token, or as the server said): no sending.
    let read_only = Signal::derive(move || {
        ui.read_only.get()
            || ui
                .chat_refused
                .with(|r| r.as_ref().is_some_and(|r| r.for_good))
    });
    // A refused message goes back into an empty input.
    Effect::new(move |_| {
        if let Some(refused) = ui.chat_refused.get()
            && draft.get_untracked().is_empty()
            && !refused.for_good
        {
            draft.set(refused.text);
        }
    });
    // Keep the newest message in view.
    Effect::new(move |_| {
        ui.chat.with(Vec::len);
        ui.chat_open.get();
        request_animation_frame(move || {
            if let Some(list) = list.get_untracked() {
                list.set_scroll_top(list.scroll_height());
            }
        });
    });
    let send = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = draft.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        let result = runtime.with_value(|rt| match rt {
            Some(rt) => rt.send_chat(&text),
            None => Err("Still loading.".into()),
        });
        match result {
            Ok(()) => {
                draft.set(String::new());
                error.set(None);
                ui.chat_refused.set(None);
            }
            Err(err) => error.set(Some(err)),
        }
    };
    view! {
        <aside id="chat" class="chat" class:open=move || ui.chat_open.get() aria-label="Chat">
            <div class="chat-head">
                <h2>"Chat"</h2>
                <button
                    type="button"
                    class="icon-button"
                    id="chat-close"
                    aria-label="Close chat"
                    on:click=move |_| {
                        ui.chat_open.set(false);
                        local_set("quire.chat-open", "0");
                    }
                >
                    "×"
                </button>
            </div>
            <ol id="chat-list" data-testid="chat-list" class="chat-list" node_ref=list aria-live="polite">
                <For
                    each=move || ui.chat.get()
                    key=|m| m.id
                    children=|m| {
                        view! {
                            <li class="chat-message" class:mine=m.mine data-testid="chat-message">
                                <div class="chat-meta">
                                    <span class="chat-user">{m.user.clone()}</span>
                                    <time class="chat-time" title=format_datetime(m.at_ms)>{format_clock(m.at_ms)}</time>
                                </div>
                                <p class="chat-text">{m.text.clone()}</p>
                            </li>
                        }
                    }
                />
            </ol>
            <Show when=move || ui.chat.with(Vec::is_empty)>
                <p class="chat-empty">"No messages yet. Say hello to whoever is here."</p>
            </Show>
            <form id="chat-form" class="chat-form" on:submit=send>
                <label for="chat-input" class="visually-hidden">"Message"</label>
                <input
                    id="chat-input"
                    data-testid="chat-input"
                    node_ref=input
                    type="text"
                    maxlength="2000"
                    autocomplete="off"
                    placeholder=move || if read_only.get() { "Read-only: you cannot send messages" } else { "Message everyone here" }
                    disabled=read_only
                    aria-describedby="chat-error"
                    prop:value=move || draft.get()
                    on:input=move |ev| draft.set(input_value(&ev))
                />
                <button type="submit" id="chat-send" data-testid="chat-send" class="button primary" disabled=read_only>"Send"</button>
            </form>
            <Show when=move || read_only.get()>
                <p class="chat-note" id="chat-read-only">
                    "Your access to this document is read-only: you can read the chat, not write in it."
                </p>
            </Show>
            <p class="field-error" id="chat-error" role="alert">
                {move || {
                    error
                        .get()
                        .or_else(|| ui.chat_refused.with(|r| r.as_ref().filter(|r| !r.for_good).map(|r| r.message.clone())))
                        .unwrap_or_default()
                }}
            </p>
        </aside>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(connection: Connection, unsaved: u64) -> Status {
        Status {
            connection,
            unsaved,
            extensions: true,
            saves_stalled: false,
        }
    }

    #[test]
    fn a_save_stall_is_never_all_saved() {
        let stalled = Status {
            saves_stalled: true,
            ..status(Connection::Synced, 0)
        };
        let (words, class) = status_text(Some(&stalled), 0);
        assert_eq!(
            words,
            "Not saved: the server cannot store changes right now"
        );
        assert_eq!(class, "offline");
    }

    #[test]
    fn badge_words() {
        let text = |c, u, now| status_text(Some(&status(c, u)), now).0;
        assert_eq!(text(Connection::Synced, 0, 0), "All changes saved");
        assert_eq!(text(Connection::Synced, 2, 0), "Online");
        assert_eq!(text(Connection::Syncing, 0, 0), "Online");
        let offline = || Connection::Offline {
            retry_at_ms: 5_000,
            attempt: 1,
        };
        assert_eq!(text(offline(), 3, 1_000), "Offline (3 unsaved changes)");
        assert_eq!(text(offline(), 1, 1_000), "Offline (1 unsaved change)");
        assert_eq!(text(offline(), 0, 1_000), "Reconnecting in 4s");
        assert_eq!(text(offline(), 0, 1_001), "Reconnecting in 4s");
        assert_eq!(text(offline(), 0, 4_500), "Reconnecting in 1s");
        assert_eq!(
            text(Connection::Connecting { attempt: 0 }, 0, 0),
            "Connecting…"
        );
        assert_eq!(status_text(None, 0).0, "Connecting…");
    }
}
