//! The verification code of a call: six digits both callers can read to each
//! other, derived from the two DTLS fingerprints of the connection, exactly as
//! the web client derives it (`web/js/verify.js`, docs/signaling-protocol.md):
//! the first `a=fingerprint` of each session description as
//! "<algorithm lower-case> <hex upper-case>", the two sorted and joined by a
//! newline, SHA-256, the first four bytes big-endian modulo 1,000,000, as
//! "ddd ddd". Equal codes mean nobody in the middle holds its own certificate.

/// The first fingerprint of a session description, normalized.
#[must_use]
pub fn fingerprint_of(sdp: &str) -> Option<String> {
    sdp.lines().find_map(|line| {
        let rest = line.trim_end().strip_prefix("a=fingerprint:")?;
        let (algorithm, hex) = rest.split_once(' ')?;
        let hex = hex.trim();
        let valid = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        valid.then(|| {
            format!(
                "{} {}",
                algorithm.to_ascii_lowercase(),
                hex.to_ascii_uppercase()
            )
        })
    })
}

/// The code of a connection from its two session descriptions (in either order).
#[must_use]
pub fn verification_code(local_sdp: &str, remote_sdp: &str) -> Option<String> {
    let mut both = [fingerprint_of(local_sdp)?, fingerprint_of(remote_sdp)?];
    both.sort();
    let text = both.join("\n");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let first: [u8; 4] = digest.as_ref().get(..4)?.try_into().ok()?;
    let digits = format!("{:06}", u32::from_be_bytes(first) % 1_000_000);
    let (high, low) = digits.split_at(3);
    Some(format!("{high} {low}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_matches_the_web_clients_derivation() {
        // Node's crypto, the same steps as web/js/verify.js, gave "021 636" for these.
        let local = "v=0\r\na=fingerprint:SHA-256 aa:bb\r\n";
        let remote = "v=0\r\na=fingerprint:sha-256 CC:DD\r\n";
        assert_eq!(verification_code(local, remote).as_deref(), Some("021 636"));
        assert_eq!(verification_code(remote, local).as_deref(), Some("021 636"));
    }

    #[test]
    fn a_description_without_a_fingerprint_has_no_code() {
        assert_eq!(
            verification_code("v=0\r\n", "a=fingerprint:sha-256 AA"),
            None
        );
        assert_eq!(fingerprint_of("a=fingerprint:sha-256 not-hex"), None);
    }
}
