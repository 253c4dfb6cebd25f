// The replay page: asciinema-player on the session's cast, whose commands are markers.
//
// The cast is fetched and parsed once, and every player is made from it. A player's speed and
// idle cap are fixed when it is made, so changing them makes a new player at the same moment
// of the recording, playing if the old one was, else paused on that moment's frame. The idle
// cap shortens long pauses, so one moment has another player time under another cap: times
// go through the recording's own time (Timeline).
//
// Wide recordings are fitted to the box's width down to MIN_FONT_PX; wider ones keep that
// size and the box scrolls sideways. The command playing is marked (aria-current) in the list.
import { gettext, interpolate } from "./i18n.js";

const MIN_FONT_PX = 12;
const PLAYER_FONT_PX = 15; // asciinema-player's own base size (its CSS and its measurements)

const element = document.getElementById("player");
const speed = document.getElementById("replay-speed");
const idle = document.getElementById("replay-idle");
const status = document.getElementById("replay-status");
const jumps = [...document.querySelectorAll("button.jump")];

// For tests and for people poking at the page: the player, whether it plays, the command.
const app = { player: null, playing: false, current: -1, generation: 0, timeline: null };
window.replayApp = app;

// Player times (seconds) <-> recording times, as the player's idle limiter computes them: an
// event's time loses, from then on, every earlier gap's excess over the cap.
class Timeline {
  constructor(times) {
    this.times = times; // milliseconds, the recording's own, ascending
    this.limited = new Map(); // cap -> the events' player times
  }

  playerTimes(cap) {
    if (!this.limited.has(cap)) {
      let previous = 0, shift = 0;
      this.limited.set(cap, this.times.map((time) => {
        shift += Math.max(0, time - previous - cap);
        previous = time;
        return time - shift;
      }));
    }
    return this.limited.get(cap);
  }

  // The last index whose value in ``values`` is at most ``value`` (-1 if none).
  static before(values, value) {
    let low = -1, high = values.length;
    while (high - low > 1) {
      const middle = (low + high) >> 1;
      if (values[middle] <= value) low = middle; else high = middle;
    }
    return low;
  }

  toPlayer(seconds, cap) {
    const ms = seconds * 1000, player = this.playerTimes(cap);
    const k = Timeline.before(this.times, ms);
    const [base, limitedBase] = k < 0 ? [0, 0] : [this.times[k], player[k]];
    return (limitedBase + Math.min(ms - base, cap)) / 1000;
  }

  toRecording(seconds, cap) {
    const ms = seconds * 1000, player = this.playerTimes(cap);
    const k = Timeline.before(player, ms);
    const [base, limitedBase] = k < 0 ? [0, 0] : [this.times[k], player[k]];
    return (base + (ms - limitedBase)) / 1000;
  }
}

function parseCast(text) {
  const lines = text.split("\n");
  const header = JSON.parse(lines[0]);
  const events = [];
  for (const line of lines.slice(1)) {
    if (line.startsWith("[")) {
      const [time, code, data] = JSON.parse(line);
      events.push([time * 1000, code, data]); // the player's parsers work in milliseconds
    }
  }
  return { cols: header.width, rows: header.height, events };
}

function cap() {
  return idle.value ? Number(idle.value) * 1000 : Infinity;
}

// The box width at which the widest screen of the recording is drawn at MIN_FONT_PX: the
// player's own measurement (its font, its borders) at its base size, scaled.
function minimumWidth(cols) {
  const probe = document.createElement("div");
  probe.className = "ap-default-term-ff replay-probe";
  probe.style.fontSize = `${PLAYER_FONT_PX}px`;
  const term = document.createElement("div");
  term.className = "ap-term";
  term.style.width = `${cols}ch`;
  probe.append(term);
  document.body.append(probe);
  const width = term.offsetWidth;
  probe.remove();
  return Math.ceil((width * MIN_FONT_PX) / PLAYER_FONT_PX);
}

function widestScreen(recording) {
  let cols = recording.cols;
  for (const [, code, data] of recording.events) {
    if (code === "r") cols = Math.max(cols, Number(String(data).split("x")[0]) || 0);
  }
  return cols;
}

function highlight(index) {
  if (index === app.current) return;
  app.current = index;
  jumps.forEach((button, n) => {
    if (n === index) {
      button.setAttribute("aria-current", "true");
      button.scrollIntoView({ block: "nearest" });
    } else {
      button.removeAttribute("aria-current");
    }
  });
}

// The command at player time ``seconds``: the last one entered at or before it.
function highlightAt(seconds) {
  const markers = app.markerTimes.map((time) => app.timeline.toPlayer(time, cap()));
  highlight(Timeline.before(markers, seconds + 0.001));
}

function makePlayer(recording) {
  element.classList.remove("positioned");
  const player = window.AsciinemaPlayer.create(
    { data: () => recording, parser: (data) => data },
    element,
    {
      cols: Number(element.dataset.cols),
      rows: Number(element.dataset.rows),
      speed: Number(speed.value),
      idleTimeLimit: Number.isFinite(cap()) ? cap() / 1000 : undefined,
      preload: true,
      fit: "width",
    },
  );
  const mine = (handler) => (event) => { if (app.player === player) handler(event); };
  player.addEventListener("play", mine(() => { app.playing = true; }));
  player.addEventListener("playing", mine(() => { app.playing = true; }));
  player.addEventListener("pause", mine(() => { app.playing = false; }));
  player.addEventListener("ended", mine(() => { app.playing = false; }));
  player.addEventListener("marker", mine((marker) => highlight(marker.index)));
  player.addEventListener("seeked", mine(() => highlightAt(player.getCurrentTime() ?? 0)));
  app.player = player;
  app.playing = false;
  window.replayPlayer = player; // for tests
  return player;
}

// A new player with the current speed and cap, at the old one's moment and state.
async function remake() {
  const generation = ++app.generation;
  const old = app.player, wasPlaying = app.playing;
  const oldCap = app.cap;
  const at = app.timeline.toRecording(old.getCurrentTime() ?? 0, oldCap);
  old.dispose();
  app.cap = cap();
  const player = makePlayer(app.recording);
  if (at > 0 || wasPlaying) {
    element.classList.add("positioned");
    await player.seek(app.timeline.toPlayer(at, app.cap));
    if (generation !== app.generation) return;
    highlightAt(player.getCurrentTime() ?? 0);
    if (wasPlaying) await player.play();
  }
  app.remade = generation; // for tests: this player is in place
}

async function jump(index) {
  await app.player.seek({ marker: index });
  highlight(index);
  await app.player.play();
}

async function start() {
  const response = await fetch(element.dataset.castUrl, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const recording = parseCast(await response.text());
  app.recording = recording;
  app.timeline = new Timeline(recording.events.map(([time]) => time));
  app.markerTimes = recording.events.filter(([, code]) => code === "m").map(([time]) => time / 1000);
  element.style.minWidth = `${minimumWidth(widestScreen(recording))}px`;
  app.cap = cap();
  makePlayer(recording);
  speed.addEventListener("change", remake);
  idle.addEventListener("change", remake);
  jumps.forEach((button, index) => button.addEventListener("click", () => jump(index)));
  if (element.dataset.startCommand !== "") {
    const index = Number(element.dataset.startCommand);
    element.classList.add("positioned");
    await app.player.seek({ marker: index });
    highlight(index);
  }
  app.remade = 0;
}

start().catch((error) => {
  status.hidden = false;
  status.textContent = interpolate(gettext("The recording could not be loaded (%(error)s)."), { error: error.message });
});
