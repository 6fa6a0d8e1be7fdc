// Two real browsers call each other through the real `duet` binary: media both
// ways, chat, mute and camera state, a full room, hang-up.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DESKTOP, PHONE, screenshot, waitForStatus } from './browser.js';
import {
  assertEndsWithin2s,
  assertNoProblems,
  audioArrives,
  closeAll,
  counters,
  framesKeepComing,
  join,
  joinButton,
  localTracks,
  openRoom,
  useServerAndBrowser,
} from './call-helpers.js';

const env = useServerAndBrowser();

describe('a call between two browsers', () => {
  test('media both ways, chat, mute and camera state, devices, screen, stats, a full room, hang-up', async () => {
    const room = 'main-call';
    const a = await openRoom(env.browser, env.server, room, { viewport: DESKTOP, colorScheme: 'light' });
    await join(a);
    await waitForStatus(a, 'Waiting for the other person');
    await screenshot(a, 'call-waiting-1280x800-light');

    const b = await openRoom(env.browser, env.server, room, { viewport: PHONE, colorScheme: 'dark' });
    await join(b);
    await Promise.all([waitForStatus(a, 'Connected'), waitForStatus(b, 'Connected')]);

    // Both decode the other's video and hear the other's (beeping) microphone.
    await Promise.all([framesKeepComing(a, 10), framesKeepComing(b, 10)]);
    await Promise.all([audioArrives(a), audioArrives(b)]);
    const aId = await a.evaluate(() => window.__duet.id);
    const bId = await b.evaluate(() => window.__duet.id);
    assert.match(aId, /^[0-9a-f]{16}$/);
    assert.notEqual(aId, bId);
    await screenshot(a, 'call-connected-1280x800-light');
    await screenshot(b, 'call-connected-375x812-dark');

    // The one who joined second made the only offer; nothing had to be renegotiated.
    const offersBefore = (await counters(a)).sent.offers + (await counters(b)).sent.offers;
    assert.equal(offersBefore, 1);

    // Chat over the data channel, both ways.
    await a.getByRole('button', { name: 'Chat' }).click();
    await a.getByLabel('Message', { exact: true }).fill('Hello from the desk');
    await a.getByRole('button', { name: 'Send' }).click();
    await b.getByRole('button', { name: 'Chat, 1 unread' }).waitFor({ timeout: 3_000 });
    await b.getByRole('button', { name: 'Chat, 1 unread' }).click();
    await b.getByRole('log', { name: 'Messages' }).getByText('Hello from the desk').waitFor({ timeout: 3_000 });
    await b.getByLabel('Message', { exact: true }).fill('Hi! From the phone.');
    await b.keyboard.press('Enter');
    // Sent (the field empties once the data channel took it), then received.
    await b.waitForFunction(() => document.getElementById('chat-input').value === '', null, { timeout: 3_000 });
    await a.getByRole('log', { name: 'Messages' }).getByText('Hi! From the phone.').waitFor({ timeout: 5_000 });
    await screenshot(a, 'call-chat-1280x800-light');
    await screenshot(b, 'call-chat-375x812-dark');
    await b.keyboard.press('Escape');
    await a.getByRole('button', { name: 'Close chat' }).click();

    // Mute and camera-off show on the other side; the camera really goes off.
    await a.getByRole('button', { name: 'Turn off microphone' }).click();
    await b.getByText('They are muted').waitFor({ timeout: 2_000 });
    assert.equal(await a.evaluate(() => window.__duet.localTracks().find((t) => t.kind === 'audio').enabled), false);
    await b.getByRole('button', { name: 'Turn off camera' }).click();
    await a.getByText('Their camera is off').waitFor({ timeout: 2_000 });
    assert.ok(
      (await localTracks(b)).filter((t) => t.kind === 'video').every((t) => t.readyState === 'ended'),
      'camera off releases the camera',
    );
    await screenshot(a, 'call-muted-camera-off-1280x800-light');
    await screenshot(b, 'call-muted-camera-off-375x812-dark');
    await a.getByRole('button', { name: 'Turn on microphone' }).click();
    await b.getByText('They are muted').waitFor({ state: 'hidden', timeout: 2_000 });
    await b.getByRole('button', { name: 'Turn on camera' }).click();
    await a.getByText('Their camera is off').waitFor({ state: 'hidden', timeout: 2_000 });
    await framesKeepComing(a, 10);

    // A third person finds the room full, and may try again later.
    const c = await openRoom(env.browser, env.server, room, { viewport: PHONE, colorScheme: 'dark' });
    await join(c);
    await waitForStatus(c, 'This call is full');
    assert.equal(await joinButton(c).isEnabled(), true);
    await screenshot(c, 'full-375x812-dark');
    await framesKeepComing(a, 5); // the call did not notice

    // B hangs up: A sees it within 2 s and releases its camera and microphone.
    const hangUpAt = Date.now();
    await b.getByRole('button', { name: 'Hang up' }).click();
    await assertEndsWithin2s(a, hangUpAt);
    await waitForStatus(b, 'Call ended');
    assert.ok((await localTracks(b)).every((t) => t.readyState === 'ended'));
    await screenshot(a, 'call-they-left-1280x800-light');
    await screenshot(b, 'call-ended-375x812-dark');

    for (const page of [a, b, c]) assertNoProblems(page);
    await closeAll(a, b, c);
  });

});
