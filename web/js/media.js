// The local side of a call: camera, microphone and screen.
//
// LocalMedia owns every local track. It decides which track each sender carries
// (`outgoing(kind)`) and announces a change with a 'track' event; the call swaps it
// in with RTCRtpSender.replaceTrack, so changing devices never renegotiates.
//
//   const media = new LocalMedia();
//   const outcome = await media.start();        // { audio, video, problem }
//   media.addEventListener('track', (e) => sender.replaceTrack(e.detail.track));
//   await media.useCamera(deviceId);
//   media.setMicMuted(true);

/**
 * @typedef {'audio' | 'video'} Kind
 * @typedef {{ audio: boolean, video: boolean, problem: string | null }} StartOutcome
 * @typedef {{ deviceId: string, label: string }} DeviceChoice
 * @typedef {{ audioinput: DeviceChoice[], videoinput: DeviceChoice[], audiooutput: DeviceChoice[] }} DeviceList
 */

/** What we ask a camera for: a sharp 720p picture, but anything will do. */
const CAMERA_CONSTRAINTS = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
const MIC_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };

/** True when this page may use the camera and microphone at all. */
export function mediaAvailable() {
  return window.isSecureContext && Boolean(navigator.mediaDevices?.getUserMedia);
}

/** True when the browser can share a screen (not on phones). */
export function screenShareAvailable() {
  return Boolean(navigator.mediaDevices && 'getDisplayMedia' in navigator.mediaDevices);
}

/**
 * A sentence for the person, from a getUserMedia failure.
 * @param {unknown} err
 * @param {'camera' | 'microphone' | 'camera and microphone'} what
 */
export function describeMediaError(err, what = 'camera and microphone') {
  const name = err instanceof Error || (typeof err === 'object' && err !== null) ? /** @type {any} */ (err).name : '';
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return `Duet may not use your ${what}. Allow access in the address bar (the camera icon), then try again.`;
    case 'NotFoundError':
    case 'OverconstrainedError':
      return `No ${what} found. Plug one in, or join without it.`;
    case 'NotReadableError':
    case 'AbortError':
      return `Your ${what} is busy or failed to start. Close other apps that use it, then try again.`;
    default:
      return `Could not start your ${what}${name ? ` (${name})` : ''}.`;
  }
}

/** The message for a page opened over plain HTTP (or with media blocked altogether). */
export const INSECURE_CONTEXT_MESSAGE =
  'This page is not secure (no HTTPS), so the browser keeps the camera and microphone off. ' +
  'You can still see and hear the other person. Open the https:// address to talk.';

/**
 * @param {Kind} kind
 * @param {string | null} deviceId
 * @returns {MediaTrackConstraints}
 */
function constraintsFor(kind, deviceId) {
  const base = kind === 'video' ? CAMERA_CONSTRAINTS : MIC_CONSTRAINTS;
  return deviceId ? { ...base, deviceId: { exact: deviceId } } : { ...base };
}

export class LocalMedia extends EventTarget {
  /** @type {MediaStreamTrack | null} */
  #mic = null;
  /** @type {MediaStreamTrack | null} */
  #camera = null;
  /** @type {MediaStreamTrack | null} */
  #screen = null;
  #micMuted = false;
  #cameraOff = false;
  /** The camera and microphone in use (or wanted), by deviceId. */
  /** @type {string | null} */
  #cameraId = null;
  /** @type {string | null} */
  #micId = null;
  /** The stream shown as the self view: the microphone and what the video sender carries. */
  #preview = new MediaStream();
  /** @type {Promise<StartOutcome> | null} */
  #starting = null;
  #released = false;
  /** Every track ever opened here, live or stopped (for diagnostics). */
  /** @type {Set<MediaStreamTrack>} */
  #opened = new Set();

  /**
   * @param {{ cameraId?: string | null, micId?: string | null }} [preferred]
   */
  constructor({ cameraId = null, micId = null } = {}) {
    super();
    this.#cameraId = cameraId;
    this.#micId = micId;
  }

  /** The self-view stream; its tracks change as devices do. */
  get preview() {
    return this.#preview;
  }

  get micMuted() {
    return this.#micMuted;
  }

  get cameraOff() {
    return this.#cameraOff;
  }

  get sharingScreen() {
    return this.#screen !== null;
  }

  get hasMic() {
    return this.#mic !== null;
  }

  get hasCamera() {
    return this.#camera !== null;
  }

  get cameraId() {
    return this.#camera?.getSettings().deviceId ?? this.#cameraId;
  }

  get micId() {
    return this.#mic?.getSettings().deviceId ?? this.#micId;
  }

