// Live preview of the sign-up form: as rules are typed, ask the server which papers of the last
// days they match and show its (already escaped) answer, and its count ("12 papers in the last
// 7 days") right under the rules field, where it is seen on a phone. Without this script the form
// still works: the "Preview matches" button does the same with a full page load.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var rules = document.getElementById("rules");
  var out = document.getElementById("preview");
  var form = document.getElementById("signup");
  var count = document.getElementById("rules-count");
  var errors = document.getElementById("rules-error");
  if (!rules || !out || !form) {
    return;
  }
  var timer = null;
  var controller = null;

  function showCount() {
    if (!count) {
      return;
    }
    var source = out.querySelector("[data-count]");
    count.textContent = source ? source.textContent : "";
    count.hidden = !source;
  }

  // A rule's error shows once, under the field (where the server puts it after a sign-up), not
  // again in the preview below the buttons, out of sight on a phone. Only an answer about the rules
  // (200) moves: "busy" and "slow down" are about the preview and stay in it.
  function showErrors() {
    if (!errors) {
      return;
    }
    var found = out.querySelector("ul.error");
    errors.textContent = "";
    if (found) {
      while (found.firstChild) {
        errors.appendChild(found.firstChild);
      }
      found.remove();
    }
    errors.hidden = errors.children.length === 0;
    if (errors.hidden) {
      rules.removeAttribute("aria-invalid");
    } else {
      rules.setAttribute("aria-invalid", "true");
    }
  }

  function update() {
    if (controller) {
      controller.abort();
    }
    controller = new AbortController();
    var body = new URLSearchParams();
    body.set("rules", rules.value);
    var answered = false;
    out.setAttribute("aria-busy", "true");
    fetch("/preview", { method: "POST", body: body, credentials: "same-origin", signal: controller.signal })
      .then(function (response) {
        if (response.status === 503) {
          // Many previews at once on the server: ask again in a moment, unless typing does first.
          clearTimeout(timer);
          timer = setTimeout(update, 1000);
        }
        answered = response.ok;
        return response.text();
      })
      .then(function (html) {
        out.innerHTML = html;
        out.removeAttribute("aria-busy");
        showCount();
        if (answered) {
          showErrors();
        }
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
