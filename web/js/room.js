// The call controller: one person's stay in one room, from Join to the end.
//
// It ties together the seat (RoomSession), the local media (LocalMedia), the
// connection (PeerCall), ring mode (RingFlow) and the screen. Who offers first:
//
//   - normal rooms: the member who joins second, as soon as it is seated; the member
//     already there creates its RTCPeerConnection (with its tracks) when it learns of
//     the newcomer (other_joined), so it is ready when the offer lands, but it never
//     offers first;
//   - ring rooms: the callee, right after accepting; the caller creates its
//     RTCPeerConnection when that offer arrives. Before the accept neither side has
//     an RTCPeerConnection, so no SDP and no candidate can leave.
//
// After that, either side may offer (perfect negotiation, see call.js).
//
// Application messages. Through the signaling server (message.data), JSON objects
// with a `kind`:
//   sdp, ice                      the connection's descriptions and candidates (call.js)
//   ring, ring-accept, ring-decline, ring-cancel   ring mode (ring.js)
//   media { audio, video, screen }  our microphone/camera/screen state, only until the
//                                   data channel is open
// On the data channel (peer to peer), the same shape:
//   chat { text }                 a chat message (at most 2000 characters shown)
//   media { audio, video, screen }  as above
//   codec { mimeType }            "I prefer this video codec" (null: automatic); the
//                                 sender renegotiates, the receiver adopts it
// Unknown kinds are ignored, so either side may add new ones.

import { RoomSession } from './signaling.js';
import { PeerCall, isPolite, videoCodecChoices } from './call.js';
import { LocalMedia, describeMediaError, screenShareAvailable } from './media.js';
import { StatsMonitor } from './stats.js';
import { CallReporter } from './report.js';
import { RingFlow, isRingMessage } from './ring.js';
import { ChatPanel, CHAT_MAX, renderStats } from './panels.js';
import { savePrefs } from './prefs.js';
import { verificationCode } from './verify.js';
import { CallRecorder, download, recordingAvailable } from './recorder.js';
import {
  $,
  Drawers,
  fillSelect,
  formatDuration,
  makeMovable,
  setOverlay,
  setStatus,
  setToggle,
  showView,
  toast,
} from './ui.js';

/**
 * @typedef {'joining' | 'waiting' | 'calling' | 'ringing' | 'connecting' | 'connected' | 'reconnecting' | 'ended'} Phase
 * @typedef {'hangup' | 'left' | 'declined' | 'cancelled' | 'no-answer' | 'replaced'} EndReason
 */

/** After this long in "connecting", the overlay says why it may be slow. */
const SLOW_CONNECT_MS = 12_000;

/** Epoch milliseconds with sub-millisecond precision (comparable between tabs). */
function now() {
  return performance.timeOrigin + performance.now();
}

export class Room {
  /** @type {Phase} */
  phase = 'joining';
  /** @type {EndReason | null} */
  endReason = null;
  /** @type {PeerCall | null} */
  call = null;
  /** True while this page records the call. */
  get recording() {
    return this.#recorder !== null;
  }

  /** The verification code of the current connection (see verify.js), once connected. */
  /** @type {string | null} */
  verificationCode = null;
  /** Counters for diagnostics and tests: what left this browser through signaling. */
  sent = { descriptions: 0, offers: 0, candidates: 0, messages: 0 };
  /** Timestamps (epoch ms) of milestones, for diagnostics and the set-up benchmark. */
  marks = { join: 0, seated: 0, connected: 0, firstFrame: 0 };

  #room;
  #ringMode;
  #policy;
  #prefs;
  #media;
  #session;
  /** @type {RingFlow | null} */
  #ring = null;
  /** @type {'caller' | 'callee' | null} */
  #ringRole = null;
  /** @type {RTCIceServer[]} */
  #iceServers = [];
  /** @type {Promise<unknown>} */
  #mediaReady = Promise.resolve();
  /** @type {StatsMonitor | null} */
  #stats = null;
  /** @type {CallReporter | null} */
  #reporter = null;
  #remote = { audio: true, video: true, screen: false, recording: false };
  /** @type {CallRecorder | null} */
  #recorder = null;
  #drawers = new Drawers();
  #chat;
  #abort = new AbortController();
  /** @type {ReturnType<typeof setInterval> | null} */
  #clock = null;
  #connectingSince = 0;
  #slowTimer = 0;
  #onFull;

