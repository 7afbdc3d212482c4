//! `/authenticate` and `/auth_extended` answers.

use serde::Deserialize;

use crate::secret::Secret;

/// `POST /auth_extended` as it arrives. The token is a [`Secret`], so it never prints; the
/// client keeps it and hands out only [`AuthInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthExtendedResponse {
    /// The user name.
    #[serde(default)]
    pub username: Option<String>,
    /// The user's id.
    #[serde(default)]
    pub id: Option<String>,
    /// The bearer token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Whether the user is an admin.
    #[serde(default)]
    pub admin: Option<bool>,
    /// A non-fatal login problem (LDAP group refresh failure and the like).
    #[serde(default)]
    pub error: Option<String>,
}

impl AuthExtendedResponse {
    /// The identity part, without the token.
    pub fn info(&self) -> AuthInfo {
        AuthInfo {
            username: self.username.clone(),
            user_id: self.id.clone(),
            admin: self.admin,
            error: self.error.as_deref().map(crate::error::description),
        }
    }
}

/// Who ccm is on a worker, as `/auth_extended` says (the token itself is kept inside the
/// client and never handed out).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthInfo {
    /// The user name.
    pub username: Option<String>,
    /// ccm's own CML user id: its `user_activity` telemetry is noise for idle detection.
    pub user_id: Option<String>,
    /// Whether the user is an admin (licensing needs one).
    pub admin: Option<bool>,
    /// A non-fatal login problem CML reported (e.g. an LDAP group refresh failure).
    pub error: Option<String>,
}

/// The `sub` claim of a JWT (the user id in CML's tokens), read without checking the
/// signature: used only to learn ccm's own user id when `/auth_extended` is missing.
pub(crate) fn jwt_subject(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(Deserialize)]
    struct Claims {
        sub: Option<String>,
    }
    serde_json::from_slice::<Claims>(&bytes).ok()?.sub
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_token_should_yield_its_subject() {
        let token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJjb20uY2lzY28udmlybCIsImlhdCI6MTczMjYxMDAwMCwiZXhwIjoxNzMyNjk2NDAwLCJzdWIiOiIwMDAwMDAwMC0wMDAwLTQwMDAtYTAwMC0wMDAwMDAwMDAwMDAifQ.c2lnbmF0dXJlLW5vdC1yZWFs";
        assert_eq!(
            jwt_subject(token).as_deref(),
            Some("00000000-0000-4000-a000-000000000000")
        );
        assert_eq!(jwt_subject("garbage"), None);
        assert_eq!(jwt_subject("a.b.c"), None);
    }

    #[test]
    fn auth_extended_debug_should_not_show_the_token() {
        let r: AuthExtendedResponse = serde_json::from_str(
            r#"{"username":"admin","id":"x","token":"eyJ0eXAi.eyJzdWIi.c2ln","admin":true,"error":null}"#,
        )
        .unwrap();
        assert!(!format!("{r:?}").contains("eyJ"));
        assert_eq!(r.info().user_id.as_deref(), Some("x"));
    }
}
