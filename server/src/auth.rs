//! Access tokens: who may read, write or administer which documents.
//!
//! With `--auth-key`, every WebSocket and API request needs a token. A
//! token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first
//! part))`; the claims name **either** one document exactly (`"doc"`) **or**
//! a prefix of document names (`"prefix"`; `""` for all), never both, so a
//! document named `*` or `a*` is just a name. They also carry a permission,
//! an expiry (Unix seconds) and the format version `"v": 2`. Tokens of the
//! first format (no `v`, a trailing `*` in `doc` meaning a prefix) are
//! refused with [`AuthError::OldFormat`]: what they grant is ambiguous.
//! The signature is checked in constant time by the `hmac` crate; nothing
//! here is hand-rolled cryptography. Verification takes `now` as an
//! argument.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

use quire_protocol::close;

type HmacSha256 = Hmac<Sha256>;

/// The claims format this server mints and accepts.
pub const TOKEN_VERSION: u32 = 2;

/// What a token allows; each level includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Receive the document and presence, set one's own presence.
    Read,
    /// Also change the document, send events and chat.
    Write,
    /// Also delete documents.
    Admin,
}

/// Which documents a token covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Exactly the document of this name (whatever characters it holds).
    Doc(String),
    /// Every document whose name starts with this (`""`: all of them).
    Prefix(String),
}

/// The signed part of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub scope: Scope,
    pub perm: Permission,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// The claims as JSON: `doc` and `prefix` are separate fields so that no
/// character of a name can turn it into a pattern.
#[derive(Serialize, Deserialize)]
struct WireClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    doc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    perm: Permission,
    exp: u64,
}

impl Claims {
    /// A token for exactly the document `name`.
    pub fn doc(name: impl Into<String>, perm: Permission, exp: u64) -> Self {
        let scope = Scope::Doc(name.into());
        Self { scope, perm, exp }
    }

    /// A token for every document whose name starts with `prefix`.
    pub fn prefix(prefix: impl Into<String>, perm: Permission, exp: u64) -> Self {
        let scope = Scope::Prefix(prefix.into());
        Self { scope, perm, exp }
    }

    /// Whether the token covers `doc`.
    pub fn covers(&self, doc: &str) -> bool {
        match &self.scope {
            Scope::Doc(name) => name == doc,
            Scope::Prefix(prefix) => doc.starts_with(prefix.as_str()),
        }
    }

    fn to_wire(&self) -> WireClaims {
        let (doc, prefix) = match &self.scope {
            Scope::Doc(name) => (Some(name.clone()), None),
            Scope::Prefix(prefix) => (None, Some(prefix.clone())),
        };
        WireClaims {
            v: Some(TOKEN_VERSION),
            doc,
            prefix,
            perm: self.perm,
            exp: self.exp,
        }
    }

    fn from_wire(wire: WireClaims) -> Result<Self, AuthError> {
        if wire.v != Some(TOKEN_VERSION) {
            return Err(AuthError::OldFormat);
        }
        let scope = match (wire.doc, wire.prefix) {
            (Some(name), None) => Scope::Doc(name),
            (None, Some(prefix)) => Scope::Prefix(prefix),
            _ => return Err(AuthError::Malformed),
        };
        Ok(Self {
            scope,
            perm: wire.perm,
            exp: wire.exp,
        })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error(
        "the token is of the old format, whose document patterns are ambiguous; \
         mint a new one with `quire token --doc NAME` or `--prefix P`"
    )]
    OldFormat,
    #[error("the token's signature is wrong")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token does not grant access to this document")]
    WrongDocument,
    #[error("the token does not allow this action")]
    Insufficient,
}

impl AuthError {
    /// 4401 when the caller must get a (new) token, 4403 when the token is
    /// valid but not for this.
    pub fn close_code(&self) -> u16 {
        match self {
            AuthError::WrongDocument | AuthError::Insufficient => close::FORBIDDEN,
            _ => close::UNAUTHORIZED,
        }
    }
}

