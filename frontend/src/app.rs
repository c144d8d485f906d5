//! The application shell: client-side routing between the document list
//! (`/`) and the editor (`/d/{doc}`), the user menu, and the service worker.

use leptos::ev::MouseEvent;
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::home::Home;
use crate::page::EditorPage;
use crate::presence::{PALETTE, User, initials};
use crate::util::{decode_component, document, window};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Home,
    Doc(String),
    NotFound,
}

impl Route {
    pub fn parse(path: &str) -> Self {
        match path {
            "" | "/" | "/index.html" => Route::Home,
            _ => match path.strip_prefix("/d/") {
                Some(rest) if !rest.is_empty() && !rest.contains('/') => {
                    Route::Doc(decode_component(rest))
                }
                _ => Route::NotFound,
            },
        }
    }
}

/// Navigation, shared through context.
#[derive(Clone, Copy)]
pub struct Nav {
    pub route: RwSignal<Route>,
}

impl Nav {
    pub fn go(&self, path: &str) {
        if let Ok(history) = window().history() {
            let _ = history.push_state_with_url(&JsValue::NULL, "", Some(path));
        }
        self.route.set(Route::parse(path));
        window().scroll_to_with_x_and_y(0.0, 0.0);
    }
}

pub fn use_nav() -> Nav {
    expect_context::<Nav>()
}

/// The person using this browser; shared through context.
pub fn use_user() -> RwSignal<User> {
    expect_context::<RwSignal<User>>()
}

/// Follows a plain left click on an in-app link without reloading the page.
pub fn follow(nav: Nav, path: String) -> impl Fn(MouseEvent) + 'static {
    move |ev: MouseEvent| {
        if ev.button() == 0 && !(ev.ctrl_key() || ev.meta_key() || ev.shift_key() || ev.alt_key()) {
            ev.prevent_default();
            nav.go(&path);
        }
    }
}

/// Registers `/sw.js`, which keeps the app shell available offline.
pub fn register_service_worker() {
    let navigator = window().navigator();
    let has =
        js_sys::Reflect::has(&navigator, &JsValue::from_str("serviceWorker")).unwrap_or(false);
    if !has {
        return;
    }
    let promise = navigator.service_worker().register("/sw.js");
    // Failing to register (e.g. a dev server without sw.js) is not an error for the user.
    let ignore = Closure::<dyn FnMut(JsValue)>::new(|_| {});
    let _ = promise.catch(&ignore);
    ignore.forget();
}

#[component]
pub fn App() -> impl IntoView {
    if let Some(boot) = document().get_element_by_id("boot") {
        boot.remove();
    }
    let path = window().location().pathname().unwrap_or_default();
    let nav = Nav {
        route: RwSignal::new(Route::parse(&path)),
    };
    provide_context(nav);
    let user = RwSignal::new(User::load());
    provide_context(user);
    Effect::new(move |_| user.with(User::save));

    let popstate = window_event_listener_untyped("popstate", move |_| {
        let path = window().location().pathname().unwrap_or_default();
        nav.route.set(Route::parse(&path));
    });
    on_cleanup(move || popstate.remove());

    move || match nav.route.get() {
        Route::Home => {
            document().set_title("Quire");
            view! { <Home/> }.into_any()
        }
        Route::Doc(name) => {
            document().set_title(&format!("{name} · Quire"));
            view! { <EditorPage name=name/> }.into_any()
        }
        Route::NotFound => {
            document().set_title("Not found · Quire");
            view! { <NotFound/> }.into_any()
        }
    }
}

#[component]
fn NotFound() -> impl IntoView {
    let nav = use_nav();
    view! {
        <header class="topbar">
            <Brand/>
        </header>
        <main class="narrow">
            <h1>"Page not found"</h1>
            <p>
                "There is nothing here. "
                <a href="/" on:click=follow(nav, "/".into())>"Go to your documents"</a>
                "."
            </p>
        </main>
    }
}

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
