// The chat page: plain DOM and fetch, no framework, nothing loaded from elsewhere.
"use strict";

const DECODING_FIELDS = ["strategy", "beam_size", "temperature", "top_k", "top_p", "max_tokens"];
const $ = (id) => document.getElementById(id);

const state = { conversationId: null, busy: false };

// Errors from the API are {error, message, fields}; anything else gets a generic line.
async function callApi(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new Error("Cannot reach the server. Is it running?");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    // Not JSON: a proxy's error page, say. The status line below still tells what happened.
  }
  if (!response.ok) {
    const detail = data && data.message ? data.message : `${response.status} ${response.statusText}`;
    throw new Error(`The server could not answer: ${detail}`);
  }
  return data;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function addBubble(role, text) {
  const item = document.createElement("li");
  item.className = `bubble ${role}`;
  const who = document.createElement("span");
  who.className = "visually-hidden";
  who.textContent = role === "user" ? "You said: " : "Bot said: ";
  const body = document.createElement("p");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

// Drawn here rather than as emoji: a phone or kiosk without an emoji font shows empty boxes.
const THUMB = "M2 10h4v11H2z M8 10l4-8c1.5 0 2.6 1.1 2.3 2.6L13.5 9H20c1.2 0 2 1 1.8 2.2l-1.6 8"
  + "c-.2 1.1-1 1.8-2.2 1.8H8z";

function thumbIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", THUMB);
  svg.append(path);
  return svg;
}

function addRating(item, reply) {
  const meta = document.createElement("div");
  meta.className = "meta";
  const about = document.createElement("span");
  about.textContent = `${reply.model} · ${Math.round(reply.latency_ms)} ms`;
  meta.append(about);
  for (const [rating, label] of [["up", "Good reply"], ["down", "Bad reply"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = `rate rate-${rating}`;
    button.append(thumbIcon());
    button.setAttribute("aria-label", label);
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => rate(meta, reply, rating, button));
    meta.append(button);
  }
  item.append(meta);
}

async function rate(meta, reply, rating, button) {
  try {
    await callApi("api/v1/feedback", {
      conversation_id: reply.conversation_id,
      turn: reply.turn,
      rating,
    });
    for (const other of meta.querySelectorAll("button.rate")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    clearError();
  } catch (error) {
    showError(error.message);
  }
}

// "server default" sends no settings: the server's own (`rlchat serve --rerank mmi ...`) apply.
function decodingSettings() {
  const strategy = $("strategy").value;
  if (!strategy) return {};
  const settings = { strategy };
  for (const name of DECODING_FIELDS.slice(1)) {
    const input = $(name);
    if (!input.disabled && input.value !== "") settings[name] = Number(input.value);
  }
  return settings;
}

async function send(text) {
  const request = { message: text, decoding: decodingSettings() };
  if (state.conversationId) request.conversation_id = state.conversationId;
  if ($("model").value) request.model = $("model").value;
  if ($("genre").value) request.genre = $("genre").value;
  const mine = addBubble("user", text);
  const waiting = addBubble("bot pending", "…");
  waiting.setAttribute("aria-busy", "true");
  try {
    const reply = await callApi("api/v1/chat", request);
    state.conversationId = reply.conversation_id;
    waiting.classList.remove("pending");
    waiting.removeAttribute("aria-busy");
    waiting.querySelector(".text").textContent = reply.reply;
    addRating(waiting, reply);
    clearError();
  } catch (error) {
    waiting.remove();
    mine.classList.add("failed");
    showError(error.message);
  }
}

async function onSubmit(event) {
  event.preventDefault();
  const box = $("message");
  const text = box.value.trim();
  if (!text || state.busy) return;
  state.busy = true;
  $("send").disabled = true;
  box.value = "";
  try {
    await send(text);
  } finally {
    state.busy = false;
    $("send").disabled = false;
    box.focus();
  }
}

// Only the settings of the chosen strategy are sent (and can be edited).
function syncStrategy() {
  const strategy = $("strategy").value;
  for (const label of document.querySelectorAll("label[data-for]")) {
    const active = label.dataset.for === strategy;
    label.classList.toggle("inactive", !active);
    label.querySelector("input").disabled = !active;
  }
}

// Defaults and limits come from the API's own schema, so the page never disagrees with it.
async function loadDecodingDefaults() {
  const schema = await callApi("openapi.json");
  const fields = schema.components.schemas.Decoding.properties;
  for (const name of DECODING_FIELDS.slice(1)) {  // the strategy stays "server default"
    const input = $(name);
    const field = fields[name] || {};
    if (field.default !== undefined) input.value = field.default;
    for (const [limit, keys] of [["min", ["minimum", "exclusiveMinimum"]], ["max", ["maximum"]]]) {
      const key = keys.find((k) => field[k] !== undefined);
      if (key && input.type === "number") input[limit] = field[key];
    }
  }
  syncStrategy();
}

function option(value, label) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = label;
  return item;
}

async function loadModels() {
  const catalogue = await callApi("api/v1/models");
  for (const genre of catalogue.genres) $("genre").append(option(genre, genre));
  for (const model of catalogue.models) {
    const genres = model.genres.length ? model.genres.join(", ") : "all genres";
    const suffix = model.default ? ", default" : "";
    $("model").append(option(model.name, `${model.name} (${model.stage}, ${genres}${suffix})`));
  }
}

function newChat() {
  state.conversationId = null;
  $("messages").replaceChildren();
  clearError();
  $("message").focus();
}

function start() {
  $("composer").addEventListener("submit", onSubmit);
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  // A genre picks its model on the server; a chosen model makes the genre moot.
  $("genre").addEventListener("change", () => { if ($("genre").value) $("model").value = ""; });
  $("model").addEventListener("change", () => { if ($("model").value) $("genre").value = ""; });
  $("strategy").addEventListener("change", syncStrategy);
  $("new-chat").addEventListener("click", newChat);
  $("error").addEventListener("click", clearError);
  Promise.all([loadModels(), loadDecodingDefaults()])
    .then(() => document.body.classList.add("ready"))
    .catch((error) => showError(error.message));
}

document.addEventListener("DOMContentLoaded", start);
