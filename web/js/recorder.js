// Local recording of a call: both videos side by side on a canvas and both
// voices mixed, into one WebM file that is downloaded in this browser. Nothing
// goes to the server; the other side is told (room.js) while it lasts.

const WIDTH = 1280;
const HEIGHT = 480;
const FPS = 25;

/** The best WebM type this browser records. */
function mimeType() {
  for (const type of ['video/webm;codecs=vp8,opus', 'video/webm;codecs=vp9,opus', 'video/webm']) {
    if (window.MediaRecorder?.isTypeSupported(type)) return type;
  }
  return '';
}

/** True when this browser can record a call. */
export function recordingAvailable() {
  return typeof window.MediaRecorder === 'function' && typeof HTMLCanvasElement.prototype.captureStream === 'function' && mimeType() !== '';
}

/** Draws `video` into the box (x, y, w, h), keeping its shape; nothing if it shows no frame. */
function drawFitted(context, video, x, y, w, h) {
  if (!video || video.readyState < 2 || !video.videoWidth) return;
  const scale = Math.min(w / video.videoWidth, h / video.videoHeight);
  const dw = video.videoWidth * scale;
  const dh = video.videoHeight * scale;
  context.drawImage(video, x + (w - dw) / 2, y + (h - dh) / 2, dw, dh);
}

export class CallRecorder {
  #recorder;
  #chunks = [];
  #timer = 0;
  #audio;
  #done;
  startedAt = 0;

  /**
   * Starts recording at once.
   * @param {{ remoteVideo: HTMLVideoElement, localVideo: HTMLVideoElement,
   *           remoteStream: MediaStream | null, localAudio: MediaStreamTrack | null }} sources
   */
  constructor({ remoteVideo, localVideo, remoteStream, localAudio }) {
    const canvas = document.createElement('canvas');
    canvas.width = WIDTH;
    canvas.height = HEIGHT;
    const context = /** @type {CanvasRenderingContext2D} */ (canvas.getContext('2d'));
    const draw = () => {
      context.fillStyle = '#111318';
      context.fillRect(0, 0, WIDTH, HEIGHT);
      drawFitted(context, remoteVideo, 0, 0, WIDTH / 2, HEIGHT);
      drawFitted(context, localVideo, WIDTH / 2, 0, WIDTH / 2, HEIGHT);
    };
    draw();
    // A timer, not requestAnimationFrame: the recording goes on in a hidden tab.
    this.#timer = window.setInterval(draw, 1000 / FPS);
    const stream = canvas.captureStream(FPS);

    // Both voices, mixed.
    this.#audio = new AudioContext();
    const mix = this.#audio.createMediaStreamDestination();
    const remoteAudio = remoteStream?.getAudioTracks() ?? [];
    if (remoteAudio.length) this.#audio.createMediaStreamSource(new MediaStream(remoteAudio)).connect(mix);
    if (localAudio) this.#audio.createMediaStreamSource(new MediaStream([localAudio])).connect(mix);
    for (const track of mix.stream.getAudioTracks()) stream.addTrack(track);

    this.#recorder = new MediaRecorder(stream, { mimeType: mimeType() });
    this.#done = new Promise((resolve) => {
      this.#recorder.addEventListener('stop', () => resolve(new Blob(this.#chunks, { type: 'video/webm' })));
    });
    this.#recorder.addEventListener('dataavailable', (event) => {
      if (event.data.size) this.#chunks.push(event.data);
    });
    this.#recorder.start(1000);
    this.startedAt = Date.now();
  }

  /** Stops and returns the file's contents. */
  async stop() {
    window.clearInterval(this.#timer);
    if (this.#recorder.state !== 'inactive') this.#recorder.stop();
    const blob = await this.#done;
    this.#audio.close().catch(() => {});
    return blob;
  }
}

/** Offers `blob` as a download named after the room and the time. */
export function download(blob, room) {
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-');
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = `duet-${room}-${stamp}.webm`;
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}
