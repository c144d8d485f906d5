//! Access tokens: who may read, write or administer which documents.
//!
//! With `--auth-key`, every WebSocket and API request needs a token. A
//! token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first
//! part))`; the claims name a document or a prefix pattern (`"team-*"`, or
//! `"*"` for all), a permission and an expiry (Unix seconds). The signature is
//! checked in constant time by the `hmac` crate; nothing here is hand-rolled
//! cryptography. Verification takes `now` as an argument.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

use quire_protocol::close;

type HmacSha256 = Hmac<Sha256>;

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

/// The signed part of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// A document name, or a prefix followed by `*`.
    pub doc: String,
    pub perm: Permission,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

impl Claims {
    /// Whether the token's pattern covers `doc`.
    pub fn covers(&self, doc: &str) -> bool {
        match self.doc.strip_suffix('*') {
            Some(prefix) => doc.starts_with(prefix),
            None => self.doc == doc,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
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
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
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
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
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
        Claims {
            doc: doc.into(),
            perm,
            exp,
        }
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
        let forged_body = URL_SAFE_NO_PAD.encode(br#"{"doc":"*","perm":"admin","exp":9999999999}"#);
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
        let team = key.sign(&claims("team-*", Permission::Read, 10));
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
        let all = key.sign(&claims("*", Permission::Admin, 10));
        assert!(
            key.authorize(Some(&all), "anything", Permission::Admin, 0)
                .is_ok()
        );
        assert_eq!(AuthError::Missing.close_code(), 4401);
        assert_eq!(AuthError::WrongDocument.close_code(), 4403);
    }
}
