// The Duet page. Three views:
//   /                      the start page: "New call" makes an unguessable room
//   /?room=NAME            the lobby (preview, link, Join), then the call
//   /?room=BAD             an explanation and "New call"
// Options: &ring=1 (ring mode, see ring.js), &policy=relay (relay-only ICE, a diagnostic).

import { RoomSession, isValidRoomName, storedSeat } from './signaling.js';
import { LocalMedia, INSECURE_CONTEXT_MESSAGE, mediaAvailable } from './media.js';
import { Room } from './room.js';
import { loadPrefs, savePrefs } from './prefs.js';
import { $, fillSelect, setStatus, setToggle, showView, wireCopy } from './ui.js';

/** An unguessable room name: 96 random bits as 16 base64url characters. */
export function newRoomName() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes))
    .replaceAll('+', '-')
    .replaceAll('/', '_')
    .replaceAll('=', '');
}

/**
 * The link to a room, keeping the room's options.
 * @param {string} room
 * @param {{ ring?: boolean, policy?: string }} [options]
 */
function roomLink(room, { ring = false, policy = 'all' } = {}) {
  const url = new URL(location.href);
  const params = new URLSearchParams({ room });
  if (ring) params.set('ring', '1');
  if (policy === 'relay') params.set('policy', 'relay');
  url.search = '?' + params.toString();
  url.hash = '';
  return url.href;
}

/** @param {{ ring?: boolean }} [options] */
function startNewCall({ ring = false } = {}) {
  location.assign(roomLink(newRoomName(), { ring }));
}

/**
 * @param {string} text
 * @param {number} [max]
 */
function shorten(text, max = 64) {
  return text.length > max ? text.slice(0, max) + '…' : text;
}

// ---------------------------------------------------------------------------
// Start page and broken links

function setUpStart() {
  showView('home');
  $('start').hidden = false;
  $('title').textContent = 'Private calls for two';
  $('new-call').addEventListener('click', () => {
    startNewCall({ ring: /** @type {HTMLInputElement} */ ($('ring-option')).checked });
  });
}

/** @param {string} room */
function setUpBadRoom(room) {
  showView('home');
  $('bad-room').hidden = false;
  $('title').textContent = 'This call link does not work';
  const status = $('home-status');
  status.textContent = `“${shorten(room)}” is not a valid room name.`;
  status.dataset.kind = 'error';
  $('new-call-instead').addEventListener('click', () => startNewCall());
}

// ---------------------------------------------------------------------------
// The room: lobby, then the call

/**
 * @param {string} room
 * @param {{ ring: boolean, policy: RTCIceTransportPolicy }} options
 */
