// Small DOM helpers shared by the pages: views, the status line, the call overlay,
// drawers, toasts, toggle buttons and the movable self view. No call logic here.

/**
 * The element with this id (the page's markup is fixed, so it exists).
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @returns {T}
 */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return /** @type {T} */ (el);
}

/**
 * Shows one top-level view ('home', 'lobby' or 'call') and hides the others.
 * @param {'home' | 'lobby' | 'call'} view
 */
export function showView(view) {
  for (const id of ['home', 'lobby', 'call']) $(id).hidden = id !== view;
  document.body.dataset.view = view;
}

/**
 * Shows `text` in the status line (the page's one role="status" live region).
 * @param {string} text
 * @param {'info' | 'success' | 'error' | 'warning'} [kind]
 */
export function setStatus(text, kind = 'info') {
  const el = $('status');
  if (el.textContent !== text) el.textContent = text; // unchanged text is not announced again
  el.dataset.kind = kind;
}

/**
 * A short-lived message at the bottom of the screen.
 * @param {string} text
 * @param {{ kind?: 'info' | 'error', ms?: number }} [options]
 */
export function toast(text, { kind = 'info', ms = 4000 } = {}) {
  const box = $('toasts');
  const item = document.createElement('p');
  item.className = `toast ${kind}`;
  item.textContent = text;
  box.append(item);
  while (box.children.length > 3) box.firstElementChild?.remove();
  setTimeout(() => {
    item.classList.add('leaving');
    setTimeout(() => item.remove(), 300);
  }, ms);
}

/**
 * Sets a two-state button: pressed or not, with the accessible name and tooltip
 * for the action it will do next.
 * @param {HTMLElement} button
 * @param {boolean} pressed
 * @param {string} label
 */
export function setToggle(button, pressed, label) {
  button.setAttribute('aria-pressed', String(pressed));
  button.setAttribute('aria-label', label);
  button.dataset.tip = label;
}

/**
 * Wires a copy button to a read-only link field: copies, says so for two seconds.
 * @param {HTMLInputElement} input
 * @param {HTMLButtonElement} button
 */
export function wireCopy(input, button) {
  input.addEventListener('focus', () => input.select());
  const text = /** @type {HTMLElement} */ (button.querySelector('.copy-text'));
  let timer = 0;
  button.addEventListener('click', async () => {
    let copied = false;
    try {
      await navigator.clipboard.writeText(input.value);
      copied = true;
    } catch {
      input.focus();
      input.select();
    }
    if (text) text.textContent = copied ? 'Copied' : 'Press Ctrl+C';
    button.setAttribute('aria-label', copied ? 'Link copied' : 'Copy link');
    button.classList.toggle('done', copied);
    clearTimeout(timer);
    timer = window.setTimeout(() => {
      if (text) text.textContent = 'Copy';
      button.setAttribute('aria-label', 'Copy link');
      button.classList.remove('done');
    }, 2000);
  });
}

/**
 * @typedef {object} OverlayAction
 * @property {string} label
 * @property {'primary' | 'secondary' | 'accept' | 'decline'} [style]
 * @property {string} [icon]       a sprite id such as 'i-phone'
 * @property {() => void} run
 *
 * @typedef {object} OverlayContent
 * @property {string} title
 * @property {string} [text]
 * @property {string} [icon]       sprite id for the visual
 * @property {'pulse' | 'ring' | 'spin' | 'still' | 'alert'} [visual]
 * @property {boolean} [share]     show the room link with a copy button
 * @property {OverlayAction[]} [actions]
 * @property {boolean} [focus]     move keyboard focus into the overlay
 */

/**
 * Shows the call overlay with `content`, or hides it (null).
 * @param {OverlayContent | null} content
 */
export function setOverlay(content) {
  const overlay = $('overlay');
  if (content === null) {
    overlay.hidden = true;
    return;
  }
  overlay.hidden = false;
  $('overlay-title').textContent = content.title;
  const text = $('overlay-text');
  text.textContent = content.text ?? '';
  text.hidden = !content.text;
  $('overlay-visual').dataset.visual = content.visual ?? 'still';
  $('overlay-icon').setAttribute('href', `#${content.icon ?? 'i-user'}`);
  $('overlay-share').hidden = !content.share;
  const actions = $('overlay-actions');
  actions.replaceChildren();
  for (const action of content.actions ?? []) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = `action ${action.style ?? 'secondary'}`;
    if (action.icon) {
      const svgNs = 'http://www.w3.org/2000/svg';
      const svg = document.createElementNS(svgNs, 'svg');
      svg.setAttribute('class', 'icon');
      svg.setAttribute('aria-hidden', 'true');
      const use = document.createElementNS(svgNs, 'use');
      use.setAttribute('href', `#${action.icon}`);
      svg.append(use);
      button.append(svg);
    }
    button.append(document.createTextNode(action.label));
    button.addEventListener('click', () => action.run());
    actions.append(button);
  }
  if (content.focus) {
    const first = actions.querySelector('button');
    (first ?? $('overlay-title')).focus({ preventScroll: true });
  }
}

