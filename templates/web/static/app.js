// Live preview of the sign-up form: as rules are typed, ask the server which papers of the last
// days they match and show its (already escaped) answer. Without this script the form still works:
// the "Preview matches" button does the same with a full page load.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var rules = document.getElementById("rules");
  var out = document.getElementById("preview");
  var form = document.getElementById("signup");
  if (!rules || !out || !form) {
    return;
  }
  var timer = null;
  var controller = null;

  function update() {
    if (controller) {
      controller.abort();
    }
    controller = new AbortController();
    var body = new URLSearchParams();
    body.set("rules", rules.value);
    out.setAttribute("aria-busy", "true");
    fetch("/preview", { method: "POST", body: body, credentials: "same-origin", signal: controller.signal })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        out.innerHTML = html;
        out.removeAttribute("aria-busy");
      })
      .catch(function () { /* aborted by a newer request, or offline: keep what is shown */ });
  }

  rules.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(update, 300);
  });
  if (rules.value.trim()) {
    update();
  }
})();
