//! Who may use the admin listener: the purge token, given as
//! `Authorization: Bearer <token>` or as the password of `Basic` credentials
//! (what a browser sends for the dashboard once asked), compared as SHA-256
//! digests in constant time. `admin_auth` says what needs it: `POST /purge`
//! alone (`purge`, the default) or every path but `/healthz` and `/readyz`
//! (`all`: metrics and the dashboard too).

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::body::Body;
use crate::handle::answer::plain;

/// What on the admin listener needs the purge token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdminAuth {
    /// `POST /purge` only.
    #[default]
    Purge,
    /// Every path but the probes (`/healthz`, `/readyz`).
    All,
}

impl AdminAuth {
    /// Whether a request for `path` needs the token.
    pub(crate) fn guards(self, path: &str) -> bool {
        match self {
            AdminAuth::Purge => path == "/purge",
            AdminAuth::All => !matches!(path, "/healthz" | "/readyz"),
        }
    }
}

/// The purge token, as its digest.
#[derive(Clone)]
pub(crate) struct Token([u8; 32]);

impl Token {
    pub(crate) fn new(token: &str) -> Self {
        Token(digest(token.as_bytes()))
    }

    /// Whether `headers` carry the token (Bearer, or Basic with it as password).
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        let Some((scheme, rest)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
        else {
            return false;
        };
        let given = if scheme.eq_ignore_ascii_case("bearer") {
            rest.trim().as_bytes().to_vec()
        } else if scheme.eq_ignore_ascii_case("basic") {
            let Ok(pair) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                return false;
            };
            match pair.iter().position(|&b| b == b':') {
                Some(colon) => pair[colon + 1..].to_vec(),
                None => return false,
            }
        } else {
            return false;
        };
        bool::from(digest(&given).ct_eq(&self.0))
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The answer to a request without the token.
pub(crate) fn unauthorized(what: &str) -> Response<Body> {
    let mut r = plain(
        StatusCode::UNAUTHORIZED,
        &format!("herdguard: {what} needs Authorization: Bearer <purge token>\n"),
    );
    let h = r.headers_mut();
    h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    // A browser asks for Basic credentials (any user, the token as password).
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"herdguard admin\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(token: &Token, v: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        token.admits(&h)
    }

    #[test]
    fn only_the_right_token_is_admitted() {
        let token = Token::new("s3cret");
        assert!(with(&token, "Bearer s3cret"));
        assert!(with(&token, "bearer  s3cret "));
        assert!(!with(&token, "Bearer s3cre"));
        assert!(!with(&token, "Bearer s3crett"));
        assert!(!with(&token, "s3cret"));
        assert!(!token.admits(&HeaderMap::new()));
        // Basic: any user, the token as password ("ops:s3cret", ":s3cret").
        assert!(with(&token, "Basic b3BzOnMzY3JldA=="));
        assert!(with(&token, "Basic OnMzY3JldA=="));
        // "s3cret" alone (no colon), "ops:wrong", not base64.
        assert!(!with(&token, "Basic czNjcmV0"));
        assert!(!with(&token, "Basic b3BzOndyb25n"));
        assert!(!with(&token, "Basic ***"));
    }

    #[test]
    fn all_guards_everything_but_the_probes() {
        assert!(AdminAuth::Purge.guards("/purge"));
        assert!(!AdminAuth::Purge.guards("/metrics"));
        for path in [
            "/",
            "/metrics",
            "/events",
            "/dashboard.json",
            "/purge",
            "/x",
        ] {
            assert!(AdminAuth::All.guards(path), "{path}");
        }
        assert!(!AdminAuth::All.guards("/healthz") && !AdminAuth::All.guards("/readyz"));
    }
}
