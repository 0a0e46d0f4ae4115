// pysched dashboard: times in the viewer's zone, and a refresh of the live
// parts of the page every few seconds. The pages work without it.
(function () {
  "use strict";
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  var parts = new Intl.DateTimeFormat("en-US", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hourCycle: "h23"});
  var hm = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit", hour12: false});
  var hms = new Intl.DateTimeFormat(undefined, {hour: "2-digit", minute: "2-digit",
                                                second: "2-digit", hour12: false});
  var day = new Intl.DateTimeFormat(undefined, {weekday: "short", day: "numeric", month: "short"});

  // 2026-11-30 14:05:09 in the viewer's zone (named once, at the top).
  function stamp(when) {
    var p = {};
    parts.formatToParts(when).forEach(function (part) { p[part.type] = part.value; });
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second;
  }

  function relative(ms) {
    var size = Math.abs(ms) / 1000, units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
    if (size < 1) { return "now"; }
    for (var i = 0; i < units.length; i++) {
      if (size >= units[i][1]) {
        var n = Math.floor(size / units[i][1]) + " " + units[i][0];
        return ms > 0 ? "in " + n : n + " ago";
      }
    }
    return "now";
  }

  function localize(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) { el.textContent = stamp(when); el.title = el.getAttribute("datetime"); }
    });
    root.querySelectorAll(".rel[data-time]").forEach(function (el) {
      el.textContent = relative(new Date(el.getAttribute("data-time")) - Date.now());
    });
    root.querySelectorAll("svg text.tick[data-time]").forEach(function (el) {
      var when = new Date(el.getAttribute("data-time"));
      var format = el.getAttribute("data-format");
      el.textContent = (format === "day" ? day : format === "seconds" ? hms : hm).format(when);
    });
    root.querySelectorAll("svg text.tick.zone").forEach(function (el) { el.textContent = ""; });
    var label = document.getElementById("zone");
    if (label) { label.textContent = zone; }
  }

  function busy() {
    var active = document.activeElement;
    var typing = active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
    var selecting = String(window.getSelection ? window.getSelection() : "").length > 0;
    return typing || selecting || document.hidden;
  }

  function refresh(box) {
    if (!box.checked || busy()) { return; }
    fetch(window.location.href, {credentials: "same-origin"}).then(function (answer) {
      return answer.ok ? answer.text() : null;
    }).then(function (html) {
      if (!html) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html");
      document.querySelectorAll("[data-live][id]").forEach(function (old) {
        var part = fresh.getElementById(old.id);
        if (part) { old.replaceWith(document.adoptNode(part)); }
      });
      localize(document);
    }).catch(function () { /* the next round tries again */ });
  }

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  document.addEventListener("DOMContentLoaded", function () {
    localize(document);
    var seconds = parseFloat(document.body.getAttribute("data-refresh")) || 0;
    var box = document.getElementById("autorefresh");
    if (!box || seconds <= 0) { return; }
    box.checked = window.localStorage.getItem("pysched-dashboard-refresh") !== "off";
    box.addEventListener("change", function () {
      window.localStorage.setItem("pysched-dashboard-refresh", box.checked ? "on" : "off");
    });
    box.parentNode.hidden = false;
    window.setInterval(function () { refresh(box); }, seconds * 1000);
  });
}());
