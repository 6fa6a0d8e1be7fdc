// Relay-only policy (through the embedded TURN relay), media errors, and the call
// screen's keyboard access and phone layout.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DESKTOP, PHONE, screenshot } from './browser.js';
import {
  assertNoProblems,
  audioArrives,
  closeAll,
  connectPair,
  framesKeepComing,
  join,
  openRoom,
  useServerAndBrowser,
  waitPhase,
} from './call-helpers.js';

const env = useServerAndBrowser();

describe('policy and problems', () => {
  test('policy=relay: every candidate pair is a TURN relay pair, through the embedded relay', async () => {
    const pages = [];
    try {
      const a = await openRoom(env.browser, env.server, 'relay-only', { query: '&policy=relay' });
      pages.push(a);
      await join(a);
      await waitPhase(a, 'waiting');
      const b = await openRoom(env.browser, env.server, 'relay-only', { query: '&policy=relay', viewport: PHONE });
      pages.push(b);
      await join(b);
      await Promise.all([waitPhase(a, 'connected', 8_000), waitPhase(b, 'connected', 8_000)]);
      await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
      for (const page of [a, b]) {
        assert.equal(await page.evaluate(() => window.__duet.pc().getConfiguration().iceTransportPolicy), 'relay');
        const pairs = await page.evaluate(async () => {
          const report = await window.__duet.pc().getStats();
          const all = [...report.values()];
          return all
            .filter((s) => s.type === 'candidate-pair')
            .map((p) => ({
              local: report.get(p.localCandidateId)?.candidateType,
              remote: report.get(p.remoteCandidateId)?.candidateType,
              selected: all.some((t) => t.type === 'transport' && t.selectedCandidatePairId === p.id),
            }));
        });
        assert.ok(pairs.some((p) => p.selected), 'a pair is selected');
        for (const p of pairs) assert.deepEqual([p.local, p.remote], ['relay', 'relay'], `a non-relay pair: ${JSON.stringify(p)}`);
        // Only relay candidates left the browser.
        const sent = page.frames.filter((f) => f.dir === 'sent' && f.msg.data?.kind === 'ice');
        assert.ok(sent.length > 0);
        for (const f of sent) assert.match(f.msg.data.candidate.candidate, / typ relay /);
      }
      await a.getByRole('button', { name: /^Call quality/ }).click();
      await a.getByRole('dialog', { name: 'Call quality' }).getByText(/^Relayed through TURN \((UDP|TCP|TLS)\)$/).waitFor({ timeout: 3_000 });
      assert.match(await a.locator('#stats-local').textContent(), /^relay \(TURN\) · UDP/);
      await screenshot(a, 'call-stats-relay-1280x800-light');
      assert.equal(await a.locator('#room-tags').count(), 1);
      assertNoProblems(a);
      assertNoProblems(b);
    } finally {
      await closeAll(...pages);
    }
  });

  test('camera and microphone refused: a clear message, and the call still works receive-only', async () => {
    const deny = () => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('denied', 'NotAllowedError'));
    };
    const a = await openRoom(env.browser, env.server, 'denied', { init: deny, viewport: PHONE });
    await join(a);
    await a.getByText('may not use your camera and microphone').waitFor({ timeout: 3_000 });
    await waitPhase(a, 'waiting');
    await screenshot(a, 'call-media-denied-375x812-light');
    const b = await openRoom(env.browser, env.server, 'denied');
    await join(b);
    await waitPhase(a, 'connected');
    await framesKeepComing(a, 10); // A sees B
    assert.equal(await a.getByRole('button', { name: 'No microphone' }).isDisabled(), true);
    await closeAll(a, b);
  });

  test('no camera: falls back to sound only and says so', async () => {
    const noCamera = () => {
      const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = (c) =>
        c.video ? Promise.reject(new DOMException('no camera', 'NotFoundError')) : original(c);
    };
    const a = await openRoom(env.browser, env.server, 'no-camera', { init: noCamera });
    await join(a);
    await a.getByText('No camera found').first().waitFor({ timeout: 3_000 });
    await waitPhase(a, 'waiting');
    assert.equal(await a.getByRole('button', { name: 'Turn on camera' }).count(), 1, 'the camera button offers to try again');
    const b = await openRoom(env.browser, env.server, 'no-camera');
    await join(b);
    await Promise.all([waitPhase(a, 'connected'), waitPhase(b, 'connected')]);
    await audioArrives(b); // B hears A
    await b.getByText('Their camera is off').waitFor({ timeout: 3_000 });
    await framesKeepComing(a, 10); // A still sees B
    await screenshot(b, 'call-their-camera-off-1280x800-light');
    assertNoProblems(b);
    await closeAll(a, b);
  });

  test('an insecure page explains why camera and microphone are off', async () => {
    const insecure = () => Object.defineProperty(window, 'isSecureContext', { get: () => false });
    const a = await openRoom(env.browser, env.server, 'insecure', { init: insecure, viewport: PHONE, colorScheme: 'dark' });
    await a.getByText('This page is not secure').waitFor({ timeout: 3_000 });
    await screenshot(a, 'lobby-insecure-375x812-dark');
    await closeAll(a);
  });
});

describe('look and access', () => {
  test('the call screen works from the keyboard and fits a phone', async () => {
    const [a, b] = await connectPair(env.browser, env.server, 'keyboard', {
      first: { viewport: PHONE, colorScheme: 'dark' },
      second: { viewport: DESKTOP, colorScheme: 'dark' },
    });
    for (const page of [a, b]) {
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${overflow} px of sideways overflow`);
      // Every button has a name.
      const unnamed = await page.evaluate(() =>
        [...document.querySelectorAll('button')]
          .filter((el) => el.offsetParent !== null)
          .filter((el) => !(el.getAttribute('aria-label') || el.textContent.trim()))
          .map((el) => el.id || el.outerHTML.slice(0, 60)),
      );
      assert.deepEqual(unnamed, []);
    }
    // Tab reaches the controls; each shows a focus ring; Space toggles the microphone.
    const seen = [];
    for (let i = 0; i < 12; i++) {
      await a.keyboard.press('Tab');
      const info = await a.evaluate(() => ({
        id: document.activeElement?.id,
        outline: getComputedStyle(document.activeElement).outlineStyle,
      }));
      seen.push(info.id);
      if (info.id) assert.notEqual(info.outline, 'none', `#${info.id} shows a focus ring`);
      if (info.id === 'mic-button') break;
    }
    assert.ok(seen.includes('mic-button'), `the microphone button is reachable by Tab: ${seen}`);
    await screenshot(a, 'call-focus-375x812-dark');
    await a.keyboard.press('Space');
    await b.getByText('They are muted').waitFor({ timeout: 2_000 });
    // The self view moves to another corner with the arrow keys.
    await a.locator('#self').focus();
    await a.keyboard.press('ArrowUp');
    await a.keyboard.press('ArrowLeft');
    assert.equal(await a.locator('#self').getAttribute('data-corner'), 'tl');
    await screenshot(a, 'call-self-top-left-375x812-dark');
    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });
});

