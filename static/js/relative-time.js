/* Relative hints beside absolute times: "due 2026-12-01 23:20 CET (in 2 hours)". The absolute time,
   rendered by the server in the viewer's zone (approvals/_time.html), is what the page says; the hint
   is computed here from its datetime attribute and kept current as time passes, and again after every
   htmx swap. Without JavaScript the absolute time stands alone. */
(function () {
  "use strict";
  function phrase(ms) {
    var seconds = Math.abs(ms) / 1000, count = Math.round(seconds / 60), unit = "minute";
    if (seconds < 45) return ms > 0 ? "in a moment" : "just now";
    // Rounded first, then the unit chosen, so 59 min 59 s reads "1 hour", never "60 minutes".
    if (count >= 60) { count = Math.round(seconds / 3600); unit = "hour"; }
    if (unit === "hour" && count >= 24) { count = Math.round(seconds / 86400); unit = "day"; }
    var text = count + " " + unit + (count === 1 ? "" : "s");
    return ms > 0 ? "in " + text : text + " ago";
  }
  function update() {
    var now = Date.now();
    document.querySelectorAll("time[data-relative]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      var hint = el.nextElementSibling;
      if (!hint || !hint.classList.contains("relative-hint")) {
        hint = document.createElement("span");
        hint.className = "relative-hint";
        el.insertAdjacentElement("afterend", hint);
      }
      hint.textContent = " (" + phrase(at - now) + ")";
    });
  }
  window.tollgateRelativeTimes = update;
  document.addEventListener("DOMContentLoaded", update);
  document.addEventListener("htmx:afterSettle", update);
  window.setInterval(update, 20000);
})();
