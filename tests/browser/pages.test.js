// The start page, broken links and the lobby (before any call), in headless Chromium
// against the real `duet` binary.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startServer } from './server.js';
import { DESKTOP, PHONE, launchBrowser, newContext, newPage, screenshot, status, waitForStatus } from './browser.js';
import { assertNoProblems, joinButton } from './call-helpers.js';

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

/** Nothing sticks out sideways. */
async function assertNoOverflow(page) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the viewport`);
}

describe('the start page', () => {
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
      assert.equal(await page.locator('script:not([src])').count(), 0, 'no inline scripts (the CSP forbids them)');
      assert.equal(await page.locator('[style]').count(), 0, 'no inline styles (the CSP forbids them)');
      await screenshot(page, `start-${size}-${colorScheme}`);
      await assertNoOverflow(page);

      // Works from the keyboard, with a visible focus ring.
      await page.keyboard.press('Tab');
      assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'New call');
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, 'none', 'the focused button shows a focus ring');
      await screenshot(page, `start-${size}-${colorScheme}-focus`);
      await page.keyboard.press('Enter');
      await page.waitForURL(/\?room=/);
      const url = new URL(page.url());
      const room = url.searchParams.get('room');
      assert.match(room, /^[A-Za-z0-9_-]{16}$/);
      assert.equal(url.searchParams.get('ring'), null);
      assert.equal(await page.locator('#room-name').textContent(), room);
      await joinButton(page).waitFor();
      await screenshot(page, `room-${size}-${colorScheme}`);
      await assertNoOverflow(page);

      // Two clicks never give the same room.
      await page.goto(`${server.url}/`);
      await page.getByRole('button', { name: 'New call', exact: true }).click();
      await page.waitForURL(/\?room=/);
      assert.notEqual(new URL(page.url()).searchParams.get('room'), room);

      assertNoProblems(page);
      await context.close();
    });
  }

  test('the ring option makes a ring-mode room', async () => {
    const page = await newPage(await newContext(browser));
    await page.goto(`${server.url}/`);
    await page.getByLabel(/Ring them/).check();
    await page.getByRole('button', { name: 'New call', exact: true }).click();
    await page.waitForURL(/ring=1/);
    await page.getByRole('heading', { name: 'Ready to call?' }).waitFor();
    assert.equal(await page.locator('#room-tags').textContent(), 'Ring mode');
    assert.match(await page.locator('#room-link').inputValue(), /[?&]ring=1/);
    assertNoProblems(page);
    await page.context().close();
  });
});

describe('broken links', () => {
  for (const bad of ['', 'has space', 'a'.repeat(65), 'émoji', '../etc']) {
    test(`the room name ${JSON.stringify(bad.length > 20 ? bad.slice(0, 8) + '…' : bad)} is refused`, async () => {
      const context = await newContext(browser, { viewport: PHONE });
      const page = await newPage(context);
      await page.goto(`${server.url}/?room=${encodeURIComponent(bad)}`);
      await waitForStatus(page, 'not a valid room name');
      assert.equal(await joinButton(page).count(), 0, 'no Join button for an invalid room');
      if (bad === 'has space') await screenshot(page, 'bad-room-375x812');
      assertNoProblems(page);
      await context.close();
    });
  }
});

describe('the lobby', () => {
  test('shows the room, its link with a copy button, a live preview and Join', async () => {
    const context = await newContext(browser, { viewport: DESKTOP });
    // (Granting replaces the context's permissions: camera and microphone too.)
    await context.grantPermissions(['camera', 'microphone', 'clipboard-read', 'clipboard-write'], { origin: server.url });
    const page = await newPage(context);
    await page.goto(`${server.url}/?room=lobby-test`);
    assert.equal(await page.locator('#room-name').textContent(), 'lobby-test');
    assert.equal(await page.locator('#room-link').inputValue(), `${server.url}/?room=lobby-test`);

    // The camera is already allowed (fake UI), so the preview starts by itself.
    await page.waitForFunction(() => document.getElementById('preview-video').videoWidth > 0, null, { timeout: 5_000 });
    await page.getByRole('button', { name: 'Turn off microphone' }).waitFor();
    assert.ok((await page.locator('#lobby-camera option').count()) >= 2, 'both fake cameras are offered');

    await page.getByRole('button', { name: 'Copy link' }).click();
    await page.getByRole('button', { name: 'Link copied' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), `${server.url}/?room=lobby-test`);

    // Join is reachable from the keyboard.
    await page.locator('#copy-link').focus();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'join');
    await screenshot(page, 'lobby-1280x800-light');
    assert.equal(await status(page).count(), 0, 'no status before joining');
    assertNoProblems(page);
    await context.close();
  });

  for (const [viewport, colorScheme] of [
    [PHONE, 'dark'],
    [DESKTOP, 'dark'],
  ]) {
    const size = `${viewport.width}x${viewport.height}`;
    test(`fits the screen (${size}, ${colorScheme})`, async () => {
      const context = await newContext(browser, { viewport, colorScheme });
      const page = await newPage(context);
      await page.goto(`${server.url}/?room=lobby-look`);
      await page.waitForFunction(() => document.getElementById('preview-video').videoWidth > 0, null, { timeout: 5_000 });
      await assertNoOverflow(page);
      const join = await joinButton(page).boundingBox();
      assert.ok(join.y + join.height <= viewport.height, 'Join is visible without scrolling');
      await screenshot(page, `lobby-${size}-${colorScheme}`);
      assertNoProblems(page);
      await context.close();
    });
  }
});
