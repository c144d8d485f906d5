//! The application shell: client-side routing between the document list
//! (`/`) and the editor (`/d/{doc}`), the user menu, and the service worker.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use crate::browser::{document, window};
use crate::home::Home;
use crate::nav::{Nav, Route, follow, use_nav};
use crate::page::EditorPage;
use crate::presence::User;
use crate::widgets::Brand;

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
