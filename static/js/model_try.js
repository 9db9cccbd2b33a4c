/* AI Farm: a language model's answer to the prompt box, shown as the agent streams it. */
(function () {
  "use strict";

  function submit(event) {
    var form = event.target;
    if (!form.matches || !form.matches("[data-model-try]")) {
      return;
    }
    event.preventDefault();
    var output = form.querySelector("[data-model-answer]");
    var button = form.querySelector("button");
    output.textContent = "";
    button.disabled = true;
    fetch(form.action, {method: "POST", body: new URLSearchParams(new FormData(form)), credentials: "same-origin"})
      .then(function (response) {
        var reader = response.body.getReader();
        var decoder = new TextDecoder();
        function read() {
          return reader.read().then(function (part) {
            if (part.done) {
              output.textContent += decoder.decode();
              return;
            }
            output.textContent += decoder.decode(part.value, {stream: true});
            return read();
          });
        }
        return read();
      })
      .catch(function (error) { output.textContent += "\n[" + error + "]"; })
      .then(function () { button.disabled = false; });
  }

  document.addEventListener("submit", submit);
})();
