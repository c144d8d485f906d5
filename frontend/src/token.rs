//! The access token of a `?token=` link: taken out of the address bar,
//! kept in `sessionStorage`, sent with every connection and request; and
//! what it allows (read its claims, without checking the signature: the
//! server does that; the app only uses it to say "view only" up front).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use wasm_bindgen::prelude::*;

use crate::browser::window;

/// `sessionStorage` key of the access token taken from a `?token=` link.
const TOKEN_KEY: &str = "quire.token";

/// Takes `?token=...` out of the page URL (if present): remembers it in
/// `sessionStorage` and removes it from the address bar, so it does not
/// linger there (or in the history) while links between pages keep working.
pub fn capture_token() {
    let location = window().location();
    let Ok(href) = location.href() else { return };
    let Ok(url) = web_sys::Url::new(&href) else {
        return;
    };
    let params = url.search_params();
    let Some(token) = params.get("token") else {
        return;
    };
    if !token.is_empty()
        && let Some(storage) = window().session_storage().ok().flatten()
    {
        let _ = storage.set_item(TOKEN_KEY, &token);
    }
    params.delete("token");
    url.set_search(&String::from(params.to_string()));
    if let Ok(history) = window().history() {
        let state = history.state().unwrap_or(JsValue::NULL);
        let _ = history.replace_state_with_url(&state, "", Some(&url.href()));
    }
}

/// The access token remembered by [`capture_token`], if any.
pub fn token() -> Option<String> {
    window()
        .session_storage()
        .ok()
        .flatten()
        .and_then(|s| s.get_item(TOKEN_KEY).ok().flatten())
        .filter(|t| !t.is_empty())
}

/// What the user is told when the server refuses the access token.
pub const TOKEN_REFUSED: &str =
    "This link's access token is missing, expired or does not allow this";

/// Whether a token only allows reading (its claims say `"perm": "read"`).
pub fn is_read_only(token: &str) -> bool {
    let Some(claims) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("perm").and_then(|p| p.as_str()).map(|p| p == "read"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_tokens_are_recognised() {
        let claims = |perm: &str| {
            URL_SAFE_NO_PAD.encode(format!(r#"{{"doc":"a","perm":"{perm}","exp":9}}"#))
        };
        assert!(is_read_only(&format!("{}.sig", claims("read"))));
        assert!(!is_read_only(&format!("{}.sig", claims("write"))));
        assert!(!is_read_only("garbage"));
    }
}
