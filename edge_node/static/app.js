// Seminote practice page: microphone -> WHIP offer to this edge -> live feedback over the data channel.
//
// Ticket: from the URL (?ticket=...&whip=...) when a control plane handed one out, from the control
// plane's route gateway (?route=<gateway>/v1/route&key=<client key>, as scripts/run-local.sh prints),
// otherwise from the edge's local POST /v1/dev/ticket (a standalone edge with server.dev_tickets on).
// ?autostart=1 starts at once (tests). window.seminote exposes the session state and every event
// with its receive time (performance.now()), for people debugging and for the end-to-end test.
"use strict";

const NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
const ICE_GATHER_TIMEOUT_MS = 3000;
const MAX_NOTES_SHOWN = 24;
const MAX_MESSAGES = 50;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const seminote = {
  state: "idle",          // idle | starting | live | stopping | stopped | failed
  events: [],             // {event, receivedAt}
  replies: [],            // pong / ack (no seq)
  error: null,
  sessionUrl: null,
  startedAt: null,        // performance.now() when the answer was applied
  pc: null,
  channel: null,
  ticket: null,
  start, stop, send,
};
window.seminote = seminote;

function midiName(midi) {
  const m = Math.round(midi);
  return NOTE_NAMES[((m % 12) + 12) % 12] + (Math.floor(m / 12) - 1);
}

function setStatus(text) { $("status").textContent = text; }

function message(text) {
  const li = document.createElement("li");
  li.textContent = text;
  const list = $("messages");
  list.prepend(li);
  while (list.children.length > MAX_MESSAGES) list.lastChild.remove();
}

// --- control plane (issue 4): a ticket from the route gateway, ?route=<gateway>/v1/route&key=<client key>
async function routeTicket(route) {
  const r = await fetch(route, {
    method: "POST",
    headers: { "Content-Type": "application/json", "Authorization": `Bearer ${params.get("key") || ""}` },
    body: JSON.stringify({
      user: params.get("user") || "browser", region: params.get("region") || "local",
      tempo_bpm: Number(params.get("tempo") || 0), prefer_detailed: $("mode").value === "detailed",
    }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`no route: ${(body.error && body.error.message) || r.status}`);
  if (!body.ticket) throw new Error(`the control plane chose ${body.mode} mode: no edge needed`);
  message(`routed to ${body.edge_id} (${body.mode}): ${body.reason}`);
  return { ticket: body.ticket, whip_url: body.whip_url };
}
// --- end control plane

async function fetchTicket() {
  if (params.get("ticket")) {
    return { ticket: params.get("ticket"), whip_url: params.get("whip") || "/v1/whip" };
  }
  if (params.get("route")) return routeTicket(params.get("route"));
  const r = await fetch("/v1/dev/ticket", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: "browser", mode: $("mode").value }),
  });
  if (!r.ok) {
    throw new Error(`no ticket: this edge hands out none (${r.status}); open the page with ?ticket=...`);
  }
  return r.json();
}

function iceGatheringDone(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

async function start() {
  if (seminote.state === "starting" || seminote.state === "live") return;
  seminote.state = "starting";
  seminote.error = null;
  $("start").disabled = true;
  setStatus("Asking for the microphone…");
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
      video: false,
    });
    const { ticket, whip_url } = await fetchTicket();
    seminote.ticket = ticket;
    const pc = new RTCPeerConnection({ iceServers: [] });
    seminote.pc = pc;
    // The feedback channel exists before the offer, so the offer carries it (DESIGN.md).
    const channel = pc.createDataChannel("feedback");
    seminote.channel = channel;
    channel.onmessage = (e) => onMessage(e.data);
    channel.onopen = () => { setStatus("Live: play!"); send({ type: "set_mode", mode: $("mode").value }); };
    channel.onclose = () => { if (seminote.state === "live") finish("The edge ended the session."); };
    for (const track of stream.getAudioTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") finish("Connection to the edge failed.", true);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    setStatus("Connecting to the edge…");
    const r = await fetch(whip_url, {
      method: "POST",
      headers: { "Content-Type": "application/sdp", "Authorization": `Bearer ${ticket}` },
      body: pc.localDescription.sdp,
    });
    const body = await r.text();
    if (r.status !== 201) {
      let reason = body;
      try { reason = JSON.parse(body).message; } catch (_) { /* plain text */ }
      throw new Error(`edge refused the session (${r.status}): ${reason}`);
    }
    seminote.sessionUrl = new URL(r.headers.get("Location"), new URL(whip_url, location.href)).href;
    await pc.setRemoteDescription({ type: "answer", sdp: body });
    seminote.startedAt = performance.now();
    seminote.state = "live";
    $("stop").disabled = false;
  } catch (err) {
    finish(String(err.message || err), true);
  }
}