/// Signs and checks tokens with one secret key.
#[derive(Clone)]
pub struct TokenKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(&claims.to_wire()).expect("claims serialise");
        self.sign_json(&json)
    }

    /// Signs claims already in JSON.
    fn sign_json(&self, json: &[u8]) -> String {
        let body = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{signature}")
    }

    /// Checks the signature and expiry; returns the claims.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, AuthError> {
        let (body, signature) = token.split_once('.').ok_or(AuthError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| AuthError::Malformed)?;
        let wire: WireClaims = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
        let claims = Claims::from_wire(wire)?;
        if claims.exp <= now_secs {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }

    /// Verifies `token` for `doc` with at least `needed`.
    pub fn authorize(
        &self,
        token: Option<&str>,
        doc: &str,
        needed: Permission,
        now_secs: u64,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify(token.ok_or(AuthError::Missing)?, now_secs)?;
        if !claims.covers(doc) {
            return Err(AuthError::WrongDocument);
        }
        if claims.perm < needed {
            return Err(AuthError::Insufficient);
        }
        Ok(claims)
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    crate::unix_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(doc: &str, perm: Permission, exp: u64) -> Claims {
        Claims::doc(doc, perm, exp)
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let key = TokenKey::new("secret");
        let token = key.sign(&claims("notes", Permission::Write, 1_000));
        assert_eq!(key.verify(&token, 999).unwrap().perm, Permission::Write);
        assert_eq!(key.verify(&token, 1_000), Err(AuthError::Expired));
    }

    #[test]
    fn tampering_or_another_key_is_refused() {
        let key = TokenKey::new("secret");
        let token = key.sign(&claims("notes", Permission::Read, 1_000));
        assert_eq!(
            TokenKey::new("other").verify(&token, 0),
            Err(AuthError::BadSignature)
        );
        let forged_body =
            URL_SAFE_NO_PAD.encode(br#"{"v":2,"prefix":"","perm":"admin","exp":9999999999}"#);
        let signature = token.split_once('.').unwrap().1;
        assert_eq!(
            key.verify(&format!("{forged_body}.{signature}"), 0),
            Err(AuthError::BadSignature)
        );
        assert_eq!(key.verify("not a token", 0), Err(AuthError::Malformed));
        assert_eq!(key.verify("a.%%%", 0), Err(AuthError::Malformed));
    }

    #[test]
    fn patterns_and_permissions() {
        let key = TokenKey::new("k");
        let team = key.sign(&Claims::prefix("team-", Permission::Read, 10));
        assert!(
            key.authorize(Some(&team), "team-plan", Permission::Read, 0)
                .is_ok()
        );
        assert_eq!(
            key.authorize(Some(&team), "other", Permission::Read, 0),
            Err(AuthError::WrongDocument)
        );
        assert_eq!(
            key.authorize(Some(&team), "team-plan", Permission::Write, 0),
            Err(AuthError::Insufficient)
        );
        assert_eq!(
            key.authorize(None, "team-plan", Permission::Read, 0),
            Err(AuthError::Missing)
        );
        let all = key.sign(&Claims::prefix("", Permission::Admin, 10));
        assert!(
            key.authorize(Some(&all), "anything", Permission::Admin, 0)
                .is_ok()
        );
        assert_eq!(AuthError::Missing.close_code(), 4401);
        assert_eq!(AuthError::WrongDocument.close_code(), 4403);
    }

    #[test]
    fn a_document_named_star_is_only_itself() {
        let key = TokenKey::new("k");
        for name in ["*", "a*"] {
            let token = key.sign(&claims(name, Permission::Write, 10));
            assert!(
                key.authorize(Some(&token), name, Permission::Write, 0)
                    .is_ok()
            );
            for other in ["a", "ab", "anything", "", "**", "a**"] {
                assert_eq!(
                    key.authorize(Some(&token), other, Permission::Read, 0),
                    Err(AuthError::WrongDocument),
                    "a token for {name:?} opened {other:?}"
                );
            }
        }
        // A prefix token for "a*" covers names starting with "a*" only.
        let token = key.sign(&Claims::prefix("a*", Permission::Read, 10));
        assert!(
            key.authorize(Some(&token), "a*b", Permission::Read, 0)
                .is_ok()
        );
        assert_eq!(
            key.authorize(Some(&token), "ab", Permission::Read, 0),
            Err(AuthError::WrongDocument)
        );
    }

    #[test]
    fn old_format_and_ambiguous_tokens_are_refused() {
        let key = TokenKey::new("k");
        // The first format: no version, a trailing `*` meant a prefix.
        for old in [
            r#"{"doc":"*","perm":"admin","exp":9999999999}"#,
            r#"{"doc":"notes","perm":"read","exp":9999999999}"#,
            r#"{"v":1,"doc":"notes","perm":"read","exp":9999999999}"#,
        ] {
            let token = key.sign_json(old.as_bytes());
            assert_eq!(key.verify(&token, 0), Err(AuthError::OldFormat), "{old}");
            assert_eq!(AuthError::OldFormat.close_code(), 4401);
        }
        // Both or neither of `doc` and `prefix`.
        for odd in [
            r#"{"v":2,"doc":"a","prefix":"a","perm":"read","exp":9999999999}"#,
            r#"{"v":2,"perm":"read","exp":9999999999}"#,
        ] {
            assert_eq!(
                key.verify(&key.sign_json(odd.as_bytes()), 0),
                Err(AuthError::Malformed),
                "{odd}"
            );
        }
        let json = String::from_utf8(
            URL_SAFE_NO_PAD
                .decode(
                    key.sign(&claims("*", Permission::Read, 10))
                        .split_once('.')
                        .unwrap()
                        .0,
                )
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json, r#"{"v":2,"doc":"*","perm":"read","exp":10}"#);
    }
}
