/* An LTM run page's history (loaded by ltm_run.html only): the slider says which event it
   points at while it moves; a past view, once loaded, puts its address in the bar and keeps
   its "of M" and the slider's end following the run (the live area, hidden meanwhile, is
   swapped by live.js or its poll); "Back to now" and a confirmation's Cancel close without a
   round trip. Everything also works without this file, by page loads. No markup is built. */
(function () {
  "use strict";

  var page = document.querySelector("[data-live-ltm]");
  if (!page) { return; }

  function past() { return document.getElementById("ltm-past"); }

  // The slider's reading while it moves (the view itself loads on release: a change).
  document.addEventListener("input", function (event) {
    var range = event.target;
    if (!range.classList || !range.classList.contains("history-range")) { return; }
    var at = document.getElementById(range.id + "-at");
    if (at) { at.textContent = range.value; }
  });

  // The run goes on while the past shows: its newest event number follows the live area.
  function follow() {
    var live = document.getElementById("ltm-run-live");
    var view = past();
    if (!live || !view || !view.classList.contains("viewing")) { return; }
    var seq = Number(live.dataset.seq);
    if (!(seq > 0)) { return; }
    view.querySelectorAll("[data-history-now]").forEach(function (el) { el.textContent = String(seq); });
    view.querySelectorAll(".history-range").forEach(function (el) { el.max = String(seq); });
    var loaded = Number(view.dataset.seq);
    view.querySelectorAll(".js-moved-on").forEach(function (el) { el.hidden = !(seq > loaded); });
  }
  if (window.MutationObserver) {
    new MutationObserver(follow).observe(page, { childList: true });
  }

  function backToNow(link) {
    var view = past();
    if (view) {
      view.innerHTML = "";
      view.className = "ltm-past";
      view.removeAttribute("data-url");
    }
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", link.getAttribute("href"));
    }
    var heading = document.getElementById("history-h");
    if (heading) { heading.focus(); }
  }

  document.addEventListener("click", function (event) {
    if (!event.target.closest) { return; }
    var now = event.target.closest(".js-now");
    if (now && page.contains(now)) {
      event.preventDefault();
      backToNow(now);
      return;
    }
    var dismiss = event.target.closest(".js-dismiss");
    var area = document.getElementById("ltm-history-confirm");
    if (dismiss && area && area.contains(dismiss)) {
      event.preventDefault();
      area.innerHTML = "";
      var opener = document.querySelector("#ltm-past .history-actions a");
      if (opener) { opener.focus(); }
    }
  });

  // After a swap: a past view's address goes in the bar (a reload shows it again) and focus
  // lands where the user goes on: an opened confirmation's first field (or the one with an
  // error), the slider they moved, else the view's heading; after a rollback, its notice.
  // (New content announces itself with htmx:load; what asked for it is noted before the
  // request, while it is still in the page.)
  var asked = null;
  document.addEventListener("htmx:beforeRequest", function (event) {
    var detail = event.detail || {};
    asked = {
      slider: !!(detail.elt && detail.elt.classList && detail.elt.classList.contains("history-bar")),
      post: !!(detail.requestConfig && String(detail.requestConfig.verb).toLowerCase() === "post")
    };
  });

  document.addEventListener("htmx:load", function (event) {
    var loaded = event.target;
    if (!loaded || !loaded.closest) { return; }
    var how = asked || { slider: false, post: false };
    if (loaded.classList.contains("confirm") && loaded.closest("#ltm-history-confirm")) {
      var first = loaded.querySelector("input:not([type=hidden]), button");
      if (first) { first.focus(); }
      return;
    }
    if (loaded.id !== "ltm-past" || !page.contains(loaded)) { return; }
    if (!loaded.classList.contains("viewing")) {
      var notice = document.getElementById("ltm-notice");
      if (notice && how.post) { notice.focus(); }
      return;
    }
    if (loaded.dataset.url && window.history && window.history.replaceState) {
      window.history.replaceState(null, "", loaded.dataset.url);
    }
    follow();
    var box = loaded.querySelector("#ltm-history-confirm .confirm");
    var focus = null;
    if (box) {
      focus = box.querySelector("[aria-invalid=true], input:not([type=hidden]), button");
    } else if (how.slider) {
      focus = loaded.querySelector(".history-range");
    } else {
      focus = document.getElementById("past-h");
    }
    if (focus) { focus.focus(); }
  });
})();
