// batisync console: the little JavaScript that helps. Pages work without it.
"use strict";

// Parts of a page refreshed in place: <div data-refresh="/fragments/x" data-every="5000">.
function refreshLoop(el) {
  const every = parseInt(el.dataset.every || "5000", 10);
  const tick = async () => {
    try {
      const response = await fetch(el.dataset.refresh, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401 || response.redirected) { window.location.reload(); return; }
      if (response.ok) {
        el.innerHTML = await response.text();
        el.dataset.refreshedAt = new Date().toISOString();
      }
    } catch (e) { /* the server restarts: try again at the next tick */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

// Live progress of a full re-read: <div data-progress="/api/v1/flows/chantiers/resync">.
function progressLoop(el) {
  const bar = el.querySelector("progress");
  const text = el.querySelector(".progress-text");
  const tick = async () => {
    try {
      const response = await fetch(el.dataset.progress, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const p = await response.json();
        if (bar) { bar.max = Math.max(p.total, 1); bar.value = p.finished; }
        if (text) { text.textContent = p.summary; }
        if (p.complete) { return; }
      }
    } catch (e) { /* try again */ }
    setTimeout(tick, 2000);
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshLoop);
  document.querySelectorAll("[data-progress]").forEach(progressLoop);
  // Confirmation where the form asks for it; then no second submission (double click).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
  });
});
