// vampstudy listen: the rater's page. Plain JS, Web Audio API, no external assets.
// One AudioContext; every stimulus of a trial is a looping buffer source started at the same
// time, each through its own gain: switching fades the old one out and the new one in (5 ms
// raised-cosine ramps, no cross-fade) and keeps the playhead (no restart).
"use strict";

const FADE_S = 0.005;
const MIN_LOOP_S = 0.5;
const LABELS = [[80, "Excellent"], [60, "Good"], [40, "Fair"], [20, "Poor"], [0, "Bad"]];
const $ = (id) => document.getElementById(id);

const state = {
  rater: null, trial: null, ctx: null, buffers: {}, sources: {}, gains: {},
  startedAt: null, offset: 0, loop: [0, 0], active: null, activeSince: 0,
  played: {}, moved: {}, scores: {}, plays: {}, listenMs: {}, trialStart: 0, busy: false,
};
// read by the browser tests (timing and sync only; the server keeps what each letter is)
window.vampListen = state;

function labelOf(score) {
  for (const [min, name] of LABELS) if (score >= min) return name;
  return "Bad";
}

function context() {
  if (!state.ctx) state.ctx = new AudioContext();
  if (state.ctx.state !== "running") state.ctx.resume();
  return state.ctx;
}

function fadeCurve(up) {
  const n = 64, curve = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const c = 0.5 - 0.5 * Math.cos(Math.PI * i / (n - 1));   // raised cosine 0 → 1
    curve[i] = up ? c : 1 - c;
  }
  return curve;
}

// ------------------------------------------------------------------ playback
function playhead() {
  if (state.startedAt === null) return state.offset;
  const [a, b] = state.loop;
  const pos = state.offset + (state.ctx.currentTime - state.startedAt);
  return pos < b ? pos : a + ((pos - a) % (b - a));
}
state.playhead = playhead;

function startAll(fromS) {
  const ctx = context();
  stopSources();
  const when = ctx.currentTime + 0.03;
  for (const [key, buffer] of Object.entries(state.buffers)) {
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.loop = true;
    src.loopStart = state.loop[0];
    src.loopEnd = state.loop[1];
    const gain = ctx.createGain();
    gain.gain.value = 0;
    src.connect(gain).connect(ctx.destination);
    src.start(when, fromS);
    state.sources[key] = src;
    state.gains[key] = gain;
  }
  state.startedAt = when;
  state.offset = fromS;
  state.sourceStarts = Object.fromEntries(Object.keys(state.buffers).map((k) => [k, when]));
}

function stopSources() {
  for (const src of Object.values(state.sources)) { try { src.stop(); } catch (e) { /* done */ } }
  state.sources = {};
  state.gains = {};
  state.startedAt = null;
}

function account(now) {
  if (state.active && state.active !== "reference") {
    state.listenMs[state.active] = (state.listenMs[state.active] || 0) + (now - state.activeSince);
  }
  state.activeSince = now;
}

function play(key) {
  if (!state.buffers[key]) return;
  const ctx = context();
  if (state.startedAt === null) startAll(state.loop[0]);
  const t = Math.max(ctx.currentTime, state.startedAt);
  if (state.active && state.active !== key && state.gains[state.active]) {
    state.gains[state.active].gain.cancelScheduledValues(t);
    state.gains[state.active].gain.setValueCurveAtTime(fadeCurve(false), t, FADE_S);
  }
  if (state.active !== key) {
    state.gains[key].gain.cancelScheduledValues(t);
    state.gains[key].gain.setValueCurveAtTime(fadeCurve(true), t + FADE_S, FADE_S);
  }
  account(performance.now());
  state.active = key;
  if (key !== "reference") {
    state.played[key] = true;
    state.plays[key] = (state.plays[key] || 0) + 1;
    const slider = document.querySelector(`input[data-label="${key}"]`);
    if (slider) slider.disabled = false;
    for (const r of document.querySelectorAll(`input[data-choice="${key}"]`)) r.disabled = false;
  }
  showActive();
  saveDraft();
  gate();
}

function stop() {
  if (state.startedAt === null) return;
  const ctx = state.ctx, t = ctx.currentTime;
  if (state.active && state.gains[state.active]) {
    state.gains[state.active].gain.cancelScheduledValues(t);
    state.gains[state.active].gain.setValueCurveAtTime(fadeCurve(false), t, FADE_S);
  }
  account(performance.now());
  state.offset = playhead();
  const sources = state.sources;
  state.sources = {}; state.gains = {}; state.startedAt = null; state.active = null;
  setTimeout(() => { for (const s of Object.values(sources)) { try { s.stop(); } catch (e) { /* */ } } }, 20);
  showActive();
}

