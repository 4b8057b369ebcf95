/* Live updates: one websocket per page, to /ws/live/. The server pushes each event of the
   flows (or LTM run) this page shows, in sequence order, with the page's fragments rendered
   from the same templates as the page; this file only swaps them in by element id. It never
   builds markup. The database is the truth: on every (re)connection the page says what it
   shows — the sequence number its flow or run area was rendered at, each dashboard row's and
   the newest flow on the dashboard — and the server sends what differs; on a gap the page asks
   again from the last event it has. Without this file, the page polls. */
(function () {
  "use strict";

  var body = document.body;
  var flowEl = document.querySelector("[data-live-flow]");
  var runEl = document.querySelector("[data-live-ltm]");
  var dashboard = document.querySelector("[data-live-dashboard]");
  var indicator = document.getElementById("live-indicator");
  if (!flowEl && !runEl && !dashboard) { return; }

  var socket = null;
  var attempts = 0;
  var pending = null;  // an update held back while the user types in the live area
  var MAX_ROWS = 500;  // dashboard rows reported at once (the server reads no more)
  var watched = flowEl ? { action: "watch_flow", flow: Number(flowEl.dataset.liveFlow), since: 0 }
              : runEl ? { action: "watch_ltm", run: runEl.dataset.liveLtm, since: 0 }
              : null;
  var areaId = flowEl ? "flow-live" : "ltm-run-live";
  var shown = 0;  // the sequence number of the newest fragments swapped in

  // The sequence number the flow's (or run's) live area shows: it was rendered with it, in
  // the page, a fragment pushed over the socket or a poll while offline.
  function shownSeq() {
    var area = document.getElementById(areaId);
    var seq = Number(area ? area.dataset.seq : (flowEl || runEl).dataset.liveSeq);
    return seq > 0 ? seq : 0;
  }

  // What the dashboard shows: each row's flow and sequence number, and, when it adds new
  // flows as they come, the newest flow it has.
  function dashboardShows() {
    var payload = { action: "watch_dashboard", rows: {} };
    var rows = dashboard.querySelectorAll("tr[data-flow]");
    var newest = 0;
    for (var i = 0; i < rows.length; i++) {
      var id = Number(rows[i].dataset.flow);
      if (!(id > 0)) { continue; }
      newest = Math.max(newest, id);
      if (i < MAX_ROWS) { payload.rows[id] = Number(rows[i].dataset.seq) || 0; }
    }
    var table = document.getElementById("flow-table");
    if (table && table.dataset.liveInsert === "true") { payload.after = newest; }
    return payload;
  }

  function setStatus(live) {
    body.dataset.live = live ? "on" : "off";
    if (indicator) {
      indicator.textContent = live ? "Live" : "Offline";
      indicator.className = "live-indicator " + (live ? "is-live" : "is-offline");
      indicator.title = live ? "Updates arrive as they happen" : "Reconnecting; the page polls meanwhile";
    }
  }

  function editing(area) {
    var active = document.activeElement;
    return area && active && area.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName);
  }

  function swap(id, html) {
    var old = document.getElementById(id);
    if (!old) { return; }
    if (editing(old)) { pending = { id: id, html: html }; return; }
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var fresh = holder.content.firstElementChild;
    if (!fresh) { return; }
    // A confirmation the user has open survives the update (it carries its own version).
    var confirm = old.querySelector("#flow-confirm");
    var freshConfirm = fresh.querySelector("#flow-confirm");
    if (confirm && freshConfirm && confirm.childElementCount) { freshConfirm.replaceWith(confirm); }
    old.replaceWith(fresh);
    if (window.htmx) { window.htmx.process(fresh); }
  }

  document.addEventListener("focusout", function () {
    setTimeout(function () {
      if (pending && !editing(document.getElementById(pending.id))) {
        var update = pending; pending = null; swap(update.id, update.html);
      }
    }, 0);
  });

  // While the socket is up the page does not poll; while it is down, htmx polling goes on.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var trigger = event.detail.elt && event.detail.elt.getAttribute("hx-trigger");
    if (body.dataset.live === "on" && trigger && trigger.indexOf("every") === 0) {
      event.preventDefault();
    }
  });

  function onMessage(message) {
    if (message.type === "event" && watched) {
      if (message.seq > watched.since + 1) {  // a gap: ask for what is missing
        send(watched);
        return;
      }
      watched.since = Math.max(watched.since, message.seq);
    } else if (message.type === "fragments" && watched) {
      if (message.seq < shown) { return; }  // an older render came late
      shown = message.seq;
      Object.keys(message.html || {}).forEach(function (id) { swap(id, message.html[id]); });
    } else if (message.type === "row" && dashboard) {
      var row = document.getElementById("flow-" + message.id + "-row");
      if (row) {
        swap(row.id, message.html);
      } else if (message.html && (document.getElementById("flow-table") || {}).dataset &&
                 document.getElementById("flow-table").dataset.liveInsert === "true") {
        var tbody = dashboard.querySelector("tbody");
        if (tbody) {
          var holder = document.createElement("template");
          holder.innerHTML = message.html.trim();
          var empty = dashboard.querySelector(".empty-state");
          if (empty) { empty.remove(); }
          var wrap = dashboard.querySelector(".table-wrap");
          if (wrap) { wrap.hidden = false; }
          var count = dashboard.querySelector(".count");
          var total = count ? parseInt(count.textContent, 10) + 1 : NaN;
          if (!isNaN(total)) { count.textContent = total + (total === 1 ? " flow" : " flows"); }
          tbody.insertBefore(holder.content.firstElementChild, tbody.firstChild);
        }
      }
    }
  }

  function send(payload) {
    if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(payload)); }
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/ws/live/");
    socket.onopen = function () {
      attempts = 0;
      setStatus(true);
      // Say what the page shows: the server answers with whatever changed meanwhile (while
      // the server restarted, say), so the page converges without polling.
      if (watched) { watched.since = shownSeq(); send(watched); }
      if (dashboard) { send(dashboardShows()); }
    };
    socket.onmessage = function (event) {
      try { onMessage(JSON.parse(event.data)); } catch (error) { /* ignore a bad frame */ }
    };
    socket.onclose = function () {
      setStatus(false);
      attempts += 1;
      var delay = Math.min(10000, 500 * Math.pow(2, attempts - 1)) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  setStatus(false);
  connect();
})();