/**
 * Side panels (chat, settings, statistics): one open at a time, Escape closes,
 * focus goes in on open and back to the button that opened it on close.
 */
export class Drawers extends EventTarget {
  /** @type {Map<string, { panel: HTMLElement, button: HTMLElement }>} */
  #drawers = new Map();
  /** @type {string | null} */
  #open = null;

  /**
   * @param {string} name
   * @param {HTMLElement} panel
   * @param {HTMLElement} button
   * @param {AbortSignal} [signal] removes the listeners when aborted
   */
  add(name, panel, button, signal) {
    this.#drawers.set(name, { panel, button });
    button.addEventListener('click', () => this.toggle(name), { signal });
    for (const close of panel.querySelectorAll('[data-close]')) {
      close.addEventListener('click', () => this.close(), { signal });
    }
    panel.addEventListener(
      'keydown',
      (event) => {
        if (event.key === 'Escape') {
          event.stopPropagation();
          this.close();
        }
      },
      { signal },
    );
  }

  /** @returns {string | null} */
  get current() {
    return this.#open;
  }

  /** @param {string} name */
  toggle(name) {
    if (this.#open === name) this.close();
    else this.open(name);
  }

  /** @param {string} name */
  open(name) {
    if (this.#open === name) return;
    this.close({ restoreFocus: false });
    const drawer = this.#drawers.get(name);
    if (!drawer) return;
    this.#open = name;
    drawer.panel.hidden = false;
    drawer.button.setAttribute('aria-expanded', 'true');
    document.body.dataset.drawer = name;
    const target = drawer.panel.querySelector('input:not([disabled]), select, [data-close]');
    /** @type {HTMLElement | null} */ (target)?.focus({ preventScroll: true });
    this.dispatchEvent(new CustomEvent('change', { detail: { open: name } }));
  }

  /** @param {{ restoreFocus?: boolean }} [options] */
  close({ restoreFocus = true } = {}) {
    const name = this.#open;
    if (name === null) return;
    const drawer = this.#drawers.get(name);
    this.#open = null;
    delete document.body.dataset.drawer;
    if (drawer) {
      drawer.panel.hidden = true;
      drawer.button.setAttribute('aria-expanded', 'false');
      if (restoreFocus) drawer.button.focus({ preventScroll: true });
    }
    this.dispatchEvent(new CustomEvent('change', { detail: { open: null } }));
  }
}

const CORNERS = ['tl', 'tr', 'bl', 'br'];

/**
 * Lets the self view be dragged to any corner of the stage (it snaps to the
 * nearest one) or moved with the arrow keys.
 * @param {HTMLElement} self
 * @param {HTMLElement} stage
 * @param {AbortSignal} [signal] removes the listeners when aborted
 */
export function makeMovable(self, stage, signal) {
  /** @type {{ id: number, x: number, y: number, moved: boolean } | null} */
  let drag = null;

  self.addEventListener('pointerdown', (event) => {
    if (event.button !== 0) return;
    drag = { id: event.pointerId, x: event.clientX, y: event.clientY, moved: false };
    self.setPointerCapture(event.pointerId);
    self.classList.add('dragging');
  }, { signal });
  self.addEventListener('pointermove', (event) => {
    if (!drag || event.pointerId !== drag.id) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
    self.style.translate = `${dx}px ${dy}px`;
  }, { signal });
  const finish = (/** @type {PointerEvent} */ event) => {
    if (!drag || event.pointerId !== drag.id) return;
    drag = null;
    self.classList.remove('dragging');
    const box = self.getBoundingClientRect();
    const area = stage.getBoundingClientRect();
    const cx = box.left + box.width / 2 - area.left;
    const cy = box.top + box.height / 2 - area.top;
    const corner = (cy < area.height / 2 ? 't' : 'b') + (cx < area.width / 2 ? 'l' : 'r');
    self.style.translate = '';
    self.dataset.corner = corner;
  };
  self.addEventListener('pointerup', finish, { signal });
  self.addEventListener('pointercancel', finish, { signal });

  self.addEventListener('keydown', (event) => {
    const corner = self.dataset.corner ?? 'br';
    let [v, h] = corner.split('');
    if (event.key === 'ArrowUp') v = 't';
    else if (event.key === 'ArrowDown') v = 'b';
    else if (event.key === 'ArrowLeft') h = 'l';
    else if (event.key === 'ArrowRight') h = 'r';
    else return;
    event.preventDefault();
    const next = v + h;
    if (CORNERS.includes(next)) self.dataset.corner = next;
  }, { signal });
}

/**
 * "m:ss" or "h:mm:ss".
 * @param {number} ms
 */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (/** @type {number} */ n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

/**
 * Fills a <select> with `options`, keeping `selected` chosen when present.
 * @param {HTMLSelectElement} select
 * @param {{ value: string, label: string }[]} options
 * @param {string | null | undefined} selected
 */
export function fillSelect(select, options, selected) {
  select.replaceChildren(
    ...options.map(({ value, label }) => {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = label;
      return option;
    }),
  );
  if (selected && options.some((o) => o.value === selected)) select.value = selected;
  select.disabled = options.length === 0;
}
