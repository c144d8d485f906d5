//! The document list: create, import, open, rename, delete, filter;
//! refreshed every few seconds without reloading the page.

use std::time::Duration;

use leptos::prelude::*;
use quire_protocol::DocName;

use crate::api::{self, DocSummary};
use crate::browser::{now_ms, random_u64};
use crate::files::ACCEPT;
use crate::format::{format_ago, format_bytes, format_datetime, generated_doc_name};
use crate::idb;
use crate::import::{files_of, import_file};
use crate::nav::{Nav, follow, use_nav};
use crate::urls::doc_path;
use crate::widgets::{Brand, UserMenu, input_value};

const POLL_MS: u64 = 3_000;

#[derive(Clone, Copy)]
struct HomeState {
    docs: RwSignal<Vec<DocSummary>>,
    loaded: RwSignal<bool>,
    error: RwSignal<Option<String>>,
    now: RwSignal<u64>,
    renaming: RwSignal<Option<String>>,
    rename_value: RwSignal<String>,
    rename_error: RwSignal<Option<String>>,
    deleting: RwSignal<Option<String>>,
    busy: RwSignal<bool>,
    action_error: RwSignal<Option<String>>,
    /// Files are being imported (the Import button waits).
    importing: RwSignal<bool>,
    /// Files are being dragged over the list.
    drop_active: RwSignal<bool>,
}

impl HomeState {
    fn refresh(self) {
        leptos::task::spawn_local(async move {
            let result = api::list_docs().await;
            let _ = self.now.try_set(now_ms());
            match result {
                Ok(docs) => {
                    let _ = self.docs.try_set(docs);
                    let _ = self.error.try_set(None);
                }
                Err(err) => {
                    let _ = self.error.try_set(Some(err.to_string()));
                }
            }
            let _ = self.loaded.try_set(true);
        });
    }

    /// Imports `files` one after the other; opens the last new document
    /// when all went in, else stays and says what failed (and what went in).
    fn import(self, nav: Nav, files: Vec<web_sys::File>) {
        if files.is_empty() || self.importing.get_untracked() {
            return;
        }
        self.importing.set(true);
        self.action_error.set(None);
        leptos::task::spawn_local(async move {
            let (mut done, mut failed) = (Vec::new(), Vec::new());
            for file in &files {
                match import_file(file).await {
                    Ok(imported) => done.push(imported),
                    Err(err) => failed.push(err),
                }
            }
            let _ = self.importing.try_set(false);
            if failed.is_empty() {
                if let Some(last) = done.last() {
                    nav.go(&doc_path(&last.doc));
                }
                return;
            }
            let mut text = failed.join(". ") + ".";
            if !done.is_empty() {
                let names: Vec<String> = done.iter().map(|d| format!("“{}”", d.doc)).collect();
                text.push_str(&format!(" Imported as {}.", names.join(", ")));
            }
            let _ = self.action_error.try_set(Some(text));
            self.refresh();
        });
    }

    fn exists(&self, name: &str) -> bool {
        self.docs
            .with_untracked(|d| d.iter().any(|x| x.name == name))
    }
}

fn validate(name: &str) -> Result<String, String> {
    let name = name.trim();
    DocName::parse(name)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| {
            let text = e.to_string();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
                None => text,
            }
        })
}

