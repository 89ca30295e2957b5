// Live state without reloads: every element with data-poll re-fetches its fragment
// every 2 seconds and swaps it in when it changed. Open <details> stay open, and a
// data-announce text that changed is read out by the page's aria-live announcer.
// Polling stops once the fragment marks itself final (data-final) or the session ends.
(function () {
  "use strict";
  var EVERY = 2000;

  function openDetails(el) {
    var ids = {};
    el.querySelectorAll("details[open][id]").forEach(function (d) { ids[d.id] = true; });
    return ids;
  }

  function announce(el) {
    var source = el.querySelector("[data-announce]");
    var target = document.querySelector("[data-announcer]");
    if (source && target && target.textContent !== source.dataset.announce) {
      target.textContent = source.dataset.announce;
    }
  }

  function poll(el) {
    var last = null;
    function tick() {
      if (el.querySelector("[data-final]")) { return; }
      if (document.hidden) { setTimeout(tick, EVERY); return; }
      fetch(el.dataset.poll, { credentials: "same-origin", headers: { "X-Orchestra-Fragment": "1" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== last) {
            var open = openDetails(el);
            el.innerHTML = html;
            el.querySelectorAll("details[id]").forEach(function (d) { if (open[d.id]) { d.open = true; } });
            last = html;
            announce(el);
          }
          setTimeout(tick, EVERY);
        })
        .catch(function () { setTimeout(tick, EVERY * 2); });
    }
    setTimeout(tick, EVERY);
  }

  function confirmForms() {
    document.addEventListener("submit", function (event) {
      var message = event.target.dataset && event.target.dataset.confirm;
      if (message && !window.confirm(message)) { event.preventDefault(); }
    });
  }

  function focusErrors() {
    var summary = document.getElementById("error-summary");
    if (summary) { summary.focus(); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    confirmForms();
    focusErrors();
  });
})();
