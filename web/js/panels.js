// The call's side panels: chat, call quality (statistics) and devices & quality.
// They render what they are given; the call controller decides what happens.

import { $ } from './ui.js';
import { describePath, drawSparkline } from './stats.js';

/** Longest chat message, in characters. */
export const CHAT_MAX = 2000;

/**
 * The chat panel: a log of messages and a form, usable once the data channel is open.
 */
export class ChatPanel {
  #log = $('chat-log');
  #form = /** @type {HTMLFormElement} */ ($('chat-form'));
  #input = /** @type {HTMLInputElement} */ ($('chat-input'));
  #send = /** @type {HTMLButtonElement} */ ($('chat-send'));
  #unread = $('chat-unread');
  #count = 0;
  #isOpen;

  /**
   * @param {{ onSend: (text: string) => boolean, isOpen: () => boolean, signal?: AbortSignal }} options
   *   onSend returns false when the message could not go out; `signal` removes the listener
   */
  constructor({ onSend, isOpen, signal }) {
    this.#isOpen = isOpen;
    this.#form.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = this.#input.value.trim().slice(0, CHAT_MAX);
      if (!text) return;
      if (onSend(text)) {
        this.add(text, 'me');
        this.#input.value = '';
      }
    }, { signal });
  }

  /**
   * Enables the form when the channel is open.
   * @param {boolean} ready
   */
  setReady(ready) {
    this.#input.disabled = !ready;
    this.#send.disabled = !ready;
    this.#input.placeholder = ready ? 'Write a message' : 'Chat opens when you are connected';
  }

  /**
   * Appends a message.
   * @param {string} text
   * @param {'me' | 'them' | 'note'} from
   */
  add(text, from) {
    const item = document.createElement('li');
    item.className = `chat-item ${from}`;
    if (from !== 'note') {
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = from === 'me' ? 'You' : 'Them';
      const time = document.createElement('time');
      const now = new Date();
      time.dateTime = now.toISOString();
      time.textContent = now.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      const meta = document.createElement('span');
      meta.className = 'meta';
      meta.append(who, time);
      item.append(meta);
    }
    const body = document.createElement('p');
    body.className = 'bubble';
    body.textContent = text;
    item.append(body);
    this.#log.append(item);
    this.#log.scrollTop = this.#log.scrollHeight;
    if (from === 'them' && !this.#isOpen()) {
      this.#count += 1;
      this.#unread.textContent = String(this.#count);
      this.#unread.hidden = false;
      $('chat-button').setAttribute('aria-label', `Chat, ${this.#count} unread`);
    }
  }

  /** The panel was opened: everything is read. */
  markRead() {
    this.#count = 0;
    this.#unread.hidden = true;
    $('chat-button').setAttribute('aria-label', 'Chat');
  }
}

/** @param {number} kbps */
function formatRate(kbps) {
  if (kbps >= 1000) return `${(kbps / 1000).toFixed(kbps >= 10_000 ? 0 : 1)} Mbit/s`;
  return `${Math.round(kbps)} kbit/s`;
}

/** @param {import('./stats.js').Endpoint} e */
function formatEndpoint(e) {
  const names = { host: 'host', srflx: 'server-reflexive (srflx)', prflx: 'peer-reflexive (prflx)', relay: 'relay (TURN)' };
  const transport = e.type === 'relay' && e.relayProtocol ? `${e.protocol.toUpperCase()} via ${e.relayProtocol.toUpperCase()}` : e.protocol.toUpperCase();
  return `${names[/** @type {keyof typeof names} */ (e.type)] ?? e.type} · ${transport}${e.address ? ` · ${e.address}` : ''}`;
}

/** @param {import('./stats.js').VideoInfo | null} v */
function formatVideo(v) {
  if (!v) return '–';
  return `${v.width}×${v.height} · ${v.fps} fps${v.codec ? ` · ${v.codec}` : ''}`;
}

/**
 * Renders a sample into the statistics panel (when it is open) and the quality
 * button in the top bar (always).
 * @param {import('./stats.js').Sample} s
 * @param {import('./stats.js').StatsMonitor['history']} history
 * @param {boolean} panelOpen
 */
export function renderStats(s, history, panelOpen) {
  const button = $('quality-button');
  button.dataset.quality = s.quality;
  const word = { good: 'good', fair: 'fair', poor: 'poor', unknown: 'not known yet' }[s.quality];
  button.setAttribute('aria-label', `Call quality: ${word}. Show statistics`);
  button.dataset.tip = `Call quality: ${word}`;
  if (!panelOpen) return;
  $('stats-path').textContent = describePath(s.pair);
  $('stats-local').textContent = s.pair ? formatEndpoint(s.pair.local) : '–';
  $('stats-remote').textContent = s.pair ? formatEndpoint(s.pair.remote) : '–';
  $('stat-rtt').textContent = s.rttMs === null ? '–' : `${Math.round(s.rttMs)} ms`;
  $('stat-in').textContent = formatRate(s.bitrateInKbps);
  $('stat-out').textContent = formatRate(s.bitrateOutKbps);
  $('stat-loss').textContent = `${s.lossPercent.toFixed(s.lossPercent < 10 ? 1 : 0)} %`;
  $('stat-jitter').textContent = s.jitterMs === null ? '–' : `${Math.round(s.jitterMs)} ms`;
  $('stat-video-in').textContent = formatVideo(s.videoIn);
  $('stat-video-out').textContent = formatVideo(s.videoOut);
  const spark = (/** @type {string} */ id, /** @type {number[]} */ values, /** @type {number | undefined} */ max) =>
    drawSparkline(/** @type {HTMLCanvasElement} */ ($(id)), values, { max });
  spark('spark-rtt', history.rtt, 50);
  spark('spark-in', history.bitrateIn, 100);
  spark('spark-out', history.bitrateOut, 100);
  spark('spark-loss', history.loss, 5);
  spark('spark-jitter', history.jitter, 20);
  spark('spark-fps', history.fps, 30);
}
