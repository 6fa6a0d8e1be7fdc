// Choices worth remembering between calls (this browser only, localStorage).

/**
 * @typedef {object} Prefs
 * @property {string | null} cameraId
 * @property {string | null} micId
 * @property {string | null} speakerId
 * @property {string} preset      a key of VIDEO_PRESETS
 * @property {number} maxBitrate  bit/s, 0 for automatic
 * @property {string} codec       a video MIME type, '' for automatic
 * @property {boolean} mirror     mirror the self view
 * @property {boolean} hideSelf   hide the self view during a call
 */

const KEY = 'duet.prefs';

/** @type {Prefs} */
const DEFAULTS = {
  cameraId: null,
  micId: null,
  speakerId: null,
  preset: 'auto',
  maxBitrate: 0,
  codec: '',
  mirror: true,
  hideSelf: false,
};

/** @returns {Prefs} */
export function loadPrefs() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? '{}');
    /** @type {Record<string, unknown>} */
    const prefs = { ...DEFAULTS };
    for (const [key, value] of Object.entries(saved ?? {})) {
      if (key in DEFAULTS && (typeof value === typeof /** @type {any} */ (DEFAULTS)[key] || /** @type {any} */ (DEFAULTS)[key] === null)) {
        prefs[key] = value;
      }
    }
    return /** @type {Prefs} */ (prefs);
  } catch {
    return { ...DEFAULTS };
  }
}

/** @param {Partial<Prefs>} changes */
export function savePrefs(changes) {
  const prefs = { ...loadPrefs(), ...changes };
  try {
    localStorage.setItem(KEY, JSON.stringify(prefs));
  } catch {
    // storage blocked: the choice lasts for this page only
  }
  return prefs;
}
