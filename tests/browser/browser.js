// Launches the system's Chromium (Debian's `chromium` package) through playwright-core.

import { mkdir } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const SCREENSHOT_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'screenshots');

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Two fake cameras (so switching cameras can be tested), fake microphones.
  '--use-fake-device-for-media-stream=device-count=2',
  '--use-fake-ui-for-media-stream',
  // getDisplayMedia picks the (fake, headless) screen without asking.
  '--auto-select-desktop-capture-source=Entire screen',
  '--allow-loopback-in-peer-connection',
];

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 375, height: 812 };

/**
 * WebRTC gathers candidates on every interface: the browsers must only ever see
 * loopback. scripts/test runs these tests in a network namespace that has nothing
 * else; refuse to run anywhere that has more.
 */
export function assertLoopbackOnly() {
  const others = Object.entries(networkInterfaces())
    .filter(([, addresses]) => addresses.some((a) => !a.internal))
    .map(([name]) => name);
  if (others.length > 0) {
    throw new Error(
      `network interfaces other than loopback are visible (${others.join(', ')}): run the browser tests ` +
        "through ./scripts/test, or as root: unshare --net sh -c 'ip link set lo up && node --test --test-concurrency=1'",
    );
  }
}

/**
 * A headless Chromium with a fresh temporary profile (playwright makes one per launch).
 * @param {{ args?: string[] }} [options] extra command-line flags
 */
export function launchBrowser({ args = [] } = {}) {
  assertLoopbackOnly();
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
  });
}

/** A fresh context that accepts the server's self-signed certificate. */
export function newContext(browser, { viewport = DESKTOP, colorScheme = 'light' } = {}) {
  return browser.newContext({ ignoreHTTPSErrors: true, viewport, colorScheme });
}

/** A new page whose console errors and uncaught exceptions are collected in `page.problems`. */
export async function newPage(context) {
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`uncaught: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.problems.push(`console: ${msg.text()}`);
  });
  return page;
}

/** The page's status line (role="status"). */
export function status(page) {
  return page.getByRole('status');
}

/** Waits until the status line contains `text`; fails with what it showed instead. */
export async function waitForStatus(page, text, timeout = 5_000) {
  try {
    await status(page).filter({ hasText: text }).waitFor({ state: 'visible', timeout });
  } catch (err) {
    const shown = await status(page).textContent({ timeout: 1_000 }).catch(() => '<no status line>');
    throw new Error(`the status did not show ${JSON.stringify(String(text))} within ${timeout} ms; it shows ${JSON.stringify(shown)}`, { cause: err });
  }
}

/** Saves a full-page screenshot as screenshots/NAME.png (the pointer parked out of the way). */
export async function screenshot(page, name) {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  await page.mouse.move(1, 1);
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: true, animations: 'disabled', caret: 'hide' });
}
