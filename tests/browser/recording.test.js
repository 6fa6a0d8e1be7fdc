// Local recording: one caller records, the other sees "They are recording this
// call" for as long as it lasts; the file is downloaded in the recorder's
// browser (nothing goes to the server) and ffprobe (Debian's ffmpeg package)
// finds both a video and an audio stream of plausible length in it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { closeAll, connectPair, until, useServerAndBrowser } from './call-helpers.js';
import { SCREENSHOT_DIR } from './browser.js';

const on = useServerAndBrowser();

/** Streams of the file and how long its video runs, from ffprobe. */
function probe(file) {
  const json = JSON.parse(
    execFileSync('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_type,codec_name', '-of', 'json', file]).toString(),
  );
  // MediaRecorder's WebM has no duration in its header: the last video packet tells.
  const packets = JSON.parse(
    execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=pts_time,dts_time', '-of', 'json', file]).toString(),
  ).packets ?? [];
  const times = packets.map((p) => Number(p.pts_time ?? p.dts_time)).filter((t) => Number.isFinite(t));
  return { streams: json.streams, seconds: Math.max(0, ...times) };
}

test('a recording is downloaded with both voices and both videos, and the other side is told while it lasts', { timeout: 90_000 }, async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'duet-recording-'));
  const [recorder, other] = await connectPair(on.browser, on.server, `record-${Date.now()}`);
  try {
    const button = recorder.locator('#record-button');
    await button.waitFor({ state: 'visible' });
    assert.equal(await other.locator('#remote-recording').isVisible(), false);
    await button.click();
    assert.equal(await button.getAttribute('aria-pressed'), 'true');
    await other.locator('#remote-recording').waitFor({ state: 'visible', timeout: 5_000 });
    assert.match(await other.locator('#remote-recording').innerText(), /They are recording this call/);
    await other.screenshot({ path: `${SCREENSHOT_DIR}/recording-seen-by-the-other.png` });

    await recorder.waitForTimeout(4_000);
    const downloaded = recorder.waitForEvent('download');
    await button.click();
    const download = await downloaded;
    assert.match(download.suggestedFilename(), /^duet-record-\d+-.*\.webm$/);
    const file = path.join(dir, download.suggestedFilename());
    await download.saveAs(file);
    await until(async () => !(await other.locator('#remote-recording').isVisible()), 3_000, 'the indicator to go');

    const { streams, seconds } = probe(file);
    const kinds = streams.map((s) => s.codec_type).sort();
    assert.deepEqual(kinds, ['audio', 'video'], JSON.stringify(streams));
    assert.ok(seconds > 2.5 && seconds < 10, `video runs ${seconds} s for about 4 s of recording (${file})`);
  } finally {
    await closeAll(recorder, other);
    await rm(dir, { recursive: true, force: true });
  }
});