function setUpRoom(room, { ring, policy }) {
  document.title = `Duet · ${room}`;
  showView('lobby');
  let prefs = loadPrefs();
  const media = new LocalMedia({ cameraId: prefs.cameraId, micId: prefs.micId });

  $('room-name').textContent = room;
  const link = roomLink(room, { ring, policy });
  for (const id of ['room-link', 'overlay-link']) /** @type {HTMLInputElement} */ ($(id)).value = link;
  wireCopy(/** @type {HTMLInputElement} */ ($('room-link')), /** @type {HTMLButtonElement} */ ($('copy-link')));
  wireCopy(/** @type {HTMLInputElement} */ ($('overlay-link')), /** @type {HTMLButtonElement} */ ($('overlay-copy')));

  const tags = $('room-tags');
  const addTag = (/** @type {string} */ text) => {
    const li = document.createElement('li');
    li.textContent = text;
    tags.append(li);
  };
  if (ring) {
    $('lobby-title').textContent = 'Ready to call?';
    $('lobby-lead').textContent = 'Ring mode: whoever joins second rings the other, who answers or declines.';
    addTag('Ring mode');
  }
  if (policy === 'relay') addTag('Relay only (TURN)');
  tags.hidden = tags.children.length === 0;

  const notice = $('lobby-notice');
  /** @param {string | null} text */
  const showNotice = (text) => {
    notice.textContent = text ?? '';
    notice.hidden = !text;
  };
  if (!mediaAvailable()) showNotice(INSECURE_CONTEXT_MESSAGE);

  // Preview ---------------------------------------------------------------
  const preview = /** @type {HTMLVideoElement} */ ($('preview-video'));
  const micButton = /** @type {HTMLButtonElement} */ ($('lobby-mic'));
  const camButton = /** @type {HTMLButtonElement} */ ($('lobby-cam'));
  let previewStarted = false;

  const renderPreview = () => {
    const sending = media.outgoing('video') !== null;
    $('preview').dataset.camera = sending ? 'on' : 'off';
    $('preview-off').hidden = sending;
    $('preview').dataset.mirror = String(prefs.mirror && !media.sharingScreen);
    micButton.disabled = !media.hasMic;
    camButton.disabled = !previewStarted;
    const micLabel = !previewStarted || media.hasMic ? (media.micMuted ? 'Turn on microphone' : 'Turn off microphone') : 'No microphone';
    setToggle(micButton, media.micMuted || (previewStarted && !media.hasMic), micLabel);
    setToggle(camButton, media.cameraOff, media.cameraOff ? 'Turn on camera' : 'Turn off camera');
  };

  const refreshDevices = async () => {
    const list = await LocalMedia.devices();
    const toOptions = (/** @type {import('./media.js').DeviceChoice[]} */ d) => d.map((x) => ({ value: x.deviceId, label: x.label }));
    fillSelect(/** @type {HTMLSelectElement} */ ($('lobby-camera')), toOptions(list.videoinput), media.cameraId);
    fillSelect(/** @type {HTMLSelectElement} */ ($('lobby-microphone')), toOptions(list.audioinput), media.micId);
    $('lobby-devices').hidden = list.videoinput.length + list.audioinput.length === 0;
  };

  const startPreview = async () => {
    if (previewStarted) return;
    previewStarted = true;
    $('preview-start').hidden = true;
    $('preview-note').textContent = 'Starting your camera…';
    const outcome = await media.start();
    preview.srcObject = media.preview;
    preview.play().catch(() => {});
    $('preview-note').textContent = outcome.video ? 'Your camera is off.' : 'No camera: you join with sound only.';
    if (!outcome.audio && !outcome.video) $('preview-note').textContent = 'You join without camera and microphone.';
    if (outcome.problem && document.body.dataset.view === 'lobby') showNotice(outcome.problem);
    renderPreview();
    refreshDevices();
  };

  media.addEventListener('change', renderPreview);
  micButton.addEventListener('click', () => media.setMicMuted(!media.micMuted));
  camButton.addEventListener('click', () => media.setCameraOff(!media.cameraOff).catch(() => renderPreview()));
  $('preview-start').addEventListener('click', startPreview);
  $('lobby-camera').addEventListener('change', (e) => {
    const id = /** @type {HTMLSelectElement} */ (e.target).value;
    prefs = savePrefs({ cameraId: id });
    media.useCamera(id).catch(() => showNotice('Could not switch to that camera.'));
  });
  $('lobby-microphone').addEventListener('change', (e) => {
    const id = /** @type {HTMLSelectElement} */ (e.target).value;
    prefs = savePrefs({ micId: id });
    media.useMicrophone(id).catch(() => showNotice('Could not switch to that microphone.'));
  });
  renderPreview();

  // Start the preview at once when the browser already allows the camera; otherwise
  // wait for a click (Join, or "Check camera and microphone"), so the permission
  // prompt never comes out of the blue.
  if (mediaAvailable() && navigator.permissions?.query) {
    Promise.all(
      ['camera', 'microphone'].map((name) =>
        navigator.permissions.query({ name: /** @type {PermissionName} */ (name) }).then((p) => p.state, () => 'prompt'),
      ),
    ).then((states) => {
      if (states.every((s) => s === 'granted') && document.body.dataset.view === 'lobby') startPreview();
    });
  } else if (!mediaAvailable()) {
    $('preview-start').hidden = true;
    $('preview-note').textContent = 'Camera and microphone need a secure (https://) page.';
  }

  // Join ------------------------------------------------------------------
  const joinButton = /** @type {HTMLButtonElement} */ ($('join'));
  /** @type {Room | null} */
  let current = null;
  // The signaling socket opens while the lobby shows, so Join is one message away.
  let session = new RoomSession(room);
  session.preconnect();

  const backToLobby = (/** @type {string} */ message) => {
    current = null;
    session = new RoomSession(room);
    session.preconnect();
    showView('lobby');
    $('lobby').querySelector('.lobby-panel')?.append($('status'));
    joinButton.disabled = false;
    joinButton.textContent = 'Join';
    setStatus(message, 'error');
    joinButton.focus();
    // The call may have started the camera: show it in the preview.
    previewStarted = false;
    startPreview();
  };

  const join = () => {
    if (current) return;
    showNotice(null);
    setStatus('');
    joinButton.disabled = true;
    previewStarted = true; // the call starts the media itself
    $('preview-start').hidden = true;
    prefs = loadPrefs();
    current = new Room({ room, ring, policy, media, prefs, onFull: backToLobby, session });
    current.join();
  };
  joinButton.addEventListener('click', join);
  installTestHook(() => current, () => media);

  // A reload (or "Rejoin") in the middle of a call comes straight back into the room.
  let autojoin = false;
  try {
    autojoin = sessionStorage.getItem(`duet.autojoin.${room}`) === '1';
    sessionStorage.removeItem(`duet.autojoin.${room}`);
  } catch {
    // storage blocked
  }
  if (autojoin || storedSeat(room) !== null) join();
}

