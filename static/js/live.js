/* Tollgate live pages. One websocket per tab; each frame is a trigger
   ({"event": "task", "task": 7, "kind": "closed"}) that makes the page's
   htmx regions re-fetch their server-rendered HTML. When the socket is down
   the indicator says so, it reconnects with backoff, and the page polls
   every 15 seconds instead, so it stays correct without websockets. */
(function () {
  "use strict";
  var indicator = document.getElementById("live");
  if (!indicator || !window.htmx) return;
  var delay = 1000;
  var poll = null;
  var pending = {};
  var flush = null;

  function show(state, text) {
    indicator.dataset.state = state;
    indicator.textContent = text;
  }

  function changed(detail) {
    htmx.trigger(document.body, "tollgate:changed", detail);
  }

  function startPolling() {
    if (poll === null) {
      poll = window.setInterval(function () { htmx.trigger(document.body, "tollgate:poll", {}); }, 15000);
    }
  }

  // A half-typed comment is not thrown away by a refresh, unless the task closed.
  window.tollgateHasDraft = function () {
    var box = document.querySelector("#decision textarea");
    return Boolean(box && box.value.trim());
  };

  function connect() {
    if (!("WebSocket" in window)) { show("down", "updates every 15s"); startPolling(); return; }
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/ws/live/");
    socket.onopen = function () {
      var wasPolling = poll !== null;
      show("up", "live");
      delay = 1000;
      if (wasPolling) {
        window.clearInterval(poll);
        poll = null;
        htmx.trigger(document.body, "tollgate:poll", {});  // catch up on what we missed
      }
    };
    socket.onmessage = function (message) {
      var frame;
      try { frame = JSON.parse(message.data); } catch (error) { return; /* not ours */ }
      // A burst (decision, vote, closed) becomes one trigger per task; "closed" wins.
      var key = frame.event + ":" + (frame.task || "");
      var earlier = pending[key];
      if (!earlier || earlier.kind !== "closed") { pending[key] = frame; }
      if (flush === null) {
        flush = window.setTimeout(function () {
          var frames = pending;
          pending = {};
          flush = null;
          Object.keys(frames).forEach(function (k) { changed(frames[k]); });
        }, 60);
      }
    };
    socket.onclose = function () {
      show("down", "offline, reconnecting…");
      startPolling();
      window.setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