#[component]
pub fn Home() -> impl IntoView {
    let nav = use_nav();
    let state = HomeState {
        docs: RwSignal::new(Vec::new()),
        loaded: RwSignal::new(false),
        error: RwSignal::new(None),
        now: RwSignal::new(now_ms()),
        renaming: RwSignal::new(None),
        rename_value: RwSignal::new(String::new()),
        rename_error: RwSignal::new(None),
        deleting: RwSignal::new(None),
        busy: RwSignal::new(false),
        action_error: RwSignal::new(None),
        importing: RwSignal::new(false),
        drop_active: RwSignal::new(false),
    };
    let import_input = NodeRef::<leptos::html::Input>::new();
    let picked = move |_| {
        if let Some(input) = import_input.get_untracked() {
            let files = files_of(input.files());
            // Picking the same file again must fire `change` again.
            input.set_value("");
            state.import(nav, files);
        }
    };
    let carries_files = |ev: &leptos::ev::DragEvent| {
        ev.data_transfer()
            .is_some_and(|dt| dt.types().includes(&"Files".into(), 0))
    };
    let drag_over = move |ev: leptos::ev::DragEvent| {
        if carries_files(&ev) {
            ev.prevent_default();
            if let Some(dt) = ev.data_transfer() {
                dt.set_drop_effect("copy");
            }
            state.drop_active.set(true);
        }
    };
    let drag_leave = move |ev: leptos::ev::DragEvent| {
        let target = ev.current_target();
        let to = ev.related_target();
        let still_inside = target
            .and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Node>(t).ok())
            .zip(to.and_then(|t| wasm_bindgen::JsCast::dyn_into::<web_sys::Node>(t).ok()))
            .is_some_and(|(section, to)| section.contains(Some(&to)));
        if !still_inside {
            state.drop_active.set(false);
        }
    };
    let dropped = move |ev: leptos::ev::DragEvent| {
        state.drop_active.set(false);
        if !carries_files(&ev) {
            return;
        }
        ev.prevent_default();
        let files = files_of(ev.data_transfer().and_then(|dt| dt.files()));
        state.import(nav, files);
    };
    let filter = RwSignal::new(String::new());
    let new_name = RwSignal::new(String::new());
    let create_error = RwSignal::new(None::<String>);

    state.refresh();
    let poll = move || {
        // A hidden tab need not poll; it refreshes when shown again.
        if !crate::browser::document().hidden() {
            state.refresh();
        }
    };
    if let Ok(handle) = set_interval_with_handle(poll, Duration::from_millis(POLL_MS)) {
        on_cleanup(move || handle.clear());
    }

    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let typed = new_name.get_untracked();
        let name = if typed.trim().is_empty() {
            generated_doc_name(random_u64())
        } else {
            typed
        };
        match validate(&name) {
            Ok(name) => {
                create_error.set(None);
                nav.go(&doc_path(&name));
            }
            Err(err) => create_error.set(Some(err)),
        }
    };

    let filtered = Memo::new(move |_| {
        let needle = filter.get().trim().to_lowercase();
        let mut shown = state.docs.with(|docs| {
            docs.iter()
                .filter(|d| needle.is_empty() || d.name.to_lowercase().contains(&needle))
                .cloned()
                .collect::<Vec<_>>()
        });
        // Most recently edited first; open-but-unsaved ones, then the rest by name.
        shown.sort_by(|a, b| {
            b.modified_ms
                .cmp(&a.modified_ms)
                .then(b.connections.cmp(&a.connections))
                .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
        });
        shown
    });

    view! {
        <header class="topbar">
            <Brand/>
            <div class="spacer"></div>
            <UserMenu/>
        </header>
        // The whole page takes dropped files (a drop beside the list must
        // not make the browser leave the app to show the file).
        <main class="home" on:dragover=drag_over on:dragleave=drag_leave on:drop=dropped>
            <section class="create card" aria-labelledby="create-title">
                <h1 id="create-title">"Documents"</h1>
                <form class="create-form" on:submit=create>
                    <label class="visually-hidden" for="new-doc-name">"Name of the new document"</label>
                    <input
                        id="new-doc-name"
                        data-testid="new-doc-name"
                        type="text"
                        placeholder="Name a new document (or leave empty)"
                        maxlength="200"
                        autocomplete="off"
                        prop:value=move || new_name.get()
                        on:input=move |ev| new_name.set(input_value(&ev))
                        aria-describedby="create-error"
                    />
                    <button id="create-doc" data-testid="create-doc" type="submit" class="button primary">
                        "New document"
                    </button>
                    <button
                        id="import-button"
                        data-testid="import-button"
                        type="button"
                        class="button"
                        title="Import Markdown, HTML, text or Yjs files as new documents (or drop them on the list)"
                        disabled=move || state.importing.get()
                        on:click=move |_| {
                            if let Some(input) = import_input.get_untracked() {
                                input.click();
                            }
                        }
                    >
                        {move || if state.importing.get() { "Importing…" } else { "Import" }}
                    </button>
                    <input
                        id="import-file"
                        data-testid="import-file"
                        node_ref=import_input
                        type="file"
                        class="visually-hidden"
                        tabindex="-1"
                        aria-hidden="true"
                        accept=ACCEPT
                        multiple
                        on:change=picked
                    />
                </form>
                <p id="create-error" class="field-error" role="alert">
                    {move || create_error.get().unwrap_or_default()}
                </p>
            </section>

            <section
                class="list card"
                class:drop-active=move || state.drop_active.get()
                aria-labelledby="list-title"
            >
                <Show when=move || state.drop_active.get()>
                    <p class="drop-hint" id="drop-hint" aria-hidden="true">"Drop files to import them as new documents"</p>
                </Show>
                <div class="list-head">
                    <h2 id="list-title">
                        "All documents"
                        <span class="count">
                            {move || {
                                let (shown, total) = (filtered.with(Vec::len), state.docs.with(Vec::len));
                                if shown == total { format!("{total}") } else { format!("{shown} of {total}") }
                            }}
                        </span>
                    </h2>
                    <div class="list-tools">
                        <label class="visually-hidden" for="doc-filter">"Filter documents by name"</label>
                        <input
                            id="doc-filter"
                            data-testid="doc-filter"
                            type="search"
                            placeholder="Filter by name"
                            prop:value=move || filter.get()
                            on:input=move |ev| filter.set(input_value(&ev))
                        />
                        <button
                            type="button"
                            id="refresh-docs"
                            class="button"
                            on:click=move |_| state.refresh()
                            title="Refresh the list"
                        >
                            "Refresh"
                        </button>
                    </div>
                </div>
                <Show when=move || state.error.get().is_some()>
                    <p class="banner warning" role="alert" id="list-error">
                        {move || {
                            let err = state.error.get().unwrap_or_default();
                            if err == crate::token::TOKEN_REFUSED {
                                format!("{err}.")
                            } else {
                                format!(
                                    "Can’t reach the server ({err}). The list will update when it is back; documents you open keep working offline."
                                )
                            }
                        }}
                    </p>
                </Show>
                <Show when=move || state.action_error.get().is_some()>
                    <p class="banner error" role="alert" id="action-error">
                        {move || state.action_error.get().unwrap_or_default()}
                        <button type="button" class="link-button" on:click=move |_| state.action_error.set(None)>
                            "Dismiss"
                        </button>
                    </p>
                </Show>
                <Show
                    when=move || !filtered.with(Vec::is_empty)
                    fallback=move || {
                        view! {
                            <p class="empty" id="doc-list-empty">
                                {move || {
                                    if !state.loaded.get() {
                                        "Loading documents…".to_owned()
                                    } else if state.docs.with(Vec::is_empty) {
                                        "No documents yet. Create one above; it is saved as soon as you type.".to_owned()
                                    } else {
                                        format!("No document name contains “{}”.", filter.get().trim())
                                    }
                                }}
                            </p>
                        }
                    }
                >
                    <ul id="doc-list" class="doc-list" data-testid="doc-list">
                        <For
                            each=move || filtered.get()
                            key=|d| d.name.clone()
                            children=move |doc| view! { <DocRow name=doc.name state=state/> }
                        />
                    </ul>
                </Show>
            </section>
        </main>
    }
}