  /**
   * @param {object} options
   * @param {string} options.room
   * @param {boolean} options.ring        ring mode (?ring=1)
   * @param {RTCIceTransportPolicy} options.policy  'relay' forces TURN (?policy=relay)
   * @param {LocalMedia} options.media     the page's camera and microphone
   * @param {import('./prefs.js').Prefs} options.prefs
   * @param {(message: string) => void} options.onFull  the room is full: back to the lobby
   * @param {RoomSession} [options.session] a session for `room`, perhaps preconnected
   */
  constructor({ room, ring, policy, media, prefs, onFull, session }) {
    this.#room = room;
    this.#ringMode = ring;
    this.#policy = policy;
    this.#media = media;
    this.#prefs = prefs;
    this.#onFull = onFull;
    this.#session = session ?? new RoomSession(room);
    this.#chat = new ChatPanel({
      onSend: (text) => this.#sendChat(text),
      isOpen: () => this.#drawers.current === 'chat',
      signal: this.#abort.signal,
    });
    if (ring) {
      this.#ring = new RingFlow({ send: (data) => this.#session.send(data) });
      this.#ring.addEventListener('state', (e) => this.#onRingState(/** @type {CustomEvent} */ (e).detail.state));
    }
    this.#wireSession();
    this.#wireControls();
    this.#wireMedia();
  }

  /** The seat's id (null before joining). */
  get id() {
    return this.#session.id;
  }

  get peer() {
    return this.#session.peer;
  }

  get session() {
    return this.#session;
  }

  get media() {
    return this.#media;
  }

  /** Joins the room: opens camera and microphone and the signaling seat at the same time. */
  join() {
    this.marks.join = now();
    showView('call');
    $('status-slot').append($('status'));
    this.#setPhase('joining');
    this.#mediaReady = this.#media.start().then((outcome) => {
      if (outcome.problem) toast(outcome.problem, { kind: 'error', ms: 9000 });
      this.#renderSelf();
      this.#renderControls();
      this.#refreshDevices();
      return outcome;
    });
    this.#attachSelfView();
    this.#session.start();
    this.#clock = setInterval(() => this.#tick(), 1000);
  }

  /** Hangs up: the other side sees the call end at once. */
  hangUp() {
    this.#end('hangup');
  }

  /** Tears the controller down (listeners, timers); used when going back to the lobby. */
  dispose() {
    this.#abort.abort();
    if (this.#clock !== null) clearInterval(this.#clock);
    clearTimeout(this.#slowTimer);
    this.#stats?.stop();
    this.call?.close();
    this.call = null;
  }

  // -------------------------------------------------------------------------
  // Signaling

  #wireSession() {
    const s = this.#session;
    const on = (/** @type {string} */ type, /** @type {(detail: any) => void} */ fn) =>
      s.addEventListener(type, (e) => fn(/** @type {CustomEvent} */ (e).detail));
    on('joined', (d) => this.#onJoined(d));
    on('other_joined', () => this.#onOtherJoined());
    on('bye', () => this.#onBye());
    on('message', (d) => this.#onMessage(d.data));
    on('state', () => this.#renderBanner());
    on('full', () => {
      this.dispose();
      this.#onFull(`This call is full: two people are already in room ${this.#room}. Try again later.`);
    });
    on('refused', (d) => {
      this.dispose();
      this.#onFull(d.message || `The server refused to seat you (${d.code}).`);
    });
    on('ended', (d) => {
      if (d.reason === 'replaced') this.#end('replaced');
    });
  }

  /** @param {import('./signaling.js').JoinedDetail} detail */
  #onJoined(detail) {
    this.#iceServers = detail.iceServers;
    if (!this.marks.seated) this.marks.seated = now();
    if (this.phase === 'ended') return;
    this.#renderBanner();
    if (detail.resumed) {
      // Same seat, same peer: the call goes on. If ICE broke meanwhile, heal it.
      const ice = this.call?.pc.iceConnectionState;
      if (ice === 'failed' || ice === 'disconnected') this.call?.restartIce();
      return;
    }
    if (detail.replacedId) {
      // The seat was lost (away too long): whatever we had with the old peer is over.
      this.#dropCall();
      this.#ring?.reset();
      this.#ringRole = null;
    }
    if (detail.peers.length === 0) {
      this.#setPhase('waiting');
      return;
    }
    if (this.#ring) {
      this.#ringRole = 'caller';
      this.#ring.call();
      return;
    }
    this.#setPhase('connecting');
    this.#startCallWhenReady(true);
  }

  #onOtherJoined() {
    if (this.phase === 'ended') return;
    if (this.#ring) {
      this.#ringRole = 'callee';
      return; // their ring follows
    }
    this.#dropCall(); // anything left from an earlier peer
    this.#setPhase('connecting'); // they make the offer
    // Be ready for it: the connection and its tracks exist by the time the offer lands.
    // It does not offer by itself, so the offers cannot cross. (No ICE candidate pool:
    // handing a pooled session over made setLocalDescription(answer) slower.)
    this.#startCallWhenReady(false);
  }

  #onBye() {
    if (this.phase === 'ended') return;
    const ringState = this.#ring?.state;
    if (ringState === 'calling' || ringState === 'ringing') {
      this.#ring?.peerLeft();
      return;
    }
    if (this.call?.everConnected) {
      this.#end('left');
      return;
    }
    // They left before the call got going: wait for someone again.
    this.#dropCall();
    this.#ring?.reset();
    this.#ringRole = null;
    this.#setPhase('waiting');
  }

  /** @param {unknown} data */
  async #onMessage(data) {
    if (typeof data !== 'object' || data === null || this.phase === 'ended') return;
    const msg = /** @type {{ kind?: unknown }} */ (data);
    if (isRingMessage(msg)) {
      this.#ring?.handle(/** @type {any} */ (msg));
      return;
    }
    if (msg.kind === 'sdp' || msg.kind === 'ice') {
      if (this.#ring && this.#ring.state !== 'accepted') return; // not before the accept
      // The media must be ready before the connection exists; then create and apply
      // in one go, so the first remote offer is applied before anything else.
      await this.#mediaReady;
      if (this.phase === 'ended') return;
      const call = this.call ?? this.#startCall(false);
      call.handleSignal(/** @type {import('./call.js').Signal} */ (msg));
      return;
    }
    this.#onAppMessage(msg);
  }

  /** @param {object} data */
  #sendSignal(data) {
    const kind = /** @type {any} */ (data).kind;
    if (kind === 'ice') this.sent.candidates += 1;
    if (kind === 'sdp') {
      this.sent.descriptions += 1;
      if (/** @type {any} */ (data).description?.type === 'offer') this.sent.offers += 1;
    }
    this.sent.messages += 1;
    this.#session.send(data);
  }

  // -------------------------------------------------------------------------
  // Ring mode

  /** @param {import('./ring.js').RingState} state */
  #onRingState(state) {
    if (this.phase === 'ended') return;
    switch (state) {
      case 'calling':
        this.#setPhase('calling');
        break;
      case 'ringing':
        this.#ringRole = 'callee';
        this.#setPhase('ringing');
        break;
      case 'accepted':
        this.#setPhase('connecting');
        if (this.#ringRole === 'callee') this.#startCallWhenReady(true);
        break;
      case 'declined':
        this.#end('declined');
        break;
      case 'cancelled':
        if (this.#ringRole === 'caller') this.#end('cancelled');
        break;
      case 'no-answer':
        this.#end('no-answer');
        break;
      case 'missed':
        toast('Missed call: the caller hung up.');
        this.#ring?.reset();
        break;
      case 'idle':
        if (this.phase === 'ringing' || this.phase === 'connecting') this.#setPhase('waiting');
        break;
      default:
        break;
    }
  }

  // -------------------------------------------------------------------------
  // The connection

  /**
   * Creates the connection once the media is ready (the offer, if any, waits for it).
   * @param {boolean} initiator
   */
  async #startCallWhenReady(initiator) {
    await this.#mediaReady;
    if (this.phase === 'ended' || this.call) return;
    this.#startCall(initiator);
  }

  /**
   * Creates the RTCPeerConnection. The initiator offers at once; the other side
   * answers the offer it is about to apply.
   * @param {boolean} initiator
   */
  #startCall(initiator) {
    const me = this.#session.id ?? '';
    const them = this.#session.peer ?? '';
    const call = new PeerCall({
      iceServers: this.#iceServers,
      polite: isPolite(me, them),
      send: (signal) => this.#sendSignal(signal),
      initiator,
      policy: this.#policy,
      codec: this.#prefs.codec || null,
    });
    this.call = call;
    call.setTrack('audio', this.#media.outgoing('audio'));
    call.setTrack('video', this.#media.outgoing('video'));
    call.setVideoLimits({ maxBitrate: this.#prefs.maxBitrate, preset: this.#prefs.preset });

    const on = (/** @type {string} */ type, /** @type {(detail: any) => void} */ fn) =>
      call.addEventListener(type, (e) => {
        if (this.call === call) fn(/** @type {CustomEvent} */ (e).detail);
      });
    on('track', (d) => this.#onRemoteTrack(d.track, d.streams));
    on('state', (d) => this.#onCallState(d.state));
    on('channel', (d) => {
      this.#chat.setReady(d.open);
      if (d.open) this.#sendMediaState();
    });
    on('data', (msg) => this.#onAppMessage(msg));
    on('problem', (d) => console.warn('duet:', d.message));

    this.#stats = new StatsMonitor(() => call.pc);
    // How the call goes, for the operator's metrics (report.js). A page may set
    // window.duetReportFailAfterMs to report a failure sooner than 30 s (tests do).
    const failAfterMs = /** @type {any} */ (window).duetReportFailAfterMs;
    this.#reporter = new CallReporter(call.pc, (report) => this.#session.report(report), {
      failAfterMs: typeof failAfterMs === 'number' ? failAfterMs : undefined,
    });
    const reporter = this.#reporter;
    this.#stats.addEventListener('sample', (e) => {
      if (this.call !== call || !this.#stats) return;
      const sample = /** @type {CustomEvent} */ (e).detail;
      reporter.sample(sample, this.#remote.video || this.#remote.screen);
      renderStats(sample, this.#stats.history, this.#drawers.current === 'stats');
    });
    // Sampling starts once connected: nothing to measure before, and set-up is busy enough.
    return call;
  }

  /** Closes the connection (not the seat, not the media). */
  #dropCall() {
    this.#reporter?.end(this.call?.counters.iceRestarts ?? 0);
    this.#reporter = null;
    this.#stats?.stop();
    this.#stats = null;
    this.call?.close();
    this.call = null;
    this.#stopRecording();
    this.#remote = { audio: true, video: true, screen: false, recording: false };
    const video = /** @type {HTMLVideoElement} */ ($('remote-video'));
    video.srcObject = null;
    this.#chat.setReady(false);
    $('sound-button').hidden = true;
  }

  /** @param {import('./call.js').CallState} state */
  #onCallState(state) {
    if (this.phase === 'ended') return;
    if (state === 'connected') {
      if (!this.marks.connected) this.marks.connected = now();
      this.#reporter?.connected();
      this.#stats?.start();
      this.#setPhase('connected');
      this.#showVerificationCode();
    } else if (state === 'reconnecting') {
      this.#setPhase('reconnecting');
    } else if (state === 'connecting' && this.phase !== 'connecting') {
      this.#setPhase(this.call?.everConnected ? 'reconnecting' : 'connecting');
    }
  }

  /**
   * @param {MediaStreamTrack} track
   * @param {readonly MediaStream[]} streams
   */
  #onRemoteTrack(track, streams) {
    const video = /** @type {HTMLVideoElement} */ ($('remote-video'));
    let stream = streams[0];
    if (!stream) {
      stream = video.srcObject instanceof MediaStream ? video.srcObject : new MediaStream();
      stream.addTrack(track);
    }
    if (video.srcObject !== stream) {
      video.srcObject = stream;
      this.#play(video);
    }
    if (track.kind === 'video' && !this.marks.firstFrame && 'requestVideoFrameCallback' in video) {
      video.requestVideoFrameCallback((time) => {
        if (!this.marks.firstFrame) this.marks.firstFrame = performance.timeOrigin + time;
        this.#renderRemote();
      });
    }
    this.#renderRemote();
  }

  /**
   * Plays the remote media; when the browser blocks sound until the person
   * interacts, plays it muted and offers a "Turn on sound" button.
   * @param {HTMLVideoElement} video
   */
  #play(video) {
    video.play().catch((err) => {
      if (err?.name !== 'NotAllowedError') return;
      video.muted = true;
      video.play().catch(() => {});
      const button = $('sound-button');
      button.hidden = false;
    });
  }

  // -------------------------------------------------------------------------
  // Application messages (data channel, or signaling before it opens)

  /** @param {any} msg */
  #onAppMessage(msg) {
    switch (msg.kind) {
      case 'chat':
        if (typeof msg.text === 'string' && msg.text.trim()) {
          const text = msg.text.slice(0, CHAT_MAX);
          this.#chat.add(text, 'them');
          if (this.#drawers.current !== 'chat') toast(`Message: ${text.length > 80 ? text.slice(0, 80) + '…' : text}`);
        }
        break;
      case 'media':
        this.#remote = { ...this.#remote, audio: msg.audio !== false, video: msg.video !== false, screen: msg.screen === true };
        this.#renderRemote();
        break;
      case 'recording':
        if (typeof msg.on === 'boolean') {
          this.#remote = { ...this.#remote, recording: msg.on };
          this.#renderRemote();
          if (msg.on) toast('They started recording this call.');
        }
        break;
      case 'codec':
        if (typeof msg.mimeType === 'string' || msg.mimeType === null) this.call?.setPreferredCodec(msg.mimeType || null);
        break;
      default:
        break;
    }
  }

  /** Records the call in this browser (see recorder.js) and tells the other side. */
  #startRecording() {
    if (this.#recorder || !this.call) return;
    const remoteVideo = /** @type {HTMLVideoElement} */ ($('remote-video'));
    try {
      this.#recorder = new CallRecorder({
        remoteVideo,
        localVideo: /** @type {HTMLVideoElement} */ ($('local-video')),
        remoteStream: remoteVideo.srcObject instanceof MediaStream ? remoteVideo.srcObject : null,
        localAudio: this.#media.outgoing('audio'),
      });
    } catch {
      toast('This browser could not record the call.', { kind: 'error' });
      return;
    }
    this.#sendRecordingState(true);
    setToggle($('record-button'), true, 'Stop recording and save the file');
    toast('Recording. The other person sees that you are.');
  }

  /** Stops a recording, if one runs, and saves the file. */
  #stopRecording() {
    const recorder = this.#recorder;
    if (!recorder) return;
    this.#recorder = null;
    this.#sendRecordingState(false);
    setToggle($('record-button'), false, 'Record the call');
    recorder.stop().then((blob) => {
      if (blob.size) download(blob, this.#room);
    });
  }

  /** @param {boolean} on */
  #sendRecordingState(on) {
    const state = { kind: 'recording', on };
    if (!this.call?.sendData(state) && this.#session.peer) this.#sendSignal(state);
  }

  /** @param {string} text */
  #sendChat(text) {
    return this.call?.sendData({ kind: 'chat', text }) ?? false;
  }

  /** Tells the other side whether our microphone and camera are on. */
  #sendMediaState() {
    if (!this.#session.peer || this.phase === 'ended') return;
    const state = { kind: 'media', ...this.#media.describe() };
    if (this.call?.sendData(state)) return;
    if (this.#ring && this.#ring.state !== 'accepted') return;
    this.#session.send(state);
  }

  // -------------------------------------------------------------------------
  // Local media and controls

  #wireMedia() {
    const signal = this.#abort.signal;
    this.#media.addEventListener(
      'track',
      (e) => {
        const { kind, track } = /** @type {CustomEvent} */ (e).detail;
        this.call?.setTrack(kind, track).catch((err) => console.warn('duet: replaceTrack', err));
      },
      { signal },
    );
    this.#media.addEventListener(
      'change',
      () => {
        this.#renderSelf();
        this.#renderControls();
        this.#sendMediaState();
      },
      { signal },
    );
    this.#media.addEventListener(
      'problem',
      (e) => toast(/** @type {CustomEvent} */ (e).detail.message, { kind: 'error' }),
      { signal },
    );
    navigator.mediaDevices?.addEventListener?.('devicechange', () => this.#refreshDevices(), { signal });
  }

  #wireControls() {
    const signal = this.#abort.signal;
    const click = (/** @type {string} */ id, /** @type {() => void} */ fn) =>
      $(id).addEventListener('click', fn, { signal });

    click('mic-button', () => this.#media.setMicMuted(!this.#media.micMuted));
    click('cam-button', async () => {
      try {
        await this.#media.setCameraOff(!this.#media.cameraOff);
      } catch (err) {
        toast(describeMediaError(err, 'camera'), { kind: 'error' });
      }
    });
    click('screen-button', async () => {
      if (this.#media.sharingScreen) {
        this.#media.stopScreenShare();
        return;
      }
      try {
        await this.#media.startScreenShare();
      } catch (err) {
        if (/** @type {any} */ (err)?.name !== 'NotAllowedError') toast('Could not share your screen.', { kind: 'error' });
      }
    });
    click('record-button', () => (this.#recorder ? this.#stopRecording() : this.#startRecording()));
    $('record-button').hidden = !recordingAvailable();
    click('hangup-button', () => this.hangUp());
    click('sound-button', () => {
      const video = /** @type {HTMLVideoElement} */ ($('remote-video'));
      video.muted = false;
      video.play().catch(() => {});
      $('sound-button').hidden = true;
    });
    click('fullscreen-button', () => {
      if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
      else $('call').requestFullscreen?.().catch(() => toast('Full screen is not available here.'));
    });
    document.addEventListener(
      'fullscreenchange',
      () => {
        const full = document.fullscreenElement !== null;
        setToggle($('fullscreen-button'), full, full ? 'Exit full screen' : 'Full screen');
      },
      { signal },
    );
    $('fullscreen-button').hidden = !document.fullscreenEnabled;
    $('screen-button').hidden = !screenShareAvailable();

    this.#drawers.add('chat', $('chat-panel'), $('chat-button'), signal);
    this.#drawers.add('settings', $('settings-panel'), $('settings-button'), signal);
    this.#drawers.add('stats', $('stats-panel'), $('quality-button'), signal);
    this.#drawers.addEventListener('change', (e) => {
      const open = /** @type {CustomEvent} */ (e).detail.open;
      if (open === 'chat') this.#chat.markRead();
      if (open === 'stats' && this.#stats?.last) renderStats(this.#stats.last, this.#stats.history, true);
      if (open === 'settings') this.#refreshDevices();
    });

    makeMovable($('self'), $('stage'), signal);

    // Settings
    const select = (/** @type {string} */ id) => /** @type {HTMLSelectElement} */ ($(id));
    const change = (/** @type {string} */ id, /** @type {(value: string) => void} */ fn) =>
      select(id).addEventListener('change', () => fn(select(id).value), { signal });
    change('camera-select', async (id) => {
      this.#prefs = savePrefs({ cameraId: id });
      try {
        await this.#media.useCamera(id);
      } catch (err) {
        toast(describeMediaError(err, 'camera'), { kind: 'error' });
      }
    });
    change('microphone-select', async (id) => {
      this.#prefs = savePrefs({ micId: id });
      try {
        await this.#media.useMicrophone(id);
      } catch (err) {
        toast(describeMediaError(err, 'microphone'), { kind: 'error' });
      }
    });
    change('speaker-select', (id) => {
      this.#prefs = savePrefs({ speakerId: id });
      this.#applySpeaker();
    });
    change('preset-select', (preset) => {
      this.#prefs = savePrefs({ preset });
      this.call?.setVideoLimits({ preset });
    });
    change('bitrate-select', (value) => {
      const maxBitrate = Number(value) || 0;
      this.#prefs = savePrefs({ maxBitrate });
      this.call?.setVideoLimits({ maxBitrate });
    });
    change('codec-select', (codec) => {
      this.#prefs = savePrefs({ codec });
      const call = this.call;
      if (!call) return;
      call.setPreferredCodec(codec || null);
      call.sendData({ kind: 'codec', mimeType: codec || null });
      call.renegotiate();
    });
    const check = (/** @type {string} */ id, /** @type {(on: boolean) => void} */ fn) => {
      const box = /** @type {HTMLInputElement} */ ($(id));
      box.addEventListener('change', () => fn(box.checked), { signal });
    };
    check('mirror-option', (mirror) => {
      this.#prefs = savePrefs({ mirror });
      this.#renderSelf();
    });
    check('hide-self-option', (hideSelf) => {
      this.#prefs = savePrefs({ hideSelf });
      this.#renderSelf();
    });
    select('preset-select').value = this.#prefs.preset;
    select('bitrate-select').value = String(this.#prefs.maxBitrate);
    fillSelect(
      select('codec-select'),
      [{ value: '', label: 'Automatic' }, ...videoCodecChoices().map((m) => ({ value: m, label: m.split('/')[1] ?? m }))],
      this.#prefs.codec,
    );
    /** @type {HTMLInputElement} */ ($('mirror-option')).checked = this.#prefs.mirror;
    /** @type {HTMLInputElement} */ ($('hide-self-option')).checked = this.#prefs.hideSelf;
    $('speaker-field').hidden = !('setSinkId' in HTMLMediaElement.prototype);
  }

  async #refreshDevices() {
    if (this.phase === 'ended') return;
    const list = await LocalMedia.devices();
    const options = (/** @type {import('./media.js').DeviceChoice[]} */ devices) =>
      devices.map((d) => ({ value: d.deviceId, label: d.label }));
    fillSelect(/** @type {HTMLSelectElement} */ ($('camera-select')), options(list.videoinput), this.#media.cameraId);
    fillSelect(/** @type {HTMLSelectElement} */ ($('microphone-select')), options(list.audioinput), this.#media.micId);
    fillSelect(/** @type {HTMLSelectElement} */ ($('speaker-select')), options(list.audiooutput), this.#prefs.speakerId);
  }

  #applySpeaker() {
    const video = /** @type {any} */ ($('remote-video'));
    if (this.#prefs.speakerId && typeof video.setSinkId === 'function') {
      video.setSinkId(this.#prefs.speakerId).catch(() => toast('Could not use that speaker.', { kind: 'error' }));
    }
  }

  #attachSelfView() {
    const video = /** @type {HTMLVideoElement} */ ($('local-video'));
    video.srcObject = this.#media.preview;
    video.play().catch(() => {});
  }

  // -------------------------------------------------------------------------
  // Ending

  /** @param {EndReason} reason */
  #end(reason) {
    if (this.phase === 'ended') return;
    this.endReason = reason;
    this.#dropCall();
    this.#media.release();
    this.#session.leave();
    this.#drawers.close({ restoreFocus: false });
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    /** @type {HTMLVideoElement} */ ($('local-video')).srcObject = null;
    this.#setPhase('ended');
  }

  #rejoin() {
    try {
      sessionStorage.setItem(`duet.autojoin.${this.#room}`, '1');
    } catch {
      // without storage the lobby shows and Join is one more click
    }
    location.reload();
  }

  // -------------------------------------------------------------------------
  // Rendering

  /** @param {Phase} phase */
  #setPhase(phase) {
    const before = this.phase;
    this.phase = phase;
    if (phase === 'connecting' && before !== 'connecting') {
      this.#connectingSince = performance.now();
      clearTimeout(this.#slowTimer);
      this.#slowTimer = window.setTimeout(() => this.#render(), SLOW_CONNECT_MS);
    }
    this.#render();
  }

  #render() {
    const phase = this.phase;
    const callEl = $('call');
    callEl.dataset.phase = phase;
    const inCall = phase === 'connected' || phase === 'reconnecting';
    $('stage').dataset.layout = inCall ? 'duo' : 'solo';
    $('controls').hidden = phase === 'ended' || phase === 'ringing';

    const ring = this.#ringMode;
    const rejoin = { label: 'Rejoin', style: /** @type {const} */ ('primary'), run: () => this.#rejoin() };
    const callAgain = { label: 'Call again', style: /** @type {const} */ ('primary'), run: () => this.#rejoin() };
    const home = { label: 'Back to start', style: /** @type {const} */ ('secondary'), run: () => location.assign('/') };

    switch (phase) {
      case 'joining':
        setStatus('Joining…');
        setOverlay({ title: 'Joining…', visual: 'spin', icon: 'i-user' });
        break;
      case 'waiting':
        setStatus(ring ? 'Waiting for a call' : 'Waiting for the other person');
        setOverlay({
          title: ring ? 'Waiting for a call' : 'Waiting for the other person',
          text: ring
            ? 'Send them this link. When they open it and join, it rings here and you answer.'
            : 'Send them this link. The call starts as soon as they join.',
          visual: 'pulse',
          icon: 'i-user',
          share: true,
        });
        break;
      case 'calling':
        setStatus('Calling…');
        setOverlay({
          title: 'Calling…',
          text: 'It is ringing on their side.',
          visual: 'ring',
          icon: 'i-call',
          actions: [{ label: 'Cancel', style: 'decline', icon: 'i-phone', run: () => this.#ring?.cancel() }],
        });
        break;
      case 'ringing':
        setStatus('Incoming call');
        setOverlay({
          title: 'Incoming call',
          text: `Someone is calling you in room ${this.#room}.`,
          visual: 'ring',
          icon: 'i-call',
          focus: true,
          actions: [
            { label: 'Decline', style: 'decline', icon: 'i-phone', run: () => this.#ring?.decline() },
            { label: 'Accept', style: 'accept', icon: 'i-call', run: () => this.#ring?.accept() },
          ],
        });
        break;
      case 'connecting': {
        setStatus('Connecting…');
        const slow = performance.now() - this.#connectingSince >= SLOW_CONNECT_MS;
        setOverlay({
          title: 'Connecting…',
          text: slow
            ? 'This is taking longer than usual. A firewall may block the way between you; the connection check finds out what your network lets through.'
            : 'Setting up a private connection between the two of you.',
          visual: 'spin',
          icon: 'i-user',
          // Opens in a new tab: the call keeps trying meanwhile.
          actions: slow ? [{ label: 'Check my connection', style: 'secondary', run: () => window.open('/check', '_blank', 'noopener') }] : [],
        });
        break;
      }
      case 'connected':
        setStatus('Connected', 'success');
        setOverlay(null);
        break;
      case 'reconnecting':
        setStatus('Reconnecting…', 'warning');
        setOverlay(null);
        break;
      case 'ended': {
        const ended = {
          hangup: { title: 'Call ended', text: 'You left the call. Your camera and microphone are off.', actions: [rejoin, home] },
          left: { title: 'They left the call', text: 'The call is over. Your camera and microphone are off.', actions: [rejoin, home] },
          declined: { title: 'Call declined', text: 'They cannot talk right now.', actions: [callAgain, home] },
          cancelled: { title: 'Call cancelled', text: 'You stopped calling.', actions: [callAgain, home] },
          'no-answer': { title: 'No answer', text: 'Nobody picked up. Try again later.', actions: [callAgain, home] },
          replaced: { title: 'The call went on in another tab', text: 'This tab has left the call.', actions: [{ ...rejoin, label: 'Use this tab' }, home] },
        }[this.endReason ?? 'hangup'];
        setStatus(ended.title);
        setOverlay({ ...ended, visual: 'still', icon: this.endReason === 'left' || this.endReason === 'hangup' ? 'i-phone' : 'i-alert', focus: true });
        break;
      }
      default:
        break;
    }
    this.#renderBanner();
    this.#renderRemote();
    this.#renderSelf();
    this.#renderControls();
    this.#tick();
  }

  #renderBanner() {
    const banner = $('banner');
    const signalingDown = this.#session.state === 'reconnecting';
    if (this.phase === 'ended') {
      banner.hidden = true;
    } else if (this.phase === 'reconnecting') {
      banner.hidden = false;
      $('banner-text').textContent = 'Reconnecting… the picture may freeze for a moment.';
    } else if (signalingDown) {
      banner.hidden = false;
      $('banner-text').textContent = this.phase === 'connected' ? 'Reconnecting to the server… your call goes on.' : 'Reconnecting to the server…';
    } else {
      banner.hidden = true;
    }
  }

  #renderRemote() {
    const inCall = this.phase === 'connected' || this.phase === 'reconnecting';
    const video = /** @type {HTMLVideoElement} */ ($('remote-video'));
    const stream = video.srcObject instanceof MediaStream ? video.srcObject : null;
    const hasVideo = (stream?.getVideoTracks().length ?? 0) > 0;
    $('remote-off').hidden = !inCall || (this.#remote.video && hasVideo);
    $('remote-muted').hidden = !inCall || this.#remote.audio;
    $('remote-screen').hidden = !inCall || !this.#remote.screen;
    $('remote-recording').hidden = !inCall || !this.#remote.recording;
    $('stage').dataset.remote = this.#remote.screen ? 'screen' : 'camera';
  }

  #renderSelf() {
    const media = this.#media;
    const sending = media.outgoing('video') !== null;
    $('self-off').hidden = sending;
    $('self-muted').hidden = !media.hasMic || !media.micMuted;
    const self = $('self');
    self.dataset.mirror = String(this.#prefs.mirror && !media.sharingScreen);
    self.hidden = this.phase === 'ended' || (this.#prefs.hideSelf && this.phase !== 'waiting' && this.phase !== 'joining');
  }

  #renderControls() {
    const media = this.#media;
    const mic = $('mic-button');
    const micLabel = !media.hasMic ? 'No microphone' : media.micMuted ? 'Turn on microphone' : 'Turn off microphone';
    setToggle(mic, media.micMuted || !media.hasMic, micLabel);
    /** @type {HTMLButtonElement} */ (mic).disabled = !media.hasMic;
    setToggle($('cam-button'), media.cameraOff, media.cameraOff ? 'Turn on camera' : 'Turn off camera');
    setToggle($('screen-button'), media.sharingScreen, media.sharingScreen ? 'Stop sharing your screen' : 'Share your screen');
  }

  /** The verification code of the connection now (a new one on every new connection). */
  async #showVerificationCode() {
    const pc = this.call?.pc;
    const code = pc ? await verificationCode(pc.localDescription?.sdp, pc.remoteDescription?.sdp) : null;
    if (this.call?.pc !== pc || this.phase === 'ended') return;
    this.verificationCode = code;
    const element = $('verify');
    element.hidden = !code;
    $('verify-code').textContent = code ?? '';
    element.setAttribute('aria-label', code ? `Verification code ${code.split('').join(' ')}` : '');
  }

  #tick() {
    const timer = $('call-timer');
    const connectedAt = this.marks.connected;
    if (connectedAt && (this.phase === 'connected' || this.phase === 'reconnecting')) {
      timer.textContent = formatDuration(now() - connectedAt);
    } else {
      timer.textContent = '';
    }
  }
}
