/* The browser's time zone, for the server to show times in (config.middleware.ViewerTimezoneMiddleware).
   Set on every page, the login page included, so the pages after it are in the viewer's zone. */
(function () {
  "use strict";
  var zone;
  try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
  // IANA names ("Europe/Berlin", "Etc/GMT+5") need no escaping in a cookie; anything else is skipped.
  if (!zone || !/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) return;
  if (document.cookie.split("; ").indexOf("tollgate_tz=" + zone) !== -1) return;
  var secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = "tollgate_tz=" + zone + "; path=/; max-age=31536000; SameSite=Lax" + secure;
})();
