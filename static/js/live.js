/* Live updates: one websocket per page, to /ws/live/. The server pushes each event of the
   flows (or LTM run) this page shows, in sequence order, with the page's fragments rendered
   from the same templates as the page; this file only swaps them in by element id. It never
   builds markup. The database is the truth: on every (re)connection the page says what it
   shows — the sequence number its flow or run area was rendered at, each dashboard row's and
   the newest flow on the dashboard — and the server sends what differs; on a gap the page asks
   again from the last event it has. Without this file, the page polls.
   Every page of a signed-in user also follows the notification count in its header; the
   lists that depend on it ("Waiting for me", the notifications page: `data-live-refresh`)
   are fetched again over htmx when it changes, and after a reconnection. A bulk action's
   progress (`data-live-bulk`, on the dashboard once confirmed, or on its own page) is
   watched while it runs: the server pushes it again, rendered, after each chunk. */
(function () {
  "use strict";

  var body = document.body;
  var flowEl = document.querySelector("[data-live-flow]");
  var runEl = document.querySelector("[data-live-ltm]");
  var dashboard = document.querySelector("[data-live-dashboard]");
  var lists = document.querySelector("[data-live-waiting], [data-live-notifications]");
  var counter = document.getElementById("notification-count");
  var indicator = document.getElementById("live-indicator");
  // The Live/Offline indicator is about the page's live content: shown only where there is
  // some (a flow, an LTM run, a dashboard, a list), whatever else may use the socket (the
  // notification count in the header).
  var liveContent = Boolean(flowEl || runEl || dashboard || lists ||
                            document.querySelector("[data-live-bulk]"));
  if (!liveContent && !counter) { return; }

  var socket = null;
  var attempts = 0;
  var pending = null;  // an update held back while the user types in the live area
  var MAX_ROWS = 500;  // dashboard rows reported at once (the server reads no more)
  var watched = flowEl ? { action: "watch_flow", flow: Number(flowEl.dataset.liveFlow), since: 0 }
              : runEl ? { action: "watch_ltm", run: runEl.dataset.liveLtm, since: 0 }
              : null;
  var areaId = flowEl ? "flow-live" : "ltm-run-live";
  var shown = 0;  // the sequence number of the newest fragments swapped in
  var connected = false;  // a connection was open before (the next one is a reconnection)
  var refreshHeld = false;  // a list refresh held back while the user types in it

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

  // "connecting" until the first connection, then "live" or "offline" (lost, reconnecting).
  function setStatus(state) {
    body.dataset.live = state === "live" ? "on" : "off";
    if (indicator && liveContent) {
      indicator.hidden = false;
      indicator.textContent = state === "live" ? "Live" : state === "offline" ? "Offline" : "Connecting…";
      indicator.className = "live-indicator is-" + state;
      indicator.title = state === "live" ? "This page updates by itself as things happen"
        : state === "offline" ? "Connection lost: reconnecting; the page checks for changes every 2 seconds meanwhile"
        : "Connecting for live updates";
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
    // A dashboard row the user ticked for a bulk action stays ticked.
    var ticked = old.querySelector('input[name="ids"]');
    var freshTick = fresh.querySelector('input[name="ids"]');
    if (ticked && freshTick && ticked.checked) { freshTick.checked = true; }
    old.replaceWith(fresh);
    if (window.htmx) { window.htmx.process(fresh); }
    document.dispatchEvent(new CustomEvent("live:swapped", { detail: { id: id } }));
  }

  // The bulk actions this page shows still running: the server sends each again as it
  // moves (and at once, if it moved since the page showed it).
  function watchBulk() {
    var found = document.querySelectorAll("[data-live-bulk]");
    for (var i = 0; i < found.length; i++) {
      var state = found[i].dataset.bulkState;
      if (state === "queued" || state === "running") {
        send({ action: "watch_bulk", bulk: Number(found[i].dataset.liveBulk),
               processed: Number(found[i].dataset.processed) || 0, state: state });
      }
    }
  }
  // (one confirmed on the dashboard arrives by htmx)
  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.target;
    if (target && target.querySelector && (target.matches("[data-live-bulk]") ||
        target.querySelector("[data-live-bulk]"))) {
      watchBulk();
    }
  });

  document.addEventListener("focusout", function () {
    setTimeout(function () {
      if (pending && !editing(document.getElementById(pending.id))) {
        var update = pending; pending = null; swap(update.id, update.html);
      }
      if (refreshHeld) { refreshLists(); }
    }, 0);
  });

  // The header's count of open notifications; true when it changed.
  function showCount(count) {
    if (!counter || typeof count !== "number") { return false; }
    var before = counter.textContent.trim();
    counter.textContent = String(count);
    counter.classList.toggle("has-unread", count > 0);
    return before !== String(count);
  }

  // Fetch the lists that follow the notifications again (the server renders them for this
  // user), unless the user is typing in one: then once they leave it.
  function refreshLists() {
    refreshHeld = false;
    var found = document.querySelectorAll("[data-live-refresh]");
    for (var i = 0; i < found.length; i++) {
      var list = found[i];
      // (nor while a request from inside it is under way: replacing the list would drop
      // that request's answer, such as the note saying the decision was taken)
      if (editing(list) || list.querySelector(".htmx-request")) { refreshHeld = true; continue; }
      if (window.htmx && list.id && list.dataset.liveRefresh) {
        window.htmx.ajax("GET", list.dataset.liveRefresh, { target: "#" + list.id, swap: "outerHTML" });
      }
    }
  }

  document.addEventListener("htmx:afterRequest", function () {
    if (refreshHeld) { setTimeout(refreshLists, 0); }
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
    } else if (message.type === "notifications") {
      // A change (a step began waiting for this user, or was answered), or the count the
      // page was rendered with is not the database's: the lists follow.
      if (showCount(message.count) || message.flow) { refreshLists(); }
    } else if (message.type === "fragments" && watched) {
      // An older render came late, or the area already shows this state (an htmx answer).
      if (message.seq < shown || message.seq <= shownSeq()) { return; }
      shown = message.seq;
      Object.keys(message.html || {}).forEach(function (id) { swap(id, message.html[id]); });
    } else if (message.type === "bulk") {
      Object.keys(message.html || {}).forEach(function (id) { swap(id, message.html[id]); });
    } else if (message.type === "rows" && Array.isArray(message.rows)) {
      // several rows in one frame (a busy moment): each as if it came alone
      message.rows.forEach(function (row) { onMessage(row); });
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
          // A flow newer than every one the page has is a new flow: the count grows. An
          // older one moved up by a change (a bulk action changes many): the count stays.
          var newest = 0;
          var shownRows = tbody.querySelectorAll("tr[data-flow]");
          for (var r = 0; r < shownRows.length; r++) {
            newest = Math.max(newest, Number(shownRows[r].dataset.flow) || 0);
          }
          // A count that stopped at its limit ("10,000+ flows") stays as it is.
          var count = dashboard.querySelector(".count");
          var total = count && !count.dataset.capped ? Number(count.dataset.count) + 1 : NaN;
          if (!isNaN(total) && message.id > newest) {
            count.dataset.count = String(total);
            count.textContent = total.toLocaleString("en-US") + (total === 1 ? " flow" : " flows");
          }
          tbody.insertBefore(holder.content.firstElementChild, tbody.firstChild);
          // The first page keeps its size: the last rows move on to the next page.
          var size = Number(document.getElementById("flow-table").dataset.pageSize) || 0;
          while (size > 0 && tbody.rows.length > size) { tbody.removeChild(tbody.lastElementChild); }
          document.dispatchEvent(new CustomEvent("live:swapped", { detail: { id: "flow-table" } }));
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
      setStatus("live");
      // Say what the page shows: the server answers with whatever changed meanwhile (while
      // the server restarted, say), so the page converges without polling.
      if (watched) { watched.since = shownSeq(); send(watched); }
      if (dashboard) { send(dashboardShows()); }
      if (counter) { send({ action: "watch_notifications" }); }
      watchBulk();
      if (connected) { refreshLists(); }  // whatever changed while the socket was down
      connected = true;
    };
    socket.onmessage = function (event) {
      try { onMessage(JSON.parse(event.data)); } catch (error) { /* ignore a bad frame */ }
    };
    socket.onclose = function () {
      setStatus("offline");
      attempts += 1;
      var delay = Math.min(10000, 500 * Math.pow(2, attempts - 1)) * (0.75 + Math.random() / 2);
      setTimeout(connect, delay);
    };
  }

  setStatus("connecting");
  connect();
})();
