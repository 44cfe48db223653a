// Copy buttons: <button data-copy-target="INPUT_ID" data-copy-status="STATUS_ID">.
(function () {
  "use strict";

  function announce(button, text) {
    var status = document.getElementById(button.getAttribute("data-copy-status"));
    if (status) {
      status.textContent = text;
    }
    if (text === "Copied") {
      button.textContent = "Copied";
    }
    window.setTimeout(function () {
      button.textContent = "Copy";
      if (status) {
        status.textContent = "";
      }
    }, 2500);
  }

  function fallbackCopy(input) {
    input.focus();
    input.select();
    try {
      return document.execCommand("copy");
    } catch (err) {
      return false;
    }
  }

  function copy(button) {
    var input = document.getElementById(button.getAttribute("data-copy-target"));
    if (!input) {
      return;
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        function () { announce(button, "Copied"); },
        function () { announce(button, fallbackCopy(input) ? "Copied" : "Press Ctrl+C to copy"); }
      );
    } else {
      announce(button, fallbackCopy(input) ? "Copied" : "Press Ctrl+C to copy");
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (button) {
      copy(button);
    }
  });
})();
