// pipeserver's video player, the script of /PATH?video (pipeserver/web/video.py).
// It fetches /PATH once, as one receiver, and feeds the bytes to a Media
// Source Extensions SourceBuffer as they come. It reads only as fast as the
// video plays (at most AHEAD seconds ahead), so the pipe's backpressure
// reaches the sender, and drops what was played (BEHIND) to stay small.
"use strict";
(() => {
  const AHEAD = 30;
  const BEHIND = 10;
  const SNIFF_MAX = 1 << 20;

  const video = document.getElementById("video");
  const statusLine = document.getElementById("status");
  const tokenForm = document.getElementById("token-form");
  const tokenInput = document.getElementById("token");

  const target = new URL(location.href);
  const asked = (target.searchParams.get("video") || "").trim();
  target.searchParams.delete("video");
  target.hash = "";
  let token = "";

  function say(text) {
    statusLine.textContent = text;
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  function concat(chunks) {
    const size = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    const out = new Uint8Array(size);
    let at = 0;
    for (const chunk of chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }

  // Where the ASCII text occurs in bytes, or -1.
  function find(bytes, text) {
    const first = text.charCodeAt(0);
    outer: for (let i = bytes.indexOf(first); i !== -1; i = bytes.indexOf(first, i + 1)) {
      for (let j = 1; j < text.length; j++) {
        if (bytes[i + j] !== text.charCodeAt(j)) continue outer;
      }
      return i;
    }
    return -1;
  }

  function hex2(n) {
    return n.toString(16).padStart(2, "0");
  }

  // The MSE type of a stream from its first bytes, or "" until it is known.
  function sniff(bytes) {
    const codecs = [];
    if (bytes.length >= 4 && bytes[0] === 0x1a && bytes[1] === 0x45 && bytes[2] === 0xdf && bytes[3] === 0xa3) {
      // WebM (EBML): the tracks' CodecIDs are ASCII.
      if (find(bytes, "\x16\x54\xae\x6b") === -1) return ""; // Tracks not in yet
      for (const [id, codec] of [["V_VP8", "vp8"], ["V_VP9", "vp9"], ["A_OPUS", "opus"], ["A_VORBIS", "vorbis"]]) {
        if (find(bytes, id) !== -1) codecs.push(codec);
      }
      if (!codecs.length) return "";
      return `video/webm; codecs="${codecs.join(", ")}"`;
    }
    if (bytes.length >= 8 && find(bytes.subarray(4, 8), "ftyp") === 0) {
      // Fragmented MP4: the sample descriptions in the moov box.
      if (find(bytes, "moov") === -1 || (find(bytes, "moof") === -1 && find(bytes, "mvex") === -1)) return "";
      const avc = find(bytes, "avcC");
      if (avc !== -1 && avc + 8 <= bytes.length) {
        codecs.push("avc1." + hex2(bytes[avc + 5]) + hex2(bytes[avc + 6]) + hex2(bytes[avc + 7]));
      }
      if (find(bytes, "vpcC") !== -1) codecs.push("vp09.00.10.08");
      if (find(bytes, "mp4a") !== -1) codecs.push("mp4a.40.2");
      if (find(bytes, "Opus") !== -1) codecs.push("opus");
      if (!codecs.length) return "";
      return `video/mp4; codecs="${codecs.join(", ")}"`;
    }
    return bytes.length >= 12 ? "?" : "";
  }

  function once(target, name) {
    return new Promise((resolve) => target.addEventListener(name, resolve, { once: true }));
  }

  async function idle(buffer) {
    while (buffer.updating) await once(buffer, "updateend");
  }

  // Drop what was played more than BEHIND seconds ago.
  async function trim(buffer) {
    const ranges = buffer.buffered;
    if (!ranges.length) return;
    const end = video.currentTime - BEHIND;
    if (end - ranges.start(0) > BEHIND) {
      await idle(buffer);
      buffer.remove(ranges.start(0), end);
      await idle(buffer);
    }
  }

  // Wait while the buffer runs more than AHEAD seconds past the playhead.
  async function room(buffer) {
    for (;;) {
      const ranges = buffer.buffered;
      if (!ranges.length || ranges.end(ranges.length - 1) - video.currentTime < AHEAD) return;
      await trim(buffer);
      await sleep(250);
    }
  }

  function startPlaying() {
    const ranges = video.buffered;
    if (ranges.length && video.currentTime < ranges.start(0)) {
      video.currentTime = ranges.start(0); // a stream joined late starts late
    }
    if (video.paused && video.readyState >= 2) video.play().catch(() => {});
  }

  async function append(source, buffer, chunk) {
    for (;;) {
      await idle(buffer);
      if (source.readyState !== "open") throw new Error("the player stopped (undecodable media?)");
      try {
        buffer.appendBuffer(chunk);
      } catch (error) {
        if (error.name !== "QuotaExceededError") throw error;
        await trim(buffer);
        await sleep(500);
        continue;
      }
      await idle(buffer);
      startPlaying();
      return;
    }
  }

  async function play() {
    const headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    say(`Waiting for a sender on ${target.pathname}...`);
    let response;
    try {
      response = await fetch(target, { headers, cache: "no-store" });
    } catch (error) {
      say("Could not reach the server: " + error.message);
      return;
    }
    if (response.status === 401) {
      say("This server asks for a token.");
      tokenForm.hidden = false;
      tokenInput.focus();
      return;
    }
    if (!response.ok) {
      say((await response.text()).trim() || `HTTP ${response.status}`);
      return;
    }
    const reader = response.body.getReader();
    const declared = (response.headers.get("content-type") || "").trim();
    let type = asked || (/codecs=/i.test(declared) ? declared : "");
    const head = [];
    let size = 0;
    let ended = false;
    while (!type) {
      const { done, value } = await reader.read();
      if (done) {
        ended = true;
        break;
      }
      head.push(value);
      size += value.length;
      const found = sniff(concat(head));
      if (found === "?" || (!found && size >= SNIFF_MAX)) break;
      type = found;
    }
    if (!type && /^(video|audio)\//i.test(declared)) type = declared;
    if (!type) {
      say("This is not a stream the page can play: send WebM or fragmented MP4.");
      reader.cancel().catch(() => {});
      return;
    }
    if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
      say(`This browser cannot play ${type}.`);
      reader.cancel().catch(() => {});
      return;
    }
    const source = new MediaSource();
    video.src = URL.createObjectURL(source);
    await once(source, "sourceopen");
    const buffer = source.addSourceBuffer(type);
    say(`Playing ${type}`);
    try {
      for (const chunk of head) await append(source, buffer, chunk);
      while (!ended) {
        await room(buffer);
        const { done, value } = await reader.read();
        if (done) break;
        await append(source, buffer, value);
      }
      await idle(buffer);
      if (source.readyState === "open") source.endOfStream();
      say(`The stream ended (${type}).`);
    } catch (error) {
      reader.cancel().catch(() => {});
      await idle(buffer).catch(() => {});
      if (source.readyState === "open") source.endOfStream();
      say("The stream broke off: " + error.message);
    }
  }

  tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    token = tokenInput.value.trim();
    tokenForm.hidden = true;
    play();
  });
  play();
})();
