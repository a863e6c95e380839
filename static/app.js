// A little progressive enhancement; every page works without it (no inline script: CSP).
(function () {
  "use strict";

  // Relative times ("3 hours ago") stay current while a page is open.
  var UNITS = [[31536000, "year"], [2592000, "month"], [86400, "day"], [3600, "hour"], [60, "minute"]];
  function relative(iso) {
    var seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (isNaN(seconds)) return null;
    var future = seconds < 0;
    seconds = Math.abs(seconds);
    for (var i = 0; i < UNITS.length; i++) {
      if (seconds >= UNITS[i][0]) {
        var n = Math.floor(seconds / UNITS[i][0]);
        var words = n + " " + UNITS[i][1] + (n === 1 ? "" : "s");
        return future ? "in " + words : words + " ago";
      }
    }
    return "just now";
  }
  function refreshRelative() {
    document.querySelectorAll("[data-relative]").forEach(function (el) {
      var text = relative(el.getAttribute("data-relative"));
      if (text) el.textContent = text;
    });
  }
  // The title of each <time> also shows the moment in the browser's own zone.
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) el.title = el.getAttribute("datetime") + "\n" + when.toString();
  });
  refreshRelative();
  setInterval(refreshRelative, 60000);

  // Search: a preset range and custom from/to exclude each other.
  var form = document.getElementById("search-form");
  if (form) {
    var from = form.querySelector("[name=from]");
    var to = form.querySelector("[name=to]");
    var radios = form.querySelectorAll("input[name=range]");
    // Choosing a preset (or "any time") clears from/to; typing a time selects "custom".
    radios.forEach(function (radio) {
      radio.addEventListener("change", function () {
        if (radio.checked && radio.value !== "custom") { from.value = ""; to.value = ""; }
      });
    });
    [from, to].forEach(function (input) {
      input.addEventListener("input", function () {
        var custom = form.querySelector("input[name=range][value=custom]");
        if (custom && input.value) custom.checked = true;
      });
    });
    // Do not send empty fields: the URL (and the permalink) stays short and readable.
    form.addEventListener("submit", function () {
      form.querySelectorAll("input, select").forEach(function (el) {
        if (el.name && !el.multiple && el.value === "" && el.type !== "radio") el.disabled = true;
      });
      var range = form.querySelector("input[name=range]:checked");
      if (range && range.value === "") radios.forEach(function (radio) { radio.disabled = true; });
    });
  }

  // Search: on a narrow screen the filters fold away once there are results, so the
  // results come first; the <details> stays open without this script.
  var options = document.querySelector("details.search-options[data-fold-narrow]");
  if (options && window.matchMedia("(max-width: 48rem)").matches) options.open = false;

  // Copy buttons (hidden in the HTML): shown only where the clipboard can be written.
  if (navigator.clipboard && window.isSecureContext) {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var text = button.textContent;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(button.getAttribute("data-copy")).then(
          function () { button.textContent = "Copied"; },
          function () { button.textContent = "Copy failed: select the text instead"; }
        );
        setTimeout(function () { button.textContent = text; }, 2000);
      });
    });
  }

  // Record timeline: "compare" needs one "from" and one "to", and two different events.
  var compare = document.getElementById("compare-form");
  if (compare) {
    var button = document.getElementById("compare-button");
    var update = function () {
      var a = compare.querySelector("input[name=from]:checked");
      var b = compare.querySelector("input[name=to]:checked");
      button.disabled = !(a && b && a.value !== b.value);
    };
    compare.addEventListener("change", update);
    update();
  }
})();

// --- Time zones (issue 12, ux-diff) ------------------------------------------------------
// Every zone select also offers the browser's own IANA zone (the server accepts any zone
// it knows, and answers 400 for one it does not); it is offered, never selected: the
// page's zone is the one in its URL. Browsers report ICU's name, which may be an older
// alias ("Asia/Calcutta" for the listed "Asia/Kolkata"), so options are compared by the
// zone they name, and a listed one is labelled rather than offered twice.
(function () {
  "use strict";
  function canonical(name) {
    try { return new Intl.DateTimeFormat("en", { timeZone: name }).resolvedOptions().timeZone; }
    catch (e) { return null; }
  }
  var own = null;
  try { own = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { own = null; }
  if (!own) return;
  var ownCanonical = canonical(own);
  document.querySelectorAll("select[name=tz]").forEach(function (select) {
    var option = Array.prototype.find.call(select.options, function (o) {
      return o.value === own || canonical(o.value) === ownCanonical;
    });
    if (!option) {
      option = document.createElement("option");
      option.value = own;
      select.appendChild(option);
    }
    option.textContent = option.value + " (this browser)";
    option.className = "browser-zone";
  });
})();
