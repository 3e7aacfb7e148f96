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
  }
  document.body.addEventListener("htmx:afterSettle", reapply);

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
      selected.clear();
      allMatching = false;
      reapply();
    }
  });
})();
