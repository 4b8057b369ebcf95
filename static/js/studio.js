/* Flow Studio's small behaviours: focus management after htmx swaps, the confirm fragment's
   Cancel, and drag-and-drop reordering of routine steps (the ↑/↓ buttons are the keyboard
   alternative; every form also works without this file). No markup is built here. */
(function () {
  "use strict";

  // Move focus into a freshly loaded confirmation so keyboard users land on it.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "flow-confirm") {
      var first = target.querySelector("select, input:not([type=hidden]), button");
      if (first) { first.focus(); }
    }
  });

  // Cancel in a confirmation: with JS, just close it; without, the link reloads the flow.
  document.addEventListener("click", function (event) {
    var dismiss = event.target.closest(".js-dismiss");
    if (!dismiss) { return; }
    var area = document.getElementById("flow-confirm");
    if (area && area.contains(dismiss)) {
      event.preventDefault();
      area.innerHTML = "";
      var opener = document.querySelector("#flow-overrides a");
      if (opener) { opener.focus(); }
    }
  });

  // Drag and drop of builder steps: reorder the <li> (their hidden inputs give the order),
  // then submit the builder's refresh button so the server renders numbers and preview.
  var dragged = null;
  document.addEventListener("dragstart", function (event) {
    var item = event.target.closest && event.target.closest("[data-sortable] > li");
    if (!item) { return; }
    dragged = item;
    item.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", item.dataset.key || "");
  });
  document.addEventListener("dragover", function (event) {
    var item = event.target.closest && event.target.closest("[data-sortable] > li");
    if (!dragged || !item || item === dragged || item.parentNode !== dragged.parentNode) { return; }
    event.preventDefault();
    document.querySelectorAll(".drop-target").forEach(function (el) { el.classList.remove("drop-target"); });
    item.classList.add("drop-target");
  });
  document.addEventListener("drop", function (event) {
    var item = event.target.closest && event.target.closest("[data-sortable] > li");
    if (!dragged || !item || item === dragged || item.parentNode !== dragged.parentNode) { return; }
    event.preventDefault();
    var list = item.parentNode;
    var items = Array.prototype.slice.call(list.children);
    if (items.indexOf(dragged) < items.indexOf(item)) {
      list.insertBefore(dragged, item.nextSibling);
    } else {
      list.insertBefore(dragged, item);
    }
    var form = list.closest("form");
    var refresh = document.getElementById("builder-refresh");
    if (form && refresh) { form.requestSubmit(refresh); }
  });
  document.addEventListener("dragend", function () {
    if (dragged) { dragged.classList.remove("dragging"); }
    document.querySelectorAll(".drop-target").forEach(function (el) { el.classList.remove("drop-target"); });
    dragged = null;
  });
})();