function send(msg) {
  const ch = seminote.channel;
  if (ch && ch.readyState === "open") ch.send(JSON.stringify(msg));
}

async function stop() {
  if (seminote.state !== "live") return;
  seminote.state = "stopping";
  send({ type: "stop" });
  if (seminote.sessionUrl) {
    try {
      await fetch(seminote.sessionUrl, { method: "DELETE", headers: { "Authorization": `Bearer ${seminote.ticket}` } });
    } catch (_) { /* the edge may already have ended it */ }
  }
  finish("Stopped.");
}

function finish(text, failed = false) {
  if (seminote.pc) {
    for (const s of seminote.pc.getSenders()) if (s.track) s.track.stop();
    seminote.pc.close();
  }
  seminote.pc = null;
  seminote.state = failed ? "failed" : "stopped";
  if (failed) seminote.error = text;
  setStatus(text);
  $("start").disabled = false;
  $("stop").disabled = true;
}

// ------------------------------------------------------------------------------ feedback

const view = { onsets: 0, notes: 0, noteItems: new Map(), flashTimer: null };

function onMessage(data) {
  const receivedAt = performance.now();
  let event;
  try { event = JSON.parse(data); } catch (_) { return; }
  if (typeof event !== "object" || event === null) return;
  if (!("seq" in event)) { seminote.replies.push({ event, receivedAt }); return; }
  seminote.events.push({ event, receivedAt });
  render(event);
}

function render(e) {
  switch (e.type) {
    case "onset": {
      view.onsets += 1;
      const flash = $("onset-flash");
      flash.classList.add("on");
      clearTimeout(view.flashTimer);
      view.flashTimer = setTimeout(() => flash.classList.remove("on"), 120);
      break;
    }
    case "note": {
      let li = view.noteItems.get(e.note_id);
      if (!li) {
        view.notes += 1;
        li = document.createElement("li");
        li.textContent = `${midiName(e.pitch)} · v${e.velocity}`;
        view.noteItems.set(e.note_id, li);
        const list = $("notes");
        list.append(li);
        while (list.children.length > MAX_NOTES_SHOWN) list.firstChild.remove();
      }
      li.classList.toggle("sounding", e.end === null);
      for (const [id, item] of view.noteItems) if (!item.isConnected) view.noteItems.delete(id);
      break;
    }
    case "pitch": {
      const cents = Math.round((e.midi - Math.round(e.midi)) * 100);
      $("pitch-note").textContent = midiName(e.midi);
      $("pitch-detail").textContent = `${e.f0_hz.toFixed(1)} Hz · ${cents >= 0 ? "+" : ""}${cents} cents · conf ${e.confidence.toFixed(2)}`;
      break;
    }
    case "dynamics": {
      const pct = Math.max(0, Math.min(100, (e.rms_dbfs + 60) / 60 * 100));
      $("meter-fill").style.width = `${pct}%`;
      $("dyn-detail").textContent = `${e.rms_dbfs.toFixed(1)} dBFS · velocity ${e.velocity}`;
      break;
    }
    case "tempo":
      $("tempo").textContent = `${Math.round(e.bpm)} BPM`;
      $("tempo-detail").textContent = `confidence ${e.confidence.toFixed(2)}`;
      break;
    case "mode":
      message(`mode: ${e.mode} (${e.reason})`);
      break;
    case "error":
      message(`error ${e.code}: ${e.message}`);
      break;
    case "summary":
      message(`summary: overall ${e.overall_score}, ${e.notes_played} notes`);
      break;
    default:
      break;
  }
  $("counts").textContent = `${view.onsets} onsets · ${view.notes} notes · ${seminote.events.length} events`;
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("mode").addEventListener("change", () => send({ type: "set_mode", mode: $("mode").value }));
if (params.get("autostart") === "1") start();