#[component]
fn DocRow(name: String, state: HomeState) -> impl IntoView {
    let nav = use_nav();
    let path = doc_path(&name);
    let key = name.clone();
    // The row stays while its numbers change, so a rename in progress keeps focus.
    let info = Memo::new(move |_| {
        state
            .docs
            .with(|d| d.iter().find(|x| x.name == key).cloned())
            .unwrap_or(DocSummary {
                name: key.clone(),
                bytes: 0,
                updates: 0,
                modified_ms: 0,
                connections: 0,
            })
    });
    let people = move || info.with(|i| i.connections);
    let modified = move || info.with(|i| i.modified_ms);
    let rename_input = NodeRef::<leptos::html::Input>::new();
    let confirm_button = NodeRef::<leptos::html::Button>::new();
    let n1 = name.clone();
    let n2 = name.clone();
    let n3 = name.clone();
    let n4 = name.clone();
    let is_renaming = Memo::new(move |_| state.renaming.get().as_deref() == Some(n1.as_str()));
    let is_deleting = Memo::new(move |_| state.deleting.get().as_deref() == Some(n2.as_str()));

    let start_rename = move |_| {
        state.deleting.set(None);
        state.rename_error.set(None);
        state.rename_value.set(n3.clone());
        state.renaming.set(Some(n3.clone()));
        request_animation_frame(move || {
            if let Some(input) = rename_input.get_untracked() {
                let _ = input.focus();
                input.select();
            }
        });
    };
    let start_delete = move |_| {
        state.renaming.set(None);
        state.deleting.set(Some(n4.clone()));
        request_animation_frame(move || {
            if let Some(button) = confirm_button.get_untracked() {
                let _ = button.focus();
            }
        });
    };

    let old = name.clone();
    let submit_rename = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let old = old.clone();
        let new = match validate(&state.rename_value.get_untracked()) {
            Ok(new) => new,
            Err(err) => {
                state.rename_error.set(Some(err));
                return;
            }
        };
        if new == old {
            state.renaming.set(None);
            return;
        }
        if state.exists(&new) {
            state
                .rename_error
                .set(Some(format!("A document named “{new}” already exists.")));
            return;
        }
        state.busy.set(true);
        leptos::task::spawn_local(async move {
            let result = api::rename_doc(&old, &new).await;
            let _ = state.busy.try_set(false);
            match result {
                Ok(()) => {
                    let _ = idb::remove(&old).await;
                    let _ = state.renaming.try_set(None);
                    state.refresh();
                }
                Err(err) => {
                    let _ = state
                        .rename_error
                        .try_set(Some(format!("Could not rename: {err}.")));
                }
            }
        });
    };

    let victim = name.clone();
    let confirm_delete = move |_| {
        let victim = victim.clone();
        state.busy.set(true);
        leptos::task::spawn_local(async move {
            let result = api::delete_doc(&victim).await;
            let _ = state.busy.try_set(false);
            let _ = state.deleting.try_set(None);
            match result {
                Ok(()) => {
                    let _ = idb::remove(&victim).await;
                }
                Err(err) if err.is_not_found() => {
                    let _ = idb::remove(&victim).await;
                }
                Err(err) => {
                    let _ = state
                        .action_error
                        .try_set(Some(format!("Could not delete “{victim}”: {err}.")));
                }
            }
            state.refresh();
        });
    };

    let label_rename = format!("Rename {name}");
    let label_delete = format!("Delete {name}");
    let edited_title = move || {
        let modified = modified();
        if modified > 0 {
            format_datetime(modified)
        } else {
            String::new()
        }
    };
    let display_name = name.clone();
    let delete_name = name.clone();
    let rename_label = format!("New name for {name}");

    view! {
        <li class="doc-row" data-testid="doc-row" data-doc=name.clone()>
            <div class="doc-main">
                <a class="doc-link" data-testid="doc-link" href=path.clone() on:click=follow(nav, path.clone())>
                    {display_name}
                </a>
                <div class="doc-meta">
                    <span class="doc-size" data-testid="doc-size">{move || format_bytes(info.with(|i| i.bytes))}</span>
                    <span class="dot" aria-hidden="true">"·"</span>
                    <span class="doc-modified" data-testid="doc-modified" title=edited_title>
                        {move || {
                            let modified = modified();
                            if modified == 0 {
                                "not saved yet".to_owned()
                            } else {
                                format!("edited {}", format_ago(modified, state.now.get()))
                            }
                        }}
                    </span>
                    <span class="dot" aria-hidden="true">"·"</span>
                    <span
                        class="doc-people"
                        class:live=move || { people() > 0 }
                        data-testid="doc-people"
                        data-count=move || people().to_string()
                    >
                        {move || match people() {
                            0 => "nobody here".to_owned(),
                            1 => "1 person here".to_owned(),
                            n => format!("{n} people here"),
                        }}
                    </span>
                </div>
            </div>
            <div class="doc-actions">
                <button type="button" class="button small" data-testid="rename-doc" aria-label=label_rename on:click=start_rename>
                    "Rename"
                </button>
                <button type="button" class="button small danger-outline" data-testid="delete-doc" aria-label=label_delete on:click=start_delete>
                    "Delete"
                </button>
            </div>
            <Show when=move || is_renaming.get()>
                <form class="row-panel" on:submit=submit_rename.clone()>
                    <label class="visually-hidden" for="rename-input">{rename_label.clone()}</label>
                    <input
                        id="rename-input"
                        node_ref=rename_input
                        data-testid="rename-input"
                        type="text"
                        maxlength="200"
                        prop:value=move || state.rename_value.get()
                        on:input=move |ev| state.rename_value.set(input_value(&ev))
                        on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                            if ev.key() == "Escape" {
                                state.renaming.set(None);
                            }
                        }
                    />
                    <button type="submit" class="button primary small" data-testid="rename-save" disabled=move || state.busy.get()>
                        "Save"
                    </button>
                    <button type="button" class="button small" data-testid="rename-cancel" on:click=move |_| state.renaming.set(None)>
                        "Cancel"
                    </button>
                    <p class="field-error" role="alert">{move || state.rename_error.get().unwrap_or_default()}</p>
                </form>
            </Show>
            <Show when=move || is_deleting.get()>
                <div
                    class="row-panel confirm"
                    role="alertdialog"
                    aria-label="Confirm deletion"
                    on:keydown=move |ev: leptos::ev::KeyboardEvent| {
                        if ev.key() == "Escape" {
                            state.deleting.set(None);
                        }
                    }
                >
                    <p>"Delete “" {delete_name.clone()} "” for everyone? This cannot be undone."</p>
                    <button
                        type="button"
                        class="button danger small"
                        data-testid="confirm-delete"
                        node_ref=confirm_button
                        on:click=confirm_delete.clone()
                        disabled=move || state.busy.get()
                    >
                        "Delete"
                    </button>
                    <button type="button" class="button small" data-testid="cancel-delete" on:click=move |_| state.deleting.set(None)>
                        "Cancel"
                    </button>
                </div>
            </Show>
        </li>
    }
}
