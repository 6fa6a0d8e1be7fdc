// Devices and quality during a call: switching cameras (replaceTrack, no
// renegotiation), screen sharing and back, sender limits (setParameters), the
// preferred codec (setCodecPreferences), and the statistics panel.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DESKTOP, PHONE, screenshot } from './browser.js';
import {
  assertNoProblems,
  closeAll,
  connectPair,
  counters,
  framesKeepComing,
  localTracks,
  useServerAndBrowser,
} from './call-helpers.js';

const env = useServerAndBrowser();

describe('devices, screen, quality and statistics', () => {
  test('camera switch, quality settings, codec, screen share and the statistics panel', async () => {
    const [a, b] = await connectPair(env.browser, env.server, 'devices', {
      first: { viewport: DESKTOP, colorScheme: 'light' },
      second: { viewport: PHONE, colorScheme: 'dark' },
    });

    // Switch A's camera from the settings: the sender gets the new camera's track with
    // replaceTrack (no offer), and B's video keeps flowing. Chromium's second fake
    // camera delivers frames the WebRTC encoder does not take (a depth-style format), so
    // the test switches to it and back: the switch back is a real device switch too.
    const offersBefore = (await counters(a)).sent.offers + (await counters(b)).sent.offers;
    await a.getByRole('button', { name: 'Devices and quality' }).click();
    const settings = a.getByRole('dialog', { name: 'Devices and quality' });
    const cameras = settings.getByLabel('Camera', { exact: true });
    const options = await cameras.locator('option').evaluateAll((os) => os.map((o) => o.value));
    assert.equal(options.length, 2, 'the fake device gives two cameras');
    const first = await cameras.inputValue();
    const second = options.find((o) => o !== first);
    const sending = (id) =>
      a.waitForFunction(
        (want) => window.__duet.pc().getSenders().some((s) => s.track?.kind === 'video' && s.track.getSettings().deviceId === want && s.track.readyState === 'live'),
        id,
        { timeout: 5_000 },
      );
    await cameras.selectOption(second);
    await sending(second);
    await cameras.selectOption(first);
    await sending(first);
    await framesKeepComing(b, 15);
    const cameraTracks = (await localTracks(a)).filter((t) => t.kind === 'video');
    assert.equal(cameraTracks.filter((t) => t.readyState === 'live').length, 1, 'the cameras switched away from are released');
    assert.ok(cameraTracks.length >= 3, 'each switch opened a new track');
    assert.equal((await counters(a)).sent.offers + (await counters(b)).sent.offers, offersBefore, 'no renegotiation');
    await screenshot(a, 'call-settings-1280x800-light');

    // Quality settings apply to the sender at once (setParameters).
    await settings.getByLabel('Maximum bitrate', { exact: true }).selectOption('300000');
    await settings.getByLabel('Quality', { exact: true }).selectOption('180p15');
    await a.waitForFunction(
      () => {
        const sender = window.__duet.pc().getSenders().find((s) => s.track?.kind === 'video');
        const e = sender?.getParameters().encodings[0];
        return e?.maxBitrate === 300_000 && e?.maxFramerate === 15 && e?.scaleResolutionDownBy > 1;
      },
      null,
      { timeout: 3_000 },
    );
    await b.waitForFunction(
      async () => {
        const report = await window.__duet.pc().getStats();
        return [...report.values()].some((s) => s.type === 'inbound-rtp' && s.kind === 'video' && s.frameHeight > 0 && s.frameHeight <= 180);
      },
      null,
      { timeout: 8_000, polling: 200 },
    );
    await framesKeepComing(b, 5);

    // A preferred codec renegotiates once and B then receives it.
    const codecs = await settings.getByLabel('Preferred codec', { exact: true }).locator('option').evaluateAll((os) => os.map((o) => o.value));
    assert.ok(codecs.includes('video/VP9'), `VP9 is offered: ${codecs}`);
    await settings.getByLabel('Preferred codec', { exact: true }).selectOption('video/VP9');
    await b.waitForFunction(
      async () => {
        const report = await window.__duet.pc().getStats();
        return [...report.values()].some(
          (s) => s.type === 'inbound-rtp' && s.kind === 'video' && report.get(s.codecId)?.mimeType === 'video/VP9' && s.framesDecoded > 0,
        );
      },
      null,
      { timeout: 8_000, polling: 200 },
    );
    await framesKeepComing(b, 5);
    await a.keyboard.press('Escape');
    for (const page of [a, b]) assert.equal(await page.evaluate(() => window.__duet.pc().signalingState), 'stable');

    // Screen share replaces the camera (no renegotiation) and back.
    const offersBeforeShare = (await counters(a)).sent.offers + (await counters(b)).sent.offers;
    await a.getByRole('button', { name: 'Share your screen' }).click();
    await b.getByText('They are sharing their screen').waitFor({ timeout: 3_000 });
    await framesKeepComing(b, 5);
    await screenshot(b, 'call-screen-share-375x812-dark');
    await a.getByRole('button', { name: 'Stop sharing your screen' }).click();
    await b.getByText('They are sharing their screen').waitFor({ state: 'hidden', timeout: 3_000 });
    await framesKeepComing(b, 5);
    assert.equal((await counters(a)).sent.offers + (await counters(b)).sent.offers, offersBeforeShare, 'no renegotiation');

    // The statistics panel: a direct host-to-host UDP pair on loopback, live plots.
    await a.getByRole('button', { name: /^Call quality/ }).click();
    const panel = a.getByRole('dialog', { name: 'Call quality' });
    await panel.getByText('Direct · UDP').waitFor({ timeout: 3_000 });
    assert.match(await panel.locator('#stats-local').textContent(), /^host · UDP/);
    assert.match(await panel.locator('#stat-rtt').textContent(), /^\d+ ms$/);
    assert.match(await panel.locator('#stat-in').textContent(), /(kbit|Mbit)\/s$/);
    assert.match(await panel.locator('#stat-video-in').textContent(), /^\d+×\d+ · \d+ fps/);
    await a.waitForTimeout(2_100); // a few points on the plots
    await screenshot(a, 'call-stats-1280x800-light');
    await a.keyboard.press('Escape');

    assertNoProblems(a);
    assertNoProblems(b);
    await closeAll(a, b);
  });
});
