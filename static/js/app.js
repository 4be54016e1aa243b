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
});
// A form refused with errors: the summary is focused (read first by a screen reader), and each of its links moves
// the focus into the field it names (a plain #link only scrolls).
document.addEventListener("DOMContentLoaded", () => {
  const summary = document.getElementById("form-errors");
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
