/* AI Farm: the submit form shows the options of the chosen model and dataset only. */
(function () {
  "use strict";

  function sync(select) {
    var kind = select.getAttribute("data-recipe-select");
    var chosen = select.value;
    Array.prototype.forEach.call(document.querySelectorAll('[data-recipe-help="' + kind + '"]'), function (block) {
      block.hidden = block.getAttribute("data-recipe") !== chosen;
    });
    var option = select.options[select.selectedIndex];
    var description = document.querySelector('[data-recipe-description="' + kind + '"]');
    if (description && option && option.getAttribute("data-description")) {
      description.textContent = option.getAttribute("data-description");
    }
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-recipe-select]"), function (select) {
      sync(select);
      select.addEventListener("change", function () { sync(select); });
    });
    var distributed = document.getElementById("f-distributed");
    var clients = document.getElementById("f-n_clients");
    if (distributed && clients) {
      distributed.addEventListener("change", function () {
        if (!distributed.checked) { clients.value = "1"; }
        else if (clients.value === "1") { clients.value = "2"; }
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
