// Period presets (dashboard/periods.py) follow what is typed in the form: without script a
// preset link keeps the filters the page was rendered with; with it, the form's current
// fields (zone, types, actor...) go with the preset's from/to. No inline script: CSP.
(function () {
  "use strict";
  document.querySelectorAll("ul.period-presets[data-form]").forEach(function (list) {
    var form = document.getElementById(list.getAttribute("data-form"));
    if (!form) return;
    list.addEventListener("click", function (event) {
      var link = event.target.closest("a[href]");
      if (!link) return;
      var target = new URL(link.href, window.location.href);
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, name) {
        if (name === "from" || name === "to" || name === "cursor" || value === "") return;
        params.append(name, value);
      });
      // The preset's own bounds, and what the link adds beyond the form (count=1).
      target.searchParams.forEach(function (value, name) {
        var field = form.elements[name];
        var own = !field || field.type === "submit";  // not a field the user fills in
        if (name === "from" || name === "to" || own) params.set(name, value);
      });
      event.preventDefault();
      window.location.assign(target.pathname + "?" + params.toString());
    });
  });
})();
