// Live state without reloads: every element with data-poll re-fetches its fragment
// every 2 seconds and swaps it in when it changed. Open <details> stay open, and a
// data-announce text that changed is read out by the page's aria-live announcer.
// Polling stops once the fragment marks itself final (data-final) or the session ends.
// Every <time data-local> is shown in the browser's time zone; its title keeps the UTC time.
(function () {
  "use strict";
  var EVERY = 2000;

  function pad(n, width) { return String(n).padStart(width || 2, "0"); }

  function localTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (isNaN(at.getTime())) { return; }
      var text = at.getFullYear() + "-" + pad(at.getMonth() + 1) + "-" + pad(at.getDate()) + " " +
        pad(at.getHours()) + ":" + pad(at.getMinutes()) + ":" + pad(at.getSeconds()) +
        (el.hasAttribute("data-ms") ? "." + pad(at.getMilliseconds(), 3) : "");
      el.textContent = text;
      el.removeAttribute("data-local");
    });
  }

  function zoneName() {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone";
    document.querySelectorAll("[data-zone]").forEach(function (el) { el.textContent = "your time zone (" + zone + ")"; });
  }

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
            localTimes(el);
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
    localTimes(document);
    zoneName();
    document.querySelectorAll("[data-poll]").forEach(poll);
    confirmForms();
    focusErrors();
  });
})();
