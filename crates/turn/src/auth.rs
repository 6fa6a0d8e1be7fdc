//! Who may allocate: static long-term users and the TURN REST shared-secret
//! scheme (as coturn's `use-auth-secret` implements it), plus stateless nonces.
//!
//! Owns credential checks and nonce minting; knows nothing about allocations.

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Where passwords come from.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Static users: name → password.
    pub users: HashMap<String, String>,
    /// The TURN REST shared secret: the username is `expiry:id` (Unix seconds)
    /// and the password is base64(HMAC-SHA1(secret, username)).
    pub shared_secret: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Why a username has no password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    Expired,
}

impl Credentials {
    /// The password of `username` at Unix time `now_unix`, or why there is none.
    pub fn password(&self, username: &str, now_unix: u64) -> Result<String, Refusal> {
        if let Some(password) = self.users.get(username) {
            return Ok(password.clone());
        }
        let Some(secret) = &self.shared_secret else {
            return Err(Refusal::UnknownUser);
        };
        let expiry = rest_expiry(username).ok_or(Refusal::UnknownUser)?;
        if expiry < now_unix {
            return Err(Refusal::Expired);
        }
        Ok(rest_password(secret, username))
    }
}

/// The expiry of a REST username: its leading number, before an optional `:id`.
fn rest_expiry(username: &str) -> Option<u64> {
    let timestamp = username.split(':').next()?;
    if timestamp.is_empty() || !timestamp.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    timestamp.parse().ok()
}

/// base64(HMAC-SHA1(secret, username)), the TURN REST password.
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = match HmacSha1::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length; this branch cannot be taken.
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Short-lived REST credentials for one client: valid until `expiry_unix`.
pub fn rest_credentials(secret: &str, id: &str, expiry_unix: u64) -> (String, String) {
    let username = format!("{expiry_unix}:{id}");
    let password = rest_password(secret, &username);
    (username, password)
}

/// Stateless nonces: the expiry and a MAC over it and the client's address,
/// so a nonce cannot be forged, moved to another client, or used after it expires.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Nonces(..)")
    }
}

/// Length of a nonce on the wire: 9 bytes (4 of expiry, 5 of MAC) in
/// unpadded base64url. Kept this short so that a 401 (with realm `duet`) is
/// no larger than the smallest real Allocate request (52 bytes), and so never
/// amplifies. A 40-bit MAC cannot be guessed online; the nonce guards
/// freshness only, the password is what MESSAGE-INTEGRITY proves.
pub const NONCE_LEN: usize = 12;
const MAC_BYTES: usize = 5;

impl Nonces {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// A nonce for `client`, valid until `expiry` (seconds on the server's clock).
    pub fn mint(&self, client: SocketAddr, expiry: u32) -> String {
        let mut bytes = [0u8; 4 + MAC_BYTES];
        for (target, source) in bytes.iter_mut().zip(
            expiry
                .to_be_bytes()
                .iter()
                .chain(self.mac(client, expiry).to_be_bytes().iter()),
        ) {
            *target = *source;
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Checks a nonce: `Ok` if genuine and fresh, `Err(true)` if genuine but
    /// stale, `Err(false)` if not ours.
    pub fn verify(&self, nonce: &str, client: SocketAddr, now: u32) -> Result<(), bool> {
        if nonce.len() != NONCE_LEN {
            return Err(false);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(nonce)
            .map_err(|_| false)?;
        let (Some(expiry), Some(mac)) = (bytes.get(..4), bytes.get(4..4 + MAC_BYTES)) else {
            return Err(false);
        };
        let expiry = u32::from_be_bytes(expiry.try_into().map_err(|_| false)?);
        let mut full = [0u8; 8];
        for (target, source) in full.iter_mut().zip(mac.iter()) {
            *target = *source;
        }
        let mac = u64::from_be_bytes(full);
        if (mac ^ self.mac(client, expiry)).count_ones() != 0 {
            return Err(false);
        }
        if expiry < now {
            return Err(true);
        }
        Ok(())
    }

    fn mac(&self, client: SocketAddr, expiry: u32) -> u64 {
        let Ok(mut mac) = HmacSha1::new_from_slice(&self.key) else {
            return 0;
        };
        mac.update(&expiry.to_be_bytes());
        match client.ip() {
            std::net::IpAddr::V4(v4) => mac.update(&v4.octets()),
            std::net::IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let bytes = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        for (target, source) in first.iter_mut().zip(bytes.iter().take(MAC_BYTES)) {
            *target = *source;
        }
        u64::from_be_bytes(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_the_coturn_scheme() {
        // Computed independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            rest_password("secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn rest_credentials_expire() {
        let credentials = Credentials {
            users: HashMap::new(),
            shared_secret: Some("s3cret".to_owned()),
        };
        let (username, password) = rest_credentials("s3cret", "peer1", 1000);
        assert_eq!(credentials.password(&username, 999), Ok(password.clone()));
        assert_eq!(credentials.password(&username, 1000), Ok(password));
        assert_eq!(credentials.password(&username, 1001), Err(Refusal::Expired));
        assert_eq!(credentials.password("alice", 0), Err(Refusal::UnknownUser));
        assert_eq!(credentials.password(":x", 0), Err(Refusal::UnknownUser));
        assert_eq!(credentials.password("12a:x", 0), Err(Refusal::UnknownUser));
        // A bare timestamp is a valid REST username too.
        assert!(credentials.password("5000", 10).is_ok());
    }

    #[test]
    fn static_users_win() {
        let mut users = HashMap::new();
        users.insert("alice".to_owned(), "wonderland".to_owned());
        let credentials = Credentials {
            users,
            shared_secret: None,
        };
        assert_eq!(
            credentials.password("alice", 0),
            Ok("wonderland".to_owned())
        );
        assert_eq!(credentials.password("1:bob", 0), Err(Refusal::UnknownUser));
    }

    #[test]
    fn nonces_are_bound_to_client_and_time() {
        let nonces = Nonces::new([9; 32]);
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let other: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let nonce = nonces.mint(client, 100);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(nonces.verify(&nonce, client, 50), Ok(()));
        assert_eq!(nonces.verify(&nonce, client, 100), Ok(()));
        assert_eq!(nonces.verify(&nonce, client, 101), Err(true));
        assert_eq!(nonces.verify(&nonce, other, 50), Err(false));
        assert_eq!(nonces.verify("garbage", client, 50), Err(false));
        let mut forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&nonce)
            .unwrap();
        forged[0] ^= 0x80;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged);
        assert_eq!(nonces.verify(&forged, client, 50), Err(false));
        assert_eq!(Nonces::new([8; 32]).verify(&nonce, client, 50), Err(false));
    }
}
