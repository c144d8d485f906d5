//! In-app navigation: the routes (`/`, `/d/{doc}`), the history API, and
//! the two values every page reads from context (navigation, the user).

use leptos::ev::MouseEvent;
use leptos::prelude::*;
use wasm_bindgen::prelude::*;

use crate::browser::window;
use crate::presence::User;
use crate::urls::decode_component;

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
