// The board's only script: live updates by server-sent events, and the operator's actions
// (approve, silence, expire a silence) posted to POST /control with the bearer token typed in
// the header. The token stays in this tab (sessionStorage) and goes only in an Authorization
// header, never in a cookie, so another site cannot act in the operator's name (no CSRF).
// Text from the server is only ever set with textContent or taken from our own escaped pages.
"use strict";

(function () {
  const body = document.body;
  const pageName = body.dataset.page;
  const incidentId = body.dataset.incident;
  const SILENCES = "*silences*";
  const tokenInput = document.getElementById("token");
  const status = document.getElementById("status");
  const live = document.getElementById("live");

  tokenInput.value = sessionStorage.getItem("aiops-token") || "";
  tokenInput.addEventListener("input", () => sessionStorage.setItem("aiops-token", tokenInput.value.trim()));
  document.getElementById("token-form").addEventListener("submit", (e) => e.preventDefault());

  function say(text, ok) {
    status.textContent = text;
    status.className = ok ? "ok" : "error";
  }

  // Refetch this page and swap in its live parts: the server renders them, escaped, as on load.
  const LIVE_PARTS = { board: ["rows", "silences"], incident: ["body"] };
  let pending = null;
  async function refresh() {
    pending = null;
    const resp = await fetch(location.pathname, { credentials: "same-origin" });
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    for (const id of LIVE_PARTS[pageName] || []) {
      const fresh = doc.getElementById(id), old = document.getElementById(id);
      if (fresh && old) old.replaceWith(document.adoptNode(fresh));
    }
    body.dataset.refreshed = String(Number(body.dataset.refreshed || 0) + 1);
  }
  function schedule() {
    if (pending === null) pending = setTimeout(refresh, 250);  // a burst of records, one refetch
  }

  if (LIVE_PARTS[pageName]) {
    const events = new EventSource("/events");
    events.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
    events.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live"; });
    events.addEventListener("incident", (e) => {
      const id = JSON.parse(e.data);  // JSON-encoded by the worker, so no id can break the stream's framing
      if (pageName === "board" || id === incidentId || id === SILENCES) schedule();
    });
  }

  async function control(message, done) {
    const token = tokenInput.value.trim();
    if (!token) {
      say("Enter your bearer token (top right) first: acting always needs one.", false);
      tokenInput.focus();
      return;
    }
    let resp, reply = {};
    try {
      resp = await fetch("/control", {
        method: "POST",
        headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
        body: JSON.stringify(message),
      });
      reply = await resp.json().catch(() => ({}));
    } catch (err) {
      say("Could not reach the worker: " + err, false);
      return;
    }
    if (resp.status === 202) {
      document.getElementById("who").textContent = "as " + reply.by;
      say(done(reply), true);
      schedule();
    } else {
      say("Refused (" + resp.status + "): " + (reply.error || resp.statusText), false);
    }
  }

  document.addEventListener("click", (e) => {
    const approve = e.target.closest("[data-approve]");
    if (approve) {
      const id = approve.dataset.approve;
      control({ type: "approve", action_id: id }, (r) => "Approved " + id + " as " + r.by + ".");
    }
    const expire = e.target.closest("[data-expire]");
    if (expire) {
      const id = expire.dataset.expire;
      control({ type: "expire_silence", id: id }, (r) => "Expired silence " + id + " as " + r.by + ".");
    }
  });

  const form = document.getElementById("silence-form");
  if (form) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = new FormData(form);
      control({ type: "silence", service: f.get("service"), metric: f.get("metric"),
                duration: f.get("duration"), comment: f.get("comment") },
              (r) => "Silence " + r.id + " added as " + r.by + ", until " + r.ends_at + ".");
    });
  }
})();
