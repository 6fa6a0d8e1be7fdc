// The verification code of a call: six digits both callers see, derived from the
// two DTLS certificate fingerprints of their connection. Media is encrypted with
// keys agreed over DTLS between the two browsers; a party in the middle (even the
// server, which relays the SDP) would have to present its own certificate to each
// side, and then the two sides would compute different codes. Reading the code to
// each other checks that.
//
// Derivation (also in docs/signaling-protocol.md): take the first `a=fingerprint`
// line of each side's session description, written as "<algorithm lower-case>
// <hex upper-case>" (for example "sha-256 AB:CD:…"); sort the two strings; join
// them with a newline; SHA-256 of that UTF-8 text; the first four bytes as an
// unsigned big-endian integer, modulo 1,000,000, with leading zeros: "042 917".

/** The first fingerprint of a session description, normalized; null if none. */
export function fingerprintOf(sdp) {
  const match = /^a=fingerprint:(\S+)\s+([0-9A-Fa-f:]+)\s*$/m.exec(sdp ?? '');
  return match ? `${match[1].toLowerCase()} ${match[2].toUpperCase()}` : null;
}

/**
 * The code for two session descriptions (order does not matter), or null when
 * either has no fingerprint.
 * @param {string | undefined} localSdp
 * @param {string | undefined} remoteSdp
 * @returns {Promise<string | null>}
 */
export async function verificationCode(localSdp, remoteSdp) {
  const local = fingerprintOf(localSdp);
  const remote = fingerprintOf(remoteSdp);
  if (!local || !remote) return null;
  const text = [local, remote].sort().join('\n');
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
  const number = ((digest[0] << 24) >>> 0) + (digest[1] << 16) + (digest[2] << 8) + digest[3];
  const digits = String(number % 1_000_000).padStart(6, '0');
  return `${digits.slice(0, 3)} ${digits.slice(3)}`;
}
