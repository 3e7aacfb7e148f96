/* Tollgate approvals: the inbox's selection and bulk progress, keyboard shortcuts, and htmx's
   handling of form errors. Written here, no library. */
(function () {
  "use strict";
  if (!window.htmx) return;

  // A form refused with 422 (a rejection without a reason) carries its errors: show them. Without
  // this htmx drops every 4xx answer and the form just sits there.
  htmx.config.responseHandling = [{ code: "422", swap: true }].concat(htmx.config.responseHandling);

  // ---- the inbox's selection survives live refreshes and filter changes ---------------------------
  var selected = new Set();
  var allMatching = false;
  var currentTask = null;  // the row j/k highlighted, kept through refreshes

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!(box instanceof HTMLInputElement) || box.getAttribute("form") !== "bulk-form") return;
    if (box.name === "task") { if (box.checked) selected.add(box.value); else selected.delete(box.value); }
    if (box.name === "all") allMatching = box.checked;
  });

  function reapply() {
    document.querySelectorAll('input[form="bulk-form"][name="task"]').forEach(function (box) {
      box.checked = selected.has(box.value);
    });
    var all = document.getElementById("select-all-matching");
    if (all) all.checked = allMatching;
    var row = currentTask && document.querySelector('tr.task-row[data-task="' + currentTask + '"]');
    if (row) { row.classList.add("is-current"); row.setAttribute("aria-current", "true"); }
  }
  document.body.addEventListener("htmx:afterSettle", reapply);

  // Tasks ticked on another page of the inbox (or that a live refresh has since removed: someone else
  // decided them) are still part of the selection: they go with the form as hidden fields, and the
  // answer says what became of each.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || form.id !== "bulk-form") return;
    form.querySelectorAll('input[type="hidden"][name="task"]').forEach(function (old) { old.remove(); });
    var shown = {};
    document.querySelectorAll('input[type="checkbox"][form="bulk-form"][name="task"]').forEach(function (box) {
      shown[box.value] = true;
    });
    selected.forEach(function (id) {
      if (shown[id]) return;
      var field = document.createElement("input");
      field.type = "hidden";
      field.name = "task";
      field.value = id;
      form.appendChild(field);
    });
  }, true);

  // ---- bulk progress: polled while the decision runs -----------------------------------------------
  var progressTimer = null;
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || form.id !== "bulk-form") return;
    var region = document.getElementById("bulk-progress");
    var run = document.getElementById("bulk-run").value;
    var url = form.dataset.progress.replace("00000000-0000-0000-0000-000000000000", run);
    region.textContent = "Starting…";
    progressTimer = window.setInterval(function () {
      fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : ""; })
        .then(function (text) { if (progressTimer !== null && text) region.textContent = text; });
    }, 300);
  });
  document.body.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (!(form instanceof HTMLFormElement) || form.id !== "bulk-form") return;
    window.clearInterval(progressTimer);
    progressTimer = null;
    document.getElementById("bulk-progress").textContent = "";
    if (event.detail.successful) {
      form.querySelectorAll('input[type="hidden"][name="task"]').forEach(function (old) { old.remove(); });
      selected.clear();
      allMatching = false;
      reapply();
    }
  });

  // ---- the task page: one decision, one answer ---------------------------------------------------
  // While a decision is in flight its answer will show the task as it then is, so the live events it
  // causes (the decision stored, the workflow closing the task) need no re-fetch of their own; one
  // refresh afterwards covers anything that happened meanwhile and left the task open.
  var deciding = false;
  var missed = false;
  window.tollgateDeciding = function () {
    if (deciding) missed = true;
    return deciding;
  };
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt.id === "decision-form") { deciding = true; missed = false; }
  });
  document.body.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.elt.id !== "decision-form") return;
    deciding = false;
    var live = document.getElementById("task-live");
    if (missed && live && document.getElementById("decision-form")) htmx.trigger(live, "tollgate:refresh");
    missed = false;
  });
  // A half-typed comment is not replaced by a refresh, unless the task closed (no form comes back).
  document.body.addEventListener("htmx:oobBeforeSwap", function (event) {
    if (event.detail.target.id !== "decision" || !window.tollgateHasDraft || !window.tollgateHasDraft()) return;
    var incoming = event.detail.fragment;
    var stillOpen = incoming && incoming.querySelector && incoming.querySelector("#decision-form");
    if (stillOpen) event.detail.shouldSwap = false;
  });

  // ---- keyboard shortcuts -------------------------------------------------------------------------
  var HELP = [
    ["j / k", "next / previous task in the inbox"],
    ["o", "open the highlighted task"],
    ["x", "select the highlighted task (for a bulk decision)"],
    ["a", "approve (the open task, or the selected tasks in the inbox)"],
    ["r", "reject: puts the cursor in the reason; Ctrl+Enter sends it"],
    ["n", "after a decision: the next task in this view"],
    ["u", "back to the inbox"],
    ["?", "show or hide this help"],
  ];

  function typing(target) {
    if (!(target instanceof HTMLElement)) return false;
    var tag = target.tagName;
    return target.isContentEditable || tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("tr.task-row")); }

  function current() { return document.querySelector("tr.task-row.is-current"); }

  function move(step) {
    var all = rows();
    if (!all.length) return;
    var index = all.indexOf(current());
    var next = all[Math.max(0, Math.min(all.length - 1, index < 0 ? 0 : index + step))];
    all.forEach(function (row) { row.classList.remove("is-current"); row.removeAttribute("aria-current"); });
    next.classList.add("is-current");
    currentTask = next.dataset.task;
    next.setAttribute("aria-current", "true");
    var link = next.querySelector('td[data-label="Request"] a');
    if (link) link.focus({ preventScroll: true });
    next.scrollIntoView({ block: "nearest" });
  }

  function toggleHelp() {
    var box = document.getElementById("shortcut-help");
    if (box) { box.remove(); return; }
    box = document.createElement("div");
    box.id = "shortcut-help";
    box.className = "card shortcuts";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", "Keyboard shortcuts");
    var title = document.createElement("h2");
    title.textContent = "Keyboard shortcuts";
    box.appendChild(title);
    var list = document.createElement("dl");
    HELP.forEach(function (pair) {
      var key = document.createElement("dt");
      var kbd = document.createElement("kbd");
      kbd.textContent = pair[0];
      key.appendChild(kbd);
      var what = document.createElement("dd");
      what.textContent = pair[1];
      list.appendChild(key);
      list.appendChild(what);
    });
    box.appendChild(list);
    var main = document.querySelector("main") || document.body;
    main.insertBefore(box, main.firstChild);
  }

  function click(selector) {
    var button = document.querySelector(selector);
    if (button && !button.disabled) { button.click(); return true; }
    return false;
  }

  var intent = "approve";
  document.addEventListener("keydown", function (event) {
    // Ctrl+Enter in a reason box sends it the way the last shortcut (a or r) chose.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && typing(event.target)) {
      var form = event.target.form;
      var send = form && form.querySelector('button[name="choice"][value="' + intent + '"]');
      if (send) { event.preventDefault(); send.click(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var inbox = document.getElementById("bulk-form");
    var handled = true;
    switch (event.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "o": {
        var row = current();
        var link = row && row.querySelector('td[data-label="Request"] a');
        if (link) window.location.href = link.href; else handled = false;
        break;
      }
      case "x": {
        var box = current() && current().querySelector('input[name="task"]');
        if (box) { box.checked = !box.checked; box.dispatchEvent(new Event("change", { bubbles: true })); }
        break;
      }
      case "a":
        intent = "approve";
        if (inbox) {
          // Nothing ticked: the highlighted task alone.
          if (!selected.size && !allMatching) {
            var only = current() && current().querySelector('input[name="task"]');
            if (only) { only.checked = true; only.dispatchEvent(new Event("change", { bubbles: true })); }
          }
          click('#bulk-form button[value="approve"]');
        } else {
          click('#decision-form button[value="approve"]');
        }
        break;
      case "r": {
        intent = "reject";
        var reason = document.querySelector(inbox ? "#bulk-comment" : "#decision-form textarea");
        if (reason) reason.focus(); else handled = false;
        break;
      }
      case "n": if (!click("#next-task")) handled = false; break;
      case "u": {
        var back = document.getElementById("back-to-inbox");
        if (back) window.location.href = back.href; else handled = false;
        break;
      }
      case "?": toggleHelp(); break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });
})();