function setLoop() {
  const a = parseFloat($("loop-start").value), b = parseFloat($("loop-end").value);
  const duration = Object.values(state.buffers)[0].duration;
  if (!(b - a >= MIN_LOOP_S) || a < 0 || b > duration + 1e-6) {
    $("loop-message").textContent = `The loop must be at least ${MIN_LOOP_S} s, within 0–${duration.toFixed(1)} s.`;
    return;
  }
  $("loop-message").textContent = "";
  const wasActive = state.active;
  state.loop = [a, b];
  if (state.startedAt !== null) {
    const pos = Math.min(Math.max(playhead(), a), b - 0.01);
    stop();
    startAll(pos);
    if (wasActive) play(wasActive);
  } else {
    state.offset = a;
  }
}

function showActive() {
  for (const b of document.querySelectorAll("button[data-play]")) {
    b.classList.toggle("active", b.dataset.play === state.active);
    b.setAttribute("aria-pressed", String(b.dataset.play === state.active));
  }
  $("now-playing").textContent = state.active
    ? (state.active === "reference" ? "Playing: reference" : `Playing: ${state.active}`) : "Stopped";
}

// ------------------------------------------------------------------ trials
function gate() {
  const labels = state.trial ? state.trial.stimuli.map((s) => s.label) : [];
  const ready = labels.length > 0 && labels.every((l) => state.played[l] && state.moved[l]);
  $("next").disabled = !ready || state.busy;
}

function draftKey() { return `vampstudy.draft.${state.rater}.${state.trial.trial_id}`; }

function saveDraft() {
  if (!state.trial) return;
  const draft = { played: state.played, moved: state.moved, scores: state.scores, plays: state.plays,
                  listenMs: state.listenMs };
  localStorage.setItem(draftKey(), JSON.stringify(draft));
}

function restoreDraft() {
  const draft = JSON.parse(localStorage.getItem(draftKey()) || "null");
  if (!draft) return;
  Object.assign(state, { played: draft.played || {}, moved: draft.moved || {}, scores: draft.scores || {},
                         plays: draft.plays || {}, listenMs: draft.listenMs || {} });
}

function sliderFor(label) {
  const wrap = document.createElement("div");
  wrap.className = "stimulus";
  const out = document.createElement("output");
  const slider = document.createElement("input");
  Object.assign(slider, { type: "range", min: 0, max: 100, step: 1, value: 50, disabled: true });
  slider.dataset.label = label;
  slider.setAttribute("aria-label", `Rating for ${label}`);
  slider.setAttribute("aria-orientation", "vertical");
  const show = () => {
    out.textContent = state.moved[label] ? `${slider.value} ${labelOf(+slider.value)}` : "–";
    slider.setAttribute("aria-valuetext", `${slider.value} ${labelOf(+slider.value)}`);
  };
  slider.addEventListener("input", () => {
    state.moved[label] = true;
    state.scores[label] = +slider.value;
    show(); saveDraft(); gate();
  });
  if (state.scores[label] !== undefined) slider.value = state.scores[label];
  slider.disabled = !state.played[label];
  show();
  const button = playButton(label, `Play ${label}`);
  wrap.append(button, slider, out);
  return wrap;
}

function choiceFor(label, name) {
  const wrap = document.createElement("div");
  wrap.className = "stimulus";
  const radio = document.createElement("input");
  Object.assign(radio, { type: "radio", name: "preference", id: `prefer-${label}`, disabled: !state.played[label] });
  radio.dataset.choice = label;
  radio.checked = state.scores[label] === 100;
  radio.addEventListener("change", () => {
    for (const s of state.trial.stimuli) {
      state.moved[s.label] = true;
      state.scores[s.label] = s.label === label ? 100 : 0;
    }
    saveDraft(); gate();
  });
  const text = document.createElement("label");
  text.htmlFor = radio.id;
  text.textContent = `Prefer ${label}`;
  const row = document.createElement("span");
  row.className = "choice";
  row.append(radio, text);
  wrap.append(playButton(label, `Play ${label}`), row);
  return wrap;
}

