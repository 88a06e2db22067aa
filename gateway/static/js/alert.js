// Audible and visual alert for new incidents. The beep is generated with
// WebAudio, so no sound file is needed. The mute choice is kept in
// localStorage, so it survives reloads.

const MUTE_KEY = "sitlab.dispatcher.muted";
let audio = null;

/** Return true when the user muted the alert sound. */
export function isMuted() {
  return localStorage.getItem(MUTE_KEY) === "1";
}

function showMute(button) {
  const muted = isMuted();
  button.setAttribute("aria-pressed", String(muted));
  button.textContent = muted ? "✕ Sound muted" : "♪ Sound on";
}

/** Flip the mute setting and update the button. */
export function toggleMute(button) {
  localStorage.setItem(MUTE_KEY, isMuted() ? "0" : "1");
  showMute(button);
}

/** Prepare the mute button. Call it from a user gesture, so audio may start. */
export function setupAlert(button) {
  showMute(button);
  button.addEventListener("click", () => toggleMute(button));
  unlockAudio();
}

/** Create or resume the AudioContext, which browsers allow only after a gesture. */
export function unlockAudio() {
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return;
  audio = audio || new Context();
  if (audio.state === "suspended") audio.resume().catch(() => {});
}

function beep() {
  if (!audio || isMuted()) return false;
  // Two short 880 Hz tones, chosen to stand out from office sounds and to
  // be short enough to repeat for every new incident.
  const start = audio.currentTime;
  for (const offset of [0, 0.25]) {
    const oscillator = audio.createOscillator();
    const gain = audio.createGain();
    oscillator.type = "square";
    oscillator.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.2, start + offset + 0.01);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.18);
    oscillator.connect(gain).connect(audio.destination);
    oscillator.start(start + offset);
    oscillator.stop(start + offset + 0.2);
  }
  return true;
}

/** Show the alert banner for a new incident and beep unless muted. */
export function raiseAlert(text) {
  const banner = document.getElementById("alert");
  document.getElementById("alert-text").textContent = text;
  banner.hidden = false;
  banner.classList.remove("flash");
  void banner.offsetWidth; // restart the CSS animation
  banner.classList.add("flash");
  if (beep()) banner.dataset.beeps = String(Number(banner.dataset.beeps) + 1);
  banner.dataset.alerts = String(Number(banner.dataset.alerts || 0) + 1);
}

/** Hide the alert banner. */
export function dismissAlert() {
  document.getElementById("alert").hidden = true;
}
