// mailer console: live batch counts, live template preview, CSV import progress and
// confirmations. Every page works without this file; it only adds liveness.
"use strict";

(function () {
  function csrfToken() {
    var main = document.getElementById("main");
    return main ? main.getAttribute("data-csrf") || "" : "";
  }

  // Forms that ask before doing something that cannot be undone.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // A batch's page: poll its counts until the batch is final.
  var live = document.getElementById("live");
  if (live && live.getAttribute("data-final") !== "true") {
    var url = live.getAttribute("data-live-url");
    var format = new Intl.NumberFormat("en-US");
    var poll = function () {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); throw new Error("signed out"); }
          return response.json();
        })
        .then(function (data) {
          Object.keys(data.counts).forEach(function (name) {
            var cell = live.querySelector('[data-count="' + name + '"]');
            if (cell) cell.textContent = format.format(data.counts[name]);
          });
          var status = live.querySelector('[data-field="status"]');
          status.textContent = data.status;
          status.className = "status s-" + data.status.toLowerCase();
          var bar = live.querySelector('[data-field="progress"]');
          bar.max = data.counts.total || 1;
          bar.value = data.counts.finished;
          live.querySelector('[data-field="updated"]').textContent =
            "updated " + new Date().toLocaleTimeString();
          if (data.final) {
            live.setAttribute("data-final", "true");
            var result = live.querySelector('[data-field="result"]');
            if (result && data.resultText) result.textContent = "(" + data.resultText + ")";
            var completed = document.querySelector('[data-field="completed"]');
            if (completed && data.completedAt) {
              completed.textContent = data.completedAt.replace("T", " ").slice(0, 19) + " UTC";
            }
            var cancel = document.getElementById("cancel-form");
            if (cancel) cancel.hidden = true;
          } else {
            window.setTimeout(poll, 1000);
          }
        })
        .catch(function () { window.setTimeout(poll, 3000); });
    };
    window.setTimeout(poll, 1000);
  }

  // The template editor: preview as you type (the Preview button does it without JS).
  var form = document.getElementById("template-form");
  var previewButton = document.getElementById("preview-button");
  if (form && previewButton) {
    var timer = null;
    var refresh = function () { form.requestSubmit(previewButton); };
    form.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(refresh, 300);
    });
    refresh();
  }

  // CSV import: show the upload's progress, then the result, without leaving the page.
  var importForm = document.getElementById("import-form");
  if (importForm) {
    importForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var bar = document.getElementById("import-progress");
      var status = document.getElementById("import-status");
      var request = new XMLHttpRequest();
      request.open("POST", importForm.action);
      request.setRequestHeader("Accept", "application/json");
      request.setRequestHeader("X-CSRF-Token", csrfToken());
      bar.hidden = false;
      bar.value = 0;
      status.textContent = "Uploading…";
      request.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
      });
      request.upload.addEventListener("load", function () {
        bar.value = 100;
        status.textContent = "Uploaded; importing…";
      });
      request.addEventListener("load", function () {
        if (request.status !== 200) {
          status.textContent = "The import failed (HTTP " + request.status + ").";
          return;
        }
        var result = JSON.parse(request.responseText);
        status.textContent = "Imported " + result.rows + " row(s): " + result.added + " added, " +
          result.skipped + " already suppressed or repeated, " + result.invalid + " invalid.";
      });
      request.addEventListener("error", function () { status.textContent = "The upload failed."; });
      request.send(new FormData(importForm));
    });
  }
})();
