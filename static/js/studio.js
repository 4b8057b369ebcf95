/* Flow Studio's small behaviours: focus management after htmx swaps, the confirm fragment's
   Cancel, and drag-and-drop reordering of routine steps (the ↑/↓ buttons are the keyboard
   alternative; every form also works without this file). No markup is built here. */
(function () {
  "use strict";

  // Move focus into a freshly loaded confirmation so keyboard users land on it.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && (target.id === "flow-confirm" || target.id === "schedule-confirm")) {
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
      return;
    }
    // A schedule's confirmation (its page lists many schedules): close it, back to the list.
    var scheduleArea = document.getElementById("schedule-confirm");
    if (scheduleArea && scheduleArea.contains(dismiss) && document.getElementById("schedules-h")) {
      event.preventDefault();
      scheduleArea.innerHTML = "";
      var heading = document.getElementById("schedules-h");
      heading.setAttribute("tabindex", "-1");
      heading.focus();
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

/* The dashboard's bulk actions: "select every flow on this page", the count of what is
   selected, and Cancel of a preview (without this file the rows are ticked one by one, or
   all those matching the filter chosen, and Cancel goes back to the list). */
(function () {
  "use strict";

  function form() { return document.getElementById("bulk-form"); }
  function boxes() { return document.querySelectorAll('input[name="ids"][form="bulk-form"]'); }

  // "3 selected", or every flow matching the filter; Preview waits for a selection.
  function update() {
    var bar = form();
    if (!bar) { return; }
    var all = document.getElementById("bulk-all");
    var ticked = 0;
    var rows = boxes();
    for (var i = 0; i < rows.length; i++) { if (rows[i].checked) { ticked += 1; } }
    var count = document.getElementById("bulk-count");
    var page = document.getElementById("bulk-select-page");
    if (page) {
      page.hidden = false;
      page.checked = rows.length > 0 && ticked === rows.length;
      page.indeterminate = ticked > 0 && ticked < rows.length;
    }
    var everything = all && all.checked;
    if (count) {
      // ("1,000", or "about 9,900" where the database's statistics stood in for a count)
      var matching = count.dataset.matchingText || String(Number(count.dataset.matching) || 0);
      count.textContent = everything ? "All " + matching + " matching selected"
        : ticked ? ticked + " selected" : "None selected";
    }
    var preview = document.getElementById("bulk-preview-button");
    if (preview) { preview.disabled = !everything && ticked === 0; }
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.id === "bulk-select-page") {
      var rows = boxes();
      for (var i = 0; i < rows.length; i++) { rows[i].checked = target.checked; }
    }
    if (target.id === "bulk-select-page" || target.id === "bulk-all" ||
        (target.name === "ids" && target.getAttribute("form") === "bulk-form")) {
      update();
    }
  });

  // A new page of the list (filters, pages, a row updated live): the count follows.
  document.addEventListener("htmx:afterSettle", update);
  document.addEventListener("live:swapped", update);
  document.addEventListener("DOMContentLoaded", update);

  // Cancel (or Close) in the dashboard's bulk panel: close it, back to the action bar.
  document.addEventListener("click", function (event) {
    var dismiss = event.target.closest(".js-dismiss");
    var panel = document.getElementById("bulk-panel");
    if (!dismiss || !panel || !panel.contains(dismiss) || !form()) { return; }
    event.preventDefault();
    panel.innerHTML = "";
    var action = document.getElementById("bulk-action");
    if (action) { action.focus(); }
  });

  // Focus lands on a freshly shown preview's first control; once the action started (its
  // progress shown), the selection is cleared for the next one.
  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (!target || target.id !== "bulk-panel") { return; }
    if (target.querySelector("[data-live-bulk]")) {
      var picked = document.querySelectorAll('#bulk-all, input[name="ids"][form="bulk-form"]');
      for (var i = 0; i < picked.length; i++) { picked[i].checked = false; }
      var reason = document.getElementById("bulk-reason");
      if (reason) { reason.value = ""; }
      update();
      return;
    }
    var first = target.querySelector("#bulk-confirm-reason, .js-dismiss");
    if (first) { first.focus(); }
  });
})();
