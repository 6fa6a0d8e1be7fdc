// The verification code: both callers see the same six digits, derived from the
// two DTLS fingerprints of their connection (web/js/verify.js), and a new
// connection (new certificates) gives a different code.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { closeAll, connectPair, useServerAndBrowser, waitPhase } from './call-helpers.js';
import { PHONE, SCREENSHOT_DIR } from './browser.js';

const on = useServerAndBrowser();

async function shownCode(page) {
  await page.locator('#verify').waitFor({ state: 'visible', timeout: 10_000 });
  const text = (await page.locator('#verify-code').textContent())?.trim();
  assert.equal(text, await page.evaluate(() => window.__duet.verificationCode));
  return text;
}

/** The code computed here, independently, from the page's own descriptions. */
function recomputed(page) {
  return page.evaluate(async () => {
    const pc = window.__duet.pc();
    const fingerprint = (sdp) => {
      const [, algorithm, hex] = /^a=fingerprint:(\S+)\s+(\S+)/m.exec(sdp);
      return `${algorithm.toLowerCase()} ${hex.toUpperCase()}`;
    };
    const text = [fingerprint(pc.localDescription.sdp), fingerprint(pc.remoteDescription.sdp)].sort().join('\n');
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));
    const number = new DataView(digest.buffer).getUint32(0) % 1_000_000;
    const digits = String(number).padStart(6, '0');
    return `${digits.slice(0, 3)} ${digits.slice(3)}`;
  });
}

test('both callers see the same verification code, and a new connection gets a new one', { timeout: 90_000 }, async () => {
  const first = await connectPair(on.browser, on.server, `verify-${Date.now()}`);
  const codes = await Promise.all(first.map(shownCode));
  assert.match(codes[0], /^\d{3} \d{3}$/);
  assert.equal(codes[0], codes[1], 'the same code on both sides');
  assert.equal(codes[0], await recomputed(first[0]), 'the documented derivation');
  const label = await first[0].locator('#verify').getAttribute('aria-label');
  assert.ok(label.startsWith('Verification code '), label);
  await first[0].setViewportSize(PHONE);
  await first[0].locator('#verify').focus();
  await first[0].screenshot({ path: `${SCREENSHOT_DIR}/verify-code-phone.png` });
  await closeAll(...first);

  // Another call: new connections, new certificates, another code.
  const second = await connectPair(on.browser, on.server, `verify-again-${Date.now()}`);
  const again = await Promise.all(second.map(shownCode));
  assert.equal(again[0], again[1]);
  assert.notEqual(again[0], codes[0], 'new certificates give a new code');
  await Promise.all(second.map((page) => waitPhase(page, 'connected')));
  await closeAll(...second);
});
