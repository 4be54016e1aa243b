// The portal works without this file. It warns before the idle sign-out (WCAG 2.2.1: the patient can extend the
// session with one button), and keeps the double-submit guard of the staff pages.
document.addEventListener("DOMContentLoaded", () => {
  const body = document.body;
  const idle = Number(body.dataset.idleSeconds || 0);
  const box = document.getElementById("idle-warning");
  const stay = document.getElementById("idle-stay");
  let timer = null;
  const arm = () => {
    if (!idle || !box) return;
    clearTimeout(timer);
    box.hidden = true;
    timer = setTimeout(() => { box.hidden = false; stay.focus(); }, Math.max(idle - 120, 30) * 1000);
  };
  if (stay) {
    stay.addEventListener("click", () => {
      const form = new FormData();
      form.append("csrf_token", body.dataset.csrf || "");
      fetch(body.dataset.extendUrl, { method: "POST", body: form, credentials: "same-origin" })
        .then((r) => { if (r.ok) arm(); else window.location.reload(); });
    });
  }
  arm();
  document.querySelectorAll("form[method=post]").forEach((form) => {
    form.addEventListener("submit", () => {
      setTimeout(() => form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; }), 0);
    });
  });
});
