// The Duet page: start a call (no ?room=) or join the room named by ?room=NAME.
import { SignalingClient, isValidRoomName } from './signaling.js';

const $ = (id) => document.getElementById(id);

const statusLine = $('status');

/** Shows `text` in the status line; `kind` is 'info', 'success' or 'error'. */
function setStatus(text, kind = 'info') {
  statusLine.textContent = text;
  statusLine.dataset.kind = kind;
}

function show(viewId, title) {
  for (const view of document.querySelectorAll('.view')) {
    view.hidden = view.id !== viewId;
  }
  $('title').textContent = title;
}

/** An unguessable room name: 96 random bits as 16 base64url characters. */
export function newRoomName() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes))
    .replaceAll('+', '-')
    .replaceAll('/', '_')
    .replaceAll('=', '');
}

function startNewCall() {
  const url = new URL(location.href);
  url.search = '?room=' + newRoomName();
  url.hash = '';
  location.assign(url.href);
}

function roomLink(room) {
  const url = new URL(location.href);
  url.search = '?room=' + room;
  url.hash = '';
  return url.href;
}

function shorten(text, max = 64) {
  return text.length > max ? text.slice(0, max) + '…' : text;
}

function setUpStart() {
  show('start', 'Private calls for two');
  $('new-call').addEventListener('click', startNewCall);
}

function setUpBadRoom(room) {
  show('bad-room', 'This call link does not work');
  setStatus(`“${shorten(room)}” is not a valid room name.`, 'error');
  $('new-call-instead').addEventListener('click', startNewCall);
}

function setUpRoom(room) {
  show('room', 'Join the call');
  document.title = `Duet · ${room}`;
  $('room-name').textContent = room;

  const linkInput = $('room-link');
  linkInput.value = roomLink(room);
  linkInput.addEventListener('focus', () => linkInput.select());

  const copyButton = $('copy-link');
  let copyTimer = null;
  copyButton.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(linkInput.value);
      copyButton.textContent = 'Copied';
    } catch {
      linkInput.focus();
      linkInput.select();
      copyButton.textContent = 'Press Ctrl+C';
    }
    clearTimeout(copyTimer);
    copyTimer = setTimeout(() => {
      copyButton.textContent = 'Copy';
    }, 2000);
  });

  const joinButton = $('join');
  let client = null;
  let joined = false;

  function reset() {
    joined = false;
    if (client !== null) {
      const old = client;
      client = null;
      old.close();
    }
    joinButton.disabled = false;
    joinButton.textContent = 'Join';
  }

  async function join() {
    if (client !== null) {
      return;
    }
    joinButton.disabled = true;
    joinButton.textContent = 'Joining…';
    setStatus('Connecting…');

    const c = new SignalingClient();
    client = c;

    c.addEventListener('joined', (e) => {
      joined = true;
      joinButton.textContent = 'Joined';
      setStatus(`Joined room ${e.detail.room} as ${e.detail.id}`, 'success');
    });
    c.addEventListener('other_joined', () => setStatus('Someone joined', 'success'));
    c.addEventListener('bye', () => setStatus('The other person left'));
    c.addEventListener('full', (e) => {
      reset();
      setStatus(`Room ${e.detail.room ?? room} is full`, 'error');
    });
    c.addEventListener('error', (e) => {
      const { code, message } = e.detail;
      if (!joined) {
        reset();
      }
      setStatus(message || `The server refused the request (${code})`, 'error');
    });
    c.addEventListener('close', (e) => {
      if (client !== c) {
        return; // closed on purpose
      }
      reset();
      const why = e.detail.code === 1001 ? 'the server is restarting' : `code ${e.detail.code}`;
      setStatus(`Disconnected from the server (${why}). Join again to reconnect.`, 'error');
    });

    try {
      await c.connect();
    } catch {
      if (client === c) {
        reset();
        setStatus('Could not reach the server. Check your connection and try again.', 'error');
      }
      return;
    }
    c.join(room);
  }

  joinButton.addEventListener('click', join);
}

function main() {
  const room = new URLSearchParams(location.search).get('room');
  if (room === null) {
    setUpStart();
  } else if (isValidRoomName(room)) {
    setUpRoom(room);
  } else {
    setUpBadRoom(room);
  }
}

main();
