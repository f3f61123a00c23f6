//! `Bursar-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`,
//! the scheme Stripe uses: the timestamp inside the MAC stops replays beyond
//! the tolerance, and the MAC covers the exact bytes received.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from now.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing or malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the {TOLERANCE_SECS} s tolerance")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

fn mac(secret: &str, t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", hex::encode(mac(secret, t, body).finalize().into_bytes()))
}

pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    // verify_slice compares in constant time.
    if signatures.iter().any(|s| mac(secret, t, body).verify_slice(s).is_ok()) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_secret_body_and_time() {
        let header = sign("whsec_a", 1_700_000_000, b"{\"id\":1}");
        assert_eq!(verify("whsec_a", &header, b"{\"id\":1}", 1_700_000_100), Ok(()));
        assert_eq!(verify("whsec_b", &header, b"{\"id\":1}", 1_700_000_100), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec_a", &header, b"{\"id\":2}", 1_700_000_100), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec_a", &header, b"{\"id\":1}", 1_700_000_301), Err(SignatureError::Stale));
        assert_eq!(verify("whsec_a", "v1=abcd", b"", 0), Err(SignatureError::Malformed));
        assert_eq!(verify("whsec_a", "t=1", b"", 1), Err(SignatureError::Malformed));
    }

    #[test]
    fn the_mac_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac,hashlib;
        // print(hmac.new(b'secret', b'123.body', hashlib.sha256).hexdigest())"
        let expected = "t=123,v1=fa1c6a291939b89044717d74b55fe23e137acf3edd31d2992540f037f035357a";
        assert_eq!(sign("secret", 123, b"body"), expected);
    }
}