  /** Every live local track (for releasing them). */
  tracks() {
    return [this.#mic, this.#camera, this.#screen].filter((t) => t !== null);
  }

  /** Every track this object ever opened, including stopped ones (for diagnostics). */
  everyTrack() {
    return [...this.#opened];
  }

  /**
   * The track the sender of `kind` should carry now (null: send nothing).
   * @param {Kind} kind
   */
  outgoing(kind) {
    if (kind === 'audio') return this.#mic;
    if (this.#screen) return this.#screen;
    return this.#cameraOff ? null : this.#camera;
  }

  /** What the other side should be told about our media. */
  describe() {
    return {
      audio: this.#mic !== null && !this.#micMuted,
      video: this.outgoing('video') !== null,
      screen: this.#screen !== null,
    };
  }

  /**
   * Opens the camera and microphone, falling back to whatever works: both, the
   * microphone only, the camera only, or nothing (receive only). Calling it again
   * returns the first outcome.
   * @returns {Promise<StartOutcome>}
   */
  start() {
    this.#starting ??= this.#start();
    return this.#starting;
  }

  /** @returns {Promise<StartOutcome>} */
  async #start() {
    if (!mediaAvailable()) {
      this.#cameraOff = true;
      return { audio: false, video: false, problem: INSECURE_CONTEXT_MESSAGE };
    }
    /** @type {unknown} */
    let firstError = null;
    const attempts = /** @type {const} */ ([
      [true, true],
      [true, false],
      [false, true],
    ]);
    for (const [audio, video] of attempts) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia({
          audio: audio ? constraintsFor('audio', this.#micId) : false,
          video: video ? constraintsFor('video', this.#cameraId) : false,
        });
        if (this.#released) {
          for (const t of stream.getTracks()) t.stop();
          return { audio: false, video: false, problem: null };
        }
        this.#adopt('audio', stream.getAudioTracks()[0] ?? null);
        this.#adopt('video', stream.getVideoTracks()[0] ?? null);
        // Without a camera the camera button offers to try again ("turn on").
        if (this.#camera === null) this.#cameraOff = true;
        let problem = null;
        if (!audio || !video) {
          problem = !video
            ? `${describeMediaError(firstError, 'camera')} You join with sound only.`
            : `${describeMediaError(firstError, 'microphone')} You join without sound.`;
        }
        return { audio: this.#mic !== null, video: this.#camera !== null, problem };
      } catch (err) {
        firstError ??= err;
        // A saved device that is gone: try again with any device.
        if (/** @type {any} */ (err)?.name === 'OverconstrainedError' && (this.#cameraId || this.#micId)) {
          this.#cameraId = null;
          this.#micId = null;
          try {
            return await this.#retryAnyDevice();
          } catch {
            // keep falling back
          }
        }
        if (/** @type {any} */ (err)?.name === 'NotAllowedError') break; // asking again will not help
      }
    }
    this.#cameraOff = true;
    this.#emit('change', null);
    return {
      audio: false,
      video: false,
      problem: `${describeMediaError(firstError)} You can still see and hear the other person.`,
    };
  }

  async #retryAnyDevice() {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: constraintsFor('audio', null),
      video: constraintsFor('video', null),
    });
    this.#adopt('audio', stream.getAudioTracks()[0] ?? null);
    this.#adopt('video', stream.getVideoTracks()[0] ?? null);
    return { audio: true, video: true, problem: null };
  }

  /**
   * Makes `track` the microphone (audio) or camera (video), stopping the one before.
   * @param {Kind} kind
   * @param {MediaStreamTrack | null} track
   */
  #adopt(kind, track) {
    const old = kind === 'audio' ? this.#mic : this.#camera;
    if (old === track) return;
    if (kind === 'audio') {
      this.#mic = track;
      if (track) track.enabled = !this.#micMuted;
    } else {
      this.#camera = track;
    }
    if (old) old.stop();
    if (track) {
      this.#opened.add(track);
      track.addEventListener('ended', () => this.#onTrackEnded(kind, track));
    }
    this.#refresh(kind);
  }

  /**
   * A device was unplugged or revoked.
   * @param {Kind} kind
   * @param {MediaStreamTrack} track
   */
  #onTrackEnded(kind, track) {
    if (this.#released) return;
    if (kind === 'audio' && this.#mic === track) {
      this.#mic = null;
      this.#refresh('audio');
      this.#emit('problem', { message: 'Your microphone stopped. Choose another one in the settings.' });
    } else if (kind === 'video' && this.#camera === track) {
      this.#camera = null;
      this.#refresh('video');
      this.#emit('problem', { message: 'Your camera stopped. Choose another one in the settings.' });
    }
  }

  /**
   * Tells listeners the outgoing track of `kind` may have changed, and updates the self view.
   * @param {Kind} kind
   */
  #refresh(kind) {
    const track = this.outgoing(kind);
    const shown = kind === 'audio' ? this.#preview.getAudioTracks() : this.#preview.getVideoTracks();
    for (const t of shown) if (t !== track) this.#preview.removeTrack(t);
    if (track && !shown.includes(track)) this.#preview.addTrack(track);
    this.#emit('track', { kind, track });
    this.#emit('change', null);
  }

  /**
   * Switches to another camera. The new one opens before the old one stops when the
   * hardware allows it, so the other side sees no gap.
   * @param {string} deviceId
   */
  async useCamera(deviceId) {
    this.#cameraId = deviceId;
    if (this.#cameraOff) {
      this.#emit('change', null);
      return; // used when the camera is turned back on
    }
    const track = await this.#open('video', deviceId);
    this.#adopt('video', track);
  }

  /** @param {string} deviceId */
  async useMicrophone(deviceId) {
    this.#micId = deviceId;
    const track = await this.#open('audio', deviceId);
    this.#adopt('audio', track);
  }

  /**
   * @param {Kind} kind
   * @param {string | null} deviceId
   */
  async #open(kind, deviceId) {
    const ask = () =>
      navigator.mediaDevices.getUserMedia({ [kind]: constraintsFor(kind, deviceId) }).then((s) => {
        const track = kind === 'audio' ? s.getAudioTracks()[0] : s.getVideoTracks()[0];
        if (!track) throw new DOMException('no track', 'NotFoundError');
        return track;
      });
    try {
      return await ask();
    } catch (err) {
      // Some cameras cannot be opened twice: free the old one and try once more.
      const old = kind === 'audio' ? this.#mic : this.#camera;
      if (old && /** @type {any} */ (err)?.name === 'NotReadableError') {
        old.stop();
        return ask();
      }
      throw err;
    }
  }

