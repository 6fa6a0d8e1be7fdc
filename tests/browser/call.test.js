// The page joins rooms over wss against the real `duet` binary, in headless Chromium.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer } from './server.js';
import { DESKTOP, PHONE, launchBrowser, newContext, newPage, screenshot, status, waitForStatus } from './browser.js';

function joinButton(page) {
  return page.getByRole('button', { name: 'Join', exact: true });
}

/** Opens /?room=ROOM in a fresh context and returns the page. */
async function openRoom(browser, server, room, options) {
  const context = await newContext(browser, options);
  const page = await newPage(context);
  await page.goto(`${server.url}/?room=${room}`);
  return page;
}

async function join(page) {
  await joinButton(page).click();
  await waitForStatus(page, 'Joined');
}

describe('joining a room', () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  test('the page joins a room over wss with the self-signed certificate', async () => {
    const page = await openRoom(browser, server, 'browser-test');
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);

    const sockets = [];
    page.on('websocket', (ws) => {
      const sent = [];
      ws.on('framesent', (frame) => sent.push(frame.payload));
      sockets.push({ url: ws.url(), sent });
    });

    assert.equal(await page.locator('#room-name').textContent(), 'browser-test');
    await screenshot(page, 'room-1280x800');

    await joinButton(page).click();
    await waitForStatus(page, 'Joined', 5_000);

    const text = await status(page).textContent();
    assert.match(text, /^Joined room browser-test as [0-9a-f]{16}$/);
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0].url, `${server.url.replace('https://', 'wss://')}/ws`);
    assert.deepEqual(JSON.parse(sockets[0].sent[0]), { type: 'join', room: 'browser-test' });
    await screenshot(page, 'joined-1280x800');
    assert.deepEqual(page.problems, []);
    await page.context().close();
  });

  test('a second member is announced and a third finds the room full', async () => {
    const room = 'two-seats';
    const first = await openRoom(browser, server, room);
    await join(first);

    const second = await openRoom(browser, server, room, { viewport: PHONE });
    await join(second);
    await waitForStatus(first, 'Someone joined');
    await screenshot(second, 'joined-375x812');
    await screenshot(first, 'someone-joined-1280x800');

    const third = await openRoom(browser, server, room, { viewport: PHONE, colorScheme: 'dark' });
    await joinButton(third).click();
    await waitForStatus(third, 'full');
    assert.equal(await status(third).textContent(), `Room ${room} is full`);
    // The third can try again later: the button is usable again.
    assert.equal(await joinButton(third).isEnabled(), true);
    await screenshot(third, 'full-375x812-dark');

    for (const page of [first, second, third]) {
      assert.deepEqual(page.problems, []);
      await page.context().close();
    }
  });

  test('closing the other tab tells the first "The other person left"', async () => {
    const room = 'leaving';
    const first = await openRoom(browser, server, room, { colorScheme: 'dark' });
    await join(first);
    const second = await openRoom(browser, server, room);
    await join(second);
    await waitForStatus(first, 'Someone joined');

    await second.close();
    await waitForStatus(first, 'The other person left', 2_000);
    await screenshot(first, 'other-left-1280x800-dark');

    assert.deepEqual(first.problems, []);
    await first.context().close();
    await second.context().close();
  });
});

describe('the start page', () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  for (const [viewport, colorScheme] of [
    [DESKTOP, 'light'],
    [PHONE, 'light'],
    [PHONE, 'dark'],
  ]) {
    const size = `${viewport.width}x${viewport.height}`;
    test(`"New call" opens a fresh unguessable room (${size}, ${colorScheme})`, async () => {
      const context = await newContext(browser, { viewport, colorScheme });
      const page = await newPage(context);
      await page.goto(`${server.url}/`);
      assert.equal(
        await page.locator('script:not([src])').count(),
        0,
        'no inline scripts, so a strict CSP can be added',
      );
      await screenshot(page, `start-${size}-${colorScheme}`);
      // Nothing overflows sideways, even on a phone.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `the page is ${overflow} px wider than the viewport`);

      // Works from the keyboard, with a visible focus ring.
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'New call');
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, 'none', 'the focused button shows a focus ring');
      await screenshot(page, `start-${size}-${colorScheme}-focus`);
      await page.keyboard.press('Enter');
      await page.waitForURL(/\?room=/);
      const room = new URL(page.url()).searchParams.get('room');
      assert.match(room, /^[A-Za-z0-9_-]{16}$/);
      assert.equal(await page.locator('#room-name').textContent(), room);
      await joinButton(page).waitFor();
      await screenshot(page, `room-${size}-${colorScheme}`);

      // Two clicks never give the same room.
      await page.goto(`${server.url}/`);
      await page.getByRole('button', { name: 'New call', exact: true }).click();
      await page.waitForURL(/\?room=/);
      assert.notEqual(new URL(page.url()).searchParams.get('room'), room);

      assert.deepEqual(page.problems, []);
      await context.close();
    });
  }

  for (const bad of ['', 'has space', 'a'.repeat(65), 'émoji', '../etc']) {
    test(`the room name ${JSON.stringify(bad.length > 20 ? bad.slice(0, 8) + '…' : bad)} is refused`, async () => {
      const context = await newContext(browser, { viewport: PHONE });
      const page = await newPage(context);
      await page.goto(`${server.url}/?room=${encodeURIComponent(bad)}`);
      await waitForStatus(page, 'not a valid room name');
      assert.equal(await joinButton(page).count(), 0, 'no Join button for an invalid room');
      if (bad === 'has space') await screenshot(page, 'bad-room-375x812');
      assert.deepEqual(page.problems, []);
      await context.close();
    });
  }
});
