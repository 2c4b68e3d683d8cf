// mmat view: the little behaviour the pages have. Plain JS, shipped in the package (no CDN, no build step).
"use strict";

function setupConversationToggle() {
  const button = document.getElementById("toggle-conversation");
  if (!button) return;
  const target = document.getElementById(button.dataset.target);
  button.addEventListener("click", () => {
    const hidden = target.classList.toggle("hidden");
    button.setAttribute("aria-expanded", String(!hidden));
    button.textContent = hidden ? "show the exact training conversation" : "hide the training conversation";
  });
}

function setupLabelForms() {
  for (const form of document.querySelectorAll("form.label-form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const status = form.querySelector("#label-status");
      const body = new URLSearchParams(new FormData(form));
      body.set("label", event.submitter ? event.submitter.value : "correct");
      status.className = "muted";
      status.textContent = "saving…";
      try {
        const response = await fetch(form.action, {
          method: "POST", body, headers: { "Accept": "application/json" }, credentials: "same-origin",
        });
        const reply = await response.json();
        status.textContent = reply.ok ? reply.message : (reply.message || reply.error);
        status.className = reply.ok ? "ok" : "bad";
        if (reply.ok) document.getElementById("current-label").textContent = reply.label;
      } catch (error) {
        status.textContent = "could not reach the viewer: " + error;
        status.className = "bad";
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupConversationToggle();
  setupLabelForms();
});
