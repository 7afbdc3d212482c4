//! `X-Ccm-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the raw request body, keyed
//! with the webhook's secret. Receivers recompute it over the bytes they received and compare
//! in constant time ([`verify`] does both).

use aws_lc_rs::hmac;

/// The header's name.
pub const HEADER: &str = "x-ccm-signature-256";

/// The header value for `body`: `sha256=<hex>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// Whether `header` is the signature of `body` under `secret` (constant-time comparison).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex_sig) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_should_match_the_rfc_4231_vector_and_verify() {
        // RFC 4231, test case 2.
        let sig = sign("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify("Jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", b"what do ya want for nothing!", &sig));
        assert!(!verify("jefe", b"what do ya want for nothing?", &sig));
        assert!(!verify("Jefe", b"x", "sha256=zz"));
        assert!(!verify("Jefe", b"x", "md5=00"));
    }
}
