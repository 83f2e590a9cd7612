// The console's only script: parts of a page marked data-live="URL" are fetched again every two
// seconds (a server-rendered fragment, escaped like the page), so progress shows while a fan-out runs.
"use strict";
(function () {
  const every = 2000;
  function refresh(el) {
    fetch(el.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (r.status === 401) {
          el.dataset.live = "";
          const note = document.createElement("p");
          note.setAttribute("role", "alert");
          note.textContent = "Your session ended: log in again to see live figures.";
          el.parentNode.insertBefore(note, el);
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          el.innerHTML = html;
          el.dataset.refreshed = String(Date.now());
        }
      })
      .catch(function () { /* the next tick tries again */ })
      .finally(function () {
        if (el.dataset.live) setTimeout(function () { refresh(el); }, every);
      });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-live]").forEach(function (el) { refresh(el); });
  });
})();
