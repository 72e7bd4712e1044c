// The facetorch page: a photo or a camera picture goes to /v1/recognize and comes back with every face
// boxed, named and scored; enrolment and the people list use the admin routes. No build step, no library.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { auth: false, picture: null, stream: null };

function key() { return $("key").value.trim(); }

function headers() { return state.auth && key() ? { Authorization: `Bearer ${key()}` } : {}; }

function say(text) { $("message").textContent = text || ""; }

async function call(method, path, body) {
  const response = await fetch(path, { method, body, headers: headers() });
  let data = null;
  try { data = await response.json(); } catch (error) { data = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

async function health() {
  try {
    const data = await call("GET", "/health");
    state.auth = data.auth;
    $("key-section").hidden = !data.auth;
    const threshold = data.threshold === null ? "no threshold yet (enrol 3 or more people)" : `threshold ${data.threshold.toFixed(3)}`;
    $("status").textContent = `${data.people} people · ${data.detector} detector · ${threshold}`;
  } catch (error) {
    $("status").textContent = `the service does not answer: ${error.message}`;
  }
}

function draw(image, faces) {
  const canvas = $("canvas");
  const scale = Math.min(860 / image.width, Math.max(1, 560 / image.width)); // small pictures grow, so labels fit
  canvas.width = Math.round(image.width * scale);
  canvas.height = Math.round(image.height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  context.lineWidth = 2;
  context.font = "bold 14px system-ui, sans-serif";
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box.map((v) => v * scale);
    const colour = face.name === "unknown" ? "#e01818" : "#10a010";
    context.strokeStyle = colour;
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${face.name} ${face.score.toFixed(2)}`;
    const width = context.measureText(label).width + 8;
    const top = y1 >= 18 ? y1 - 18 : Math.min(y2, canvas.height - 18);
    context.fillStyle = colour;
    context.fillRect(x1, top, width, 18);
    context.fillStyle = "#fff";
    context.fillText(label, x1 + 4, top + 14);
  }
}

function list(faces) {
  const items = faces.map((face) => {
    const item = document.createElement("li");
    item.className = face.name === "unknown" ? "unknown" : "known";
    item.textContent = `${face.name} ${face.score.toFixed(2)}`;
    return item;
  });
  if (!items.length) {
    const none = document.createElement("li");
    none.textContent = "no face found";
    items.push(none);
  }
  $("faces").replaceChildren(...items);
}

async function recognize(blob, name) {
  state.picture = { blob, name };
  const form = new FormData();
  form.append("image", blob, name);
  say("");
  $("faces").replaceChildren();
  try {
    const [data, image] = await Promise.all([call("POST", "/v1/recognize", form), createImageBitmap(blob)]);
    draw(image, data.faces);
    list(data.faces);
  } catch (error) {
    say(error.message);
  }
}

$("photo").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) recognize(file, file.name);
  event.target.value = "";
});

$("camera-start").addEventListener("click", async () => {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    say(`no camera: ${error.message}`);
    return;
  }
  $("video").srcObject = state.stream;
  for (const id of ["video", "camera-shot", "camera-stop"]) $(id).hidden = false;
});

$("camera-shot").addEventListener("click", () => {
  const video = $("video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => recognize(blob, "camera.jpg"), "image/jpeg", 0.92);
});

$("camera-stop").addEventListener("click", () => {
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  for (const id of ["video", "camera-shot", "camera-stop"]) $(id).hidden = true;
});

$("enrol-button").addEventListener("click", async () => {
  const name = $("enrol-name").value.trim();
  const files = Array.from($("enrol-files").files);
  const form = new FormData();
  form.append("name", name);
  if (files.length) files.forEach((file) => form.append("images", file, file.name));
  else if (state.picture) form.append("images", state.picture.blob, state.picture.name);
  else { $("enrol-result").textContent = "choose photos of the person, or a picture above, first"; return; }
  try {
    const data = await call("POST", "/v1/enroll", form);
    const skipped = data.skipped.length ? `; skipped ${data.skipped.map((s) => `${s.image}: ${s.reason}`).join(", ")}` : "";
    $("enrol-result").textContent = `enrolled ${data.name}: ${data.added} photo(s)${skipped}. ${data.notes.join(" ")}`;
    $("enrol-files").value = "";
    await Promise.all([people(), health()]);
  } catch (error) {
    $("enrol-result").textContent = `not enrolled: ${error.message}`;
  }
});

async function people() {
  try {
    const data = await call("GET", "/v1/people");
    $("people").replaceChildren(...data.people.map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "remove";
      remove.addEventListener("click", async () => {
        if (!confirm(`Forget ${name}?`)) return;
        try { await call("DELETE", `/v1/people/${encodeURIComponent(name)}`); await Promise.all([people(), health()]); }
        catch (error) { say(error.message); }
      });
      item.append(remove);
      return item;
    }));
  } catch (error) {
    $("people").replaceChildren();
    say(error.message);
  }
}

$("people-refresh").addEventListener("click", people);
$("key").addEventListener("change", () => { sessionStorage.setItem("facetorch-key", key()); people(); });
$("key").value = sessionStorage.getItem("facetorch-key") || "";
health().then(people);