// ---------------------------------------------------------------------------
// Diagnostics

/**
 * window.__duet: a small read-mostly view of the call for the browser tests and
 * for debugging from the console. Not an API.
 * @param {() => Room | null} getRoom
 * @param {() => LocalMedia} media
 */
function installTestHook(getRoom, media) {
  Object.defineProperty(window, '__duet', {
    configurable: true,
    value: Object.freeze({
      get phase() {
        return getRoom()?.phase ?? 'lobby';
      },
      get id() {
        return getRoom()?.id ?? null;
      },
      get peer() {
        return getRoom()?.peer ?? null;
      },
      /** What left this browser through signaling, plus the negotiation counters. */
      get counters() {
        const room = getRoom();
        return { sent: { ...(room?.sent ?? {}) }, call: { ...(room?.call?.counters ?? {}) } };
      },
      get marks() {
        return { ...(getRoom()?.marks ?? {}) };
      },
      /** True while this page records the call. */
      get recording() {
        return getRoom()?.recording ?? false;
      },
      /** The verification code shown in the call, if any. */
      get verificationCode() {
        return getRoom()?.verificationCode ?? null;
      },
      get reconnects() {
        return getRoom()?.session.reconnects ?? 0;
      },
      /** @returns {RTCPeerConnection | null} */
      pc() {
        return getRoom()?.call?.pc ?? null;
      },
      /** Every local track the page opened, with its state ('ended' once released). */
      localTracks() {
        return media()
          .everyTrack()
          .map((t) => ({ kind: t.kind, readyState: t.readyState, enabled: t.enabled, label: t.label }));
      },
      reconnectSignaling() {
        getRoom()?.session.reconnectNow();
      },
      restartIce() {
        getRoom()?.call?.restartIce();
      },
    }),
  });
}

// ---------------------------------------------------------------------------

function main() {
  const params = new URLSearchParams(location.search);
  const room = params.get('room');
  if (room === null) {
    setUpStart();
  } else if (isValidRoomName(room)) {
    const ring = ['1', 'true', 'yes'].includes((params.get('ring') ?? '').toLowerCase());
    const policy = params.get('policy') === 'relay' ? 'relay' : 'all';
    setUpRoom(room, { ring, policy });
  } else {
    setUpBadRoom(room);
  }
}

main();