function playButton(key, text) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.dataset.play = key;
  b.addEventListener("click", () => play(key));
  return b;
}

async function loadBuffers(trial) {
  const ctx = context();
  const entries = trial.stimuli.map((s) => [s.label, s.url]);
  if (trial.reference) entries.push(["reference", trial.reference]);
  const decoded = await Promise.all(entries.map(async ([key, url]) => {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`could not load a sound (${response.status})`);
    return [key, await ctx.decodeAudioData(await response.arrayBuffer())];
  }));
  return Object.fromEntries(decoded);
}

async function showTrial(trial) {
  stopSources();
  state.ready = false;                // true once the trial's page is built (tests wait for it)
  if (trial.done) {
    state.ready = true;
    state.trial = trial;
    show("thanks-page");
    localStorage.removeItem("vampstudy.rater");
    return;
  }
  Object.assign(state, { trial, played: {}, moved: {}, scores: {}, plays: {}, listenMs: {},
                         active: null, offset: 0, busy: false });
  restoreDraft();
  state.buffers = await loadBuffers(trial);
  const duration = Math.min(...Object.values(state.buffers).map((b) => b.duration));
  state.loop = [0, duration];
  $("loop-start").value = "0";
  $("loop-end").value = duration.toFixed(2);
  $("loop-start").max = $("loop-end").max = duration.toFixed(2);
  $("trial-title").textContent = trial.training ? "Practice trial (not analysed)"
                                                : `Trial ${trial.position} of ${trial.total - 1}`;
  $("progress").textContent = trial.training ? "Get to know the sounds and the scale."
                                             : `${trial.position - 1} of ${trial.total - 1} done`;
  $("play-reference").hidden = !trial.reference;
  $("scale").hidden = trial.kind === "ab";
  const box = $("stimuli");
  box.replaceChildren(...trial.stimuli.map((s) => (trial.kind === "ab" ? choiceFor(s.label) : sliderFor(s.label))));
  state.trialStart = performance.now();
  show("trial-page");
  showActive();
  gate();
  state.ready = true;
}

async function submit() {
  if (state.busy) return;
  state.busy = true;
  gate();
  stop();
  const ratings = {};
  for (const s of state.trial.stimuli) {
    ratings[s.label] = { score: state.scores[s.label], plays: state.plays[s.label] || 0,
                         listen_ms: Math.round(state.listenMs[s.label] || 0) };
  }
  try {
    const key = draftKey();
    const next = await api("submit", { trial_id: state.trial.trial_id, ratings,
                                       trial_ms: Math.round(performance.now() - state.trialStart) });
    localStorage.removeItem(key);
    await showTrial(next);
  } catch (e) {
    $("trial-error").textContent = `${e.message} — your ratings are kept; press Next again.`;
    state.busy = false;
    gate();
  }
}

async function api(path, body) {
  const response = await fetch(`/api/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ rater_id: state.rater, ...body }),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
  return data;
}

function show(page) {
  for (const id of ["start-page", "trial-page", "thanks-page"]) $(id).hidden = id !== page;
}

async function start(rater) {
  context();
  state.rater = rater;
  try {
    const next = await api("next", {});
    localStorage.setItem("vampstudy.rater", rater);
    $("start-error").textContent = "";
    await showTrial(next);
  } catch (e) {
    $("start-error").textContent = e.message;
    show("start-page");
  }
}

function keys(event) {
  if (event.target.tagName === "INPUT" && event.target.type !== "range") return;
  if ($("trial-page").hidden || !state.trial) return;
  const k = event.key.toUpperCase();
  if (k === " ") { event.preventDefault(); stop(); return; }
  if (k === "R" && state.trial.reference) { play("reference"); return; }
  if (state.trial.stimuli.some((s) => s.label === k)) play(k);
}

$("start").addEventListener("click", () => start($("rater-id").value.trim()));
$("rater-id").addEventListener("keydown", (e) => { if (e.key === "Enter") start($("rater-id").value.trim()); });
$("play-reference").dataset.play = "reference";
$("play-reference").addEventListener("click", () => play("reference"));
$("stop").addEventListener("click", stop);
$("next").addEventListener("click", submit);
$("loop-start").addEventListener("change", setLoop);
$("loop-end").addEventListener("change", setLoop);
document.addEventListener("keydown", keys);
const saved = localStorage.getItem("vampstudy.rater");
if (saved) { $("rater-id").value = saved; start(saved); }