  /** @param {boolean} muted */
  setMicMuted(muted) {
    this.#micMuted = muted;
    if (this.#mic) this.#mic.enabled = !muted;
    this.#emit('change', null);
  }

  /**
   * Turns the camera off (it is released, its light goes out) or back on.
   * @param {boolean} off
   */
  async setCameraOff(off) {
    if (off === this.#cameraOff) return;
    this.#cameraOff = off;
    if (off) {
      const old = this.#camera;
      this.#camera = null;
      old?.stop();
      this.#refresh('video');
      return;
    }
    try {
      const track = await this.#open('video', this.#cameraId);
      if (this.#cameraOff || this.#released) {
        track.stop();
        return;
      }
      this.#adopt('video', track);
    } catch (err) {
      this.#cameraOff = true;
      this.#emit('change', null);
      throw err;
    }
  }

  /** Shares a screen or window in place of the camera until `stopScreenShare`. */
  async startScreenShare() {
    if (this.#screen) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } }, audio: false });
    const track = stream.getVideoTracks()[0];
    if (!track) return;
    if (this.#released) {
      track.stop();
      return;
    }
    track.contentHint = 'detail';
    this.#screen = track;
    this.#opened.add(track);
    // The browser's own "Stop sharing" button ends the track.
    track.addEventListener('ended', () => {
      if (this.#screen === track) this.stopScreenShare();
    });
    this.#refresh('video');
  }

  stopScreenShare() {
    const track = this.#screen;
    if (!track) return;
    this.#screen = null;
    track.stop();
    this.#refresh('video');
  }

  /** Stops every track: the camera light goes out and the microphone is free. */
  release() {
    this.#released = true;
    for (const track of this.tracks()) track.stop();
    this.#mic = null;
    this.#camera = null;
    this.#screen = null;
    for (const t of this.#preview.getTracks()) this.#preview.removeTrack(t);
    this.#emit('change', null);
  }

  /**
   * The devices the browser offers (labels appear once access is granted).
   * @returns {Promise<DeviceList>}
   */
  static async devices() {
    /** @type {DeviceList} */
    const list = { audioinput: [], videoinput: [], audiooutput: [] };
    if (!navigator.mediaDevices?.enumerateDevices) return list;
    const all = await navigator.mediaDevices.enumerateDevices();
    for (const d of all) {
      if (!(d.kind in list) || !d.deviceId) continue;
      const group = list[/** @type {keyof DeviceList} */ (d.kind)];
      const fallback = { audioinput: 'Microphone', videoinput: 'Camera', audiooutput: 'Speaker' }[d.kind];
      group.push({ deviceId: d.deviceId, label: d.label || `${fallback} ${group.length + 1}` });
    }
    return list;
  }

  /**
   * @param {string} type
   * @param {unknown} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
