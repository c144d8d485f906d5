//! Who is here: the local user (name and colour, remembered in
//! localStorage) and the remote peers from awareness states of the form
//! `{"user":{"name","color"},"cursor":{"anchor","head"}}` (y-protocols
//! convention), where anchor and head are Yjs relative positions as JSON,
//! as y-prosemirror and y-codemirror write them (see [`crate::relpos`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::browser::{local_get, local_set, random_u64};

const USER_KEY: &str = "quire.user";

/// Colours that read well as carets, highlights and avatar backgrounds with white text.
pub const PALETTE: [&str; 10] = [
    "#d14343", "#c2571a", "#a16207", "#3f8f29", "#0f8577", "#1d72b8", "#4f5bd5", "#8a44c8",
    "#c0347e", "#5f6b7a",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub color: String,
}

impl User {
    /// The remembered user, or a new one with a friendly random name.
    pub fn load() -> Self {
        if let Some(user) = local_get(USER_KEY)
            .and_then(|s| serde_json::from_str::<User>(&s).ok())
            .filter(|u| !u.name.trim().is_empty())
        {
            return user;
        }
        const ANIMALS: [&str; 12] = [
            "Otter", "Heron", "Lynx", "Marten", "Puffin", "Ibex", "Badger", "Falcon", "Gecko",
            "Walrus", "Koala", "Wren",
        ];
        let r = random_u64();
        let user = User {
            name: format!("Anonymous {}", ANIMALS[(r % ANIMALS.len() as u64) as usize]),
            color: PALETTE[((r >> 8) % PALETTE.len() as u64) as usize].to_owned(),
        };
        user.save();
        user
    }

    pub fn save(&self) {
        if let Ok(text) = serde_json::to_string(self) {
            local_set(USER_KEY, &text);
        }
    }

    /// The awareness state to publish.
    pub fn awareness(&self, cursor: Option<(Value, Value)>) -> String {
        let cursor = cursor.map_or(
            Value::Null,
            |(anchor, head)| json!({ "anchor": anchor, "head": head }),
        );
        json!({
            "user": { "name": self.name, "color": self.color },
            "cursor": cursor,
        })
        .to_string()
    }
}

/// Up to two initials of a name, for an avatar.
pub fn initials(name: &str) -> String {
    let mut words = name.split_whitespace().filter_map(|w| w.chars().next());
    let first = words.next();
    let last = words.next_back();
    first
        .into_iter()
        .chain(last)
        .flat_map(char::to_uppercase)
        .collect()
}

/// Someone else in the document (one browser tab or client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub client: u64,
    pub name: String,
    pub color: String,
    pub anchor: Option<Value>,
    pub head: Option<Value>,
}

impl Peer {
    /// Reads an awareness state; clients without a `user` (stock Yjs
    /// clients, `quire watch`) still count, as anonymous.
    pub fn from_state(client: u64, state: &str) -> Self {
        let value: Value = serde_json::from_str(state).unwrap_or(Value::Null);
        let text = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let color = text("/user/color")
            .filter(|c| is_safe_color(c))
            .unwrap_or_else(|| PALETTE[(client % PALETTE.len() as u64) as usize].to_owned());
        Self {
            client,
            name: text("/user/name")
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| "Anonymous".into()),
            color,
            anchor: value
                .pointer("/cursor/anchor")
                .filter(|v| !v.is_null())
                .cloned(),
            head: value
                .pointer("/cursor/head")
                .filter(|v| !v.is_null())
                .cloned(),
        }
    }
}

/// Only `#rgb`/`#rrggbb` colours from other people are put into styles.
pub fn is_safe_color(color: &str) -> bool {
    let hex = color.strip_prefix('#').unwrap_or("");
    matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_read_leniently() {
        let p = Peer::from_state(
            7,
            r##"{"user":{"name":"Ada","color":"#123abc"},"cursor":{"anchor":{"item":{"client":1,"clock":2}},"head":{"item":null,"type":{"client":1,"clock":0},"assoc":0}}}"##,
        );
        assert_eq!(p.name, "Ada");
        assert_eq!(p.color, "#123abc");
        assert_eq!(p.anchor.as_ref().unwrap()["item"]["clock"], 2);
        let p = Peer::from_state(
            3,
            r#"{"user":{"name":"x","color":"red;background:url(x)"}}"#,
        );
        assert!(is_safe_color(&p.color));
        let p = Peer::from_state(3, "null");
        assert_eq!(p.name, "Anonymous");
        assert_eq!(p.head, None);
    }

    #[test]
    fn initials_of_names() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("ada"), "A");
        assert_eq!(initials("Anonymous Grey Otter"), "AO");
        assert_eq!(initials("  "), "");
    }

    #[test]
    fn awareness_has_the_y_protocols_shape() {
        let user = User {
            name: "Bo".into(),
            color: "#fff".into(),
        };
        let v: Value = serde_json::from_str(
            &user.awareness(Some((json!({"item": null}), json!({"tname": "default"})))),
        )
        .unwrap();
        assert_eq!(v["user"]["name"], "Bo");
        assert_eq!(v["cursor"]["head"]["tname"], "default");
        let v: Value = serde_json::from_str(&user.awareness(None)).unwrap();
        assert!(v["cursor"].is_null());
    }
}

/// A remote caret's name label shows this long after the caret last moved.
pub const LABEL_MS: f64 = 3_000.0;

/// When each peer's caret last moved, for the name labels that fade after
/// [`LABEL_MS`]; both editors' caret layers keep one.
#[derive(Default)]
pub struct CaretMoves(HashMap<u64, (Option<Value>, f64)>);

impl CaretMoves {
    /// Takes the peers' new carets at `now`: forgets peers that left and
    /// restarts the label of every caret whose head moved.
    pub fn update(&mut self, peers: &[Peer], now: f64) {
        self.0
            .retain(|client, _| peers.iter().any(|p| p.client == *client));
        for peer in peers {
            let entry = self.0.entry(peer.client).or_insert((None, now));
            if entry.0 != peer.head {
                *entry = (peer.head.clone(), now);
            }
        }
    }

    /// When `client`'s label stops showing, if it shows at `now`.
    pub fn label_until(&self, client: u64, now: f64) -> Option<f64> {
        let moved_at = self.0.get(&client).map_or(0.0, |m| m.1);
        (now - moved_at < LABEL_MS).then_some(moved_at + LABEL_MS)
    }
}
