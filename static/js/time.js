/* AI Farm: times as text, the same as the pages' app/timefmt.py. window.AifarmTime.relative(iso[, nowMs]). */
(function () {
  "use strict";

  var NO_OFFSET = /T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/;

  function duration(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) { return "—"; }
    if (seconds < 60) { return String(Math.round(seconds * 10) / 10) + " s"; }
    var total = Math.trunc(seconds);
    if (total < 3600) { return Math.floor(total / 60) + " min"; }
    if (total < 86400) {
      var minutes = Math.floor(total / 60) % 60;
      return Math.floor(total / 3600) + " h" + (minutes ? " " + minutes + " min" : "");
    }
    var hours = Math.floor(total / 3600) % 24;
    return Math.floor(total / 86400) + " d" + (hours ? " " + hours + " h" : "");
  }

  function relative(iso, nowMs) {
    if (typeof iso !== "string" || iso === "") { return "—"; }
    // A time without an offset is UTC, as the database keeps it (Date.parse would take it as local time).
    var t = Date.parse(NO_OFFSET.test(iso) ? iso + "Z" : iso);
    if (isNaN(t)) { return "—"; }
    var seconds = ((nowMs === undefined ? Date.now() : nowMs) - t) / 1000;
    var whole = Math.trunc(Math.abs(seconds));
    if (whole === 0) { return "just now"; }
    return seconds < 0 ? "in " + duration(whole) : duration(whole) + " ago";
  }

  window.AifarmTime = { relative: relative, duration: duration };
})();
