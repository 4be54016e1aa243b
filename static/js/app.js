// Small progressive enhancements; every page works without this file (CSP: no inline script).
document.addEventListener("DOMContentLoaded", () => {
  // Ask before irreversible actions: <form data-confirm="Cancel this order?">.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  // Prevent double submits: the server is idempotent anyway, but the button should say so.
  document.querySelectorAll("form[method=post]").forEach((form) => {
    form.addEventListener("submit", () => {
      // Disabled after the submit has been built, so the clicked button still sends its value.
      setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
    });
  });
  // Blocks that take long to work out come after the page: <section data-fragment="/url"> is replaced by the
  // fragment the URL returns (its placeholder links to the same URL for browsers without script).
  document.querySelectorAll("[data-fragment]").forEach((slot) => {
    fetch(slot.dataset.fragment, { credentials: "same-origin", headers: { "X-Fragment": "1" } })
      .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
      .then((html) => {
        const holder = document.createElement("div");
        holder.innerHTML = html;
        slot.replaceWith(...holder.childNodes);
        markScrollingTables();
      })
      .catch(() => {
        slot.setAttribute("aria-busy", "false");
        const note = slot.querySelector("p");
        if (note) note.firstChild.textContent = "Today's plan could not be worked out just now: ";
      });
  });
});
// A form refused with errors: the summary is focused (read first by a screen reader), and each of its links moves
// the focus into the field it names (a plain #link only scrolls).
document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("form-errors") || document.querySelector("[data-focus-on-load]");
  if (summary) summary.focus();
  document.querySelectorAll(".error-summary a[href^='#']").forEach((a) => {
    a.addEventListener("click", (event) => {
      const field = document.getElementById(a.getAttribute("href").slice(1));
      if (!field) return;
      event.preventDefault();
      field.focus();
      field.scrollIntoView({ block: "center" });
    });
  });
});
// A table wider than the screen (zoomed to 200 %, a tablet held upright) scrolls inside its own box: it takes the
// keyboard focus then, so arrow keys scroll it (WCAG 2.1.1) — and gives it back when it fits again.
function markScrollingTables() {
  document.querySelectorAll("table.list").forEach((table) => {
    if (table.scrollWidth > table.clientWidth + 1) table.tabIndex = 0;
    else table.removeAttribute("tabindex");
  });
}
document.addEventListener("DOMContentLoaded", markScrollingTables);
window.addEventListener("resize", markScrollingTables);
