//! Small pieces of UI shared by the pages: the brand link, avatars, the
//! user menu, reading an input's value.

use leptos::prelude::*;
use wasm_bindgen::JsCast;

use crate::nav::{follow, use_nav, use_user};
use crate::presence::{PALETTE, initials};

/// The product name, linking home.
#[component]
pub fn Brand() -> impl IntoView {
    let nav = use_nav();
    view! {
        <a class="brand" href="/" on:click=follow(nav, "/".into()) aria-label="Quire: all documents">
            <span class="brand-mark" aria-hidden="true">"Q"</span>
            <span class="brand-name">"Quire"</span>
        </a>
    }
}

/// A round avatar with initials.
#[component]
pub fn Avatar(
    #[prop(into)] name: Signal<String>,
    #[prop(into)] color: Signal<String>,
    #[prop(optional)] you: bool,
) -> impl IntoView {
    view! {
        <span
            class="avatar"
            class:you=you
            style=move || format!("background:{}", color.get())
            title=move || if you { format!("{} (you)", name.get()) } else { name.get() }
            aria-hidden="true"
        >
            {move || initials(&name.get())}
        </span>
    }
}

/// The local user's avatar and a small form to change name and colour.
#[component]
pub fn UserMenu() -> impl IntoView {
    let user = use_user();
    let open = RwSignal::new(false);
    let name_input = NodeRef::<leptos::html::Input>::new();
    let toggle = move |_| {
        open.update(|o| *o = !*o);
        if open.get_untracked() {
            request_animation_frame(move || {
                if let Some(input) = name_input.get_untracked() {
                    let _ = input.focus();
                    input.select();
                }
            });
        }
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            open.set(false);
        }
    };
    view! {
        <div class="user-menu" on:keydown=on_key>
            <button
                type="button"
                id="user-button"
                class="user-button"
                aria-haspopup="dialog"
                aria-expanded=move || open.get().to_string()
                on:click=toggle
                title="Your name and colour"
            >
                <Avatar
                    name=Signal::derive(move || user.with(|u| u.name.clone()))
                    color=Signal::derive(move || user.with(|u| u.color.clone()))
                    you=true
                />
                <span class="user-name">{move || user.with(|u| u.name.clone())}</span>
            </button>
            <Show when=move || open.get()>
                <div class="popover" role="dialog" aria-label="Your name and colour">
                    <form on:submit=move |ev| {
                        ev.prevent_default();
                        open.set(false);
                    }>
                        <label for="user-name">"Your name"</label>
                        <input
                            id="user-name"
                            node_ref=name_input
                            type="text"
                            maxlength="40"
                            autocomplete="nickname"
                            prop:value=move || user.with(|u| u.name.clone())
                            on:input=move |ev| {
                                let value = event_target_value(&ev);
                                if !value.trim().is_empty() {
                                    user.update(|u| u.name = value.trim().to_owned());
                                }
                            }
                        />
                        <fieldset class="swatches">
                            <legend>"Colour"</legend>
                            {PALETTE
                                .iter()
                                .map(|&color| {
                                    view! {
                                        <label class="swatch" style=format!("--swatch:{color}")>
                                            <input
                                                type="radio"
                                                name="user-color"
                                                value=color
                                                prop:checked=move || user.with(|u| u.color == color)
                                                on:change=move |_| user.update(|u| u.color = color.to_owned())
                                            />
                                            <span class="visually-hidden">{color}</span>
                                        </label>
                                    }
                                })
                                .collect_view()}
                        </fieldset>
                        <button type="submit" class="button primary">"Done"</button>
                    </form>
                </div>
            </Show>
        </div>
    }
}

/// Reads an input's value from an event.
pub fn input_value(ev: &web_sys::Event) -> String {
    ev.target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        .map(|i| i.value())
        .unwrap_or_default()
}
