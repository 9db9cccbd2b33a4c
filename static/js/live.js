/* AI Farm: live parts of the dashboard over one EventSource (/api/v1/events). Pages work without it. */
(function () {
  "use strict";

  var body = document.body;
  if (body.getAttribute("data-live") !== "on") { return; }
  var taskId = body.getAttribute("data-task-id") || "";
  var clientId = body.getAttribute("data-client-id") || "";
  var badge = document.querySelector("[data-live-badge]");
  var MAX_LOG_LINES = 500;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }
  function setText(el, text) { if (el && el.textContent !== text) { el.textContent = text; } }
  function fmt(v) { return window.AifarmChart ? window.AifarmChart.formatValue(v) : String(v); }
  function el(name, className, text) {
    var e = document.createElement(name);
    if (className) { e.className = className; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o === null || o === undefined ? undefined : o[k]; }, obj);
  }

  /* ----- relative times ----- */

  var relative = window.AifarmTime.relative;
  function timeEl(iso) {
    var t = document.createElement("time");
    t.setAttribute("datetime", iso);
    t.setAttribute("data-rel", "");
    var d = new Date(iso);
    if (!isNaN(d.getTime())) { t.title = d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC"); }
    t.textContent = relative(iso);
    return t;
  }
  function refreshTimes() {
    $all("time[data-rel]").forEach(function (t) { setText(t, relative(t.getAttribute("datetime"))); });
  }
  window.setInterval(refreshTimes, 5000);

  /* ----- the connection badge ----- */

  function showBadge(text) {
    if (!badge) { return; }
    setText(badge, text);
    badge.hidden = false;
  }
  function hideBadge() { if (badge) { badge.hidden = true; } }

  /* ----- farm state: counts, donation, peers, this machine's work ----- */

  var hostnames = {};

  function learnHostnames() {
    $all('a[href^="/clients/"][title]').forEach(function (a) {
      var text = a.textContent.trim();
      if (text && text !== a.title.slice(0, 12)) { hostnames[a.title] = text; }
    });
  }

  function clientLink(clientId) {
    var a = el("a", null, hostnames[clientId] || clientId.slice(0, 12));
    a.href = "/clients/" + encodeURIComponent(clientId);
    a.title = clientId;
    return a;
  }

  function statusBadge(status) { return el("span", "badge status-" + status, status); }

  function progressWrap(value) {
    var wrap = el("span", "progress-wrap");
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = value || 0;
    bar.setAttribute("aria-label", "Progress");
    wrap.appendChild(bar);
    wrap.appendChild(el("span", "progress-text", Math.round(value || 0) + " %"));
    return wrap;
  }

  function setProgress(wrap, value) {
    if (!wrap) { return; }
    var bar = $("progress", wrap);
    if (bar) { bar.value = value || 0; }
    setText($(".progress-text", wrap), Math.round(value || 0) + " %");
  }

  function renderWork(box, agent) {
    var work = agent.work || {};
    var running = work.running;
    var key = running ? "run:" + running.task_id : work.joined ? "join:" + work.joined.task_id :
      (agent.donation && agent.donation.paused ? "paused" : "idle");
    if (box.getAttribute("data-work-key") === key && running) {
      setProgress($(".progress-wrap", box), running.progress);
      return;
    }
    if (box.getAttribute("data-work-key") === key) { return; }
    if (!box.hasAttribute("data-work-key") && !running) { box.setAttribute("data-work-key", key); return; }
    box.setAttribute("data-work-key", key);
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var p = el("p");
    if (running) {
      var a = el("a", null, running.name || "task " + running.task_id);
      a.href = "/tasks/" + running.task_id;
      p.appendChild(a);
      p.appendChild(document.createTextNode(" "));
      p.appendChild(el("span", "muted", "rank " + running.rank + " of " + running.n_clients));
      box.appendChild(p);
      box.appendChild(progressWrap(running.progress));
    } else if (work.joined) {
      p.appendChild(document.createTextNode("Waiting for the group of "));
      var j = el("a", null, "task " + work.joined.task_id);
      j.href = "/tasks/" + work.joined.task_id;
      p.appendChild(j);
      p.appendChild(document.createTextNode(" to fill."));
      box.appendChild(p);
    } else {
      p.className = "empty";
      p.textContent = key === "paused" ? "Paused: this machine takes no work." : "Idle: waiting for a task this machine can run.";
      box.appendChild(p);
    }
  }

  function renderPeers(list, peers) {
    var items = peers.peers || [];
    while (list.firstChild) { list.removeChild(list.firstChild); }
    if (!items.length) {
      list.appendChild(el("li", "empty", "No peers seen yet. Agents of farm " + (peers.farm_name || "") + " on this network appear here."));
      return;
    }
    items.forEach(function (peer) {
      var li = el("li");
      li.appendChild(el("span", "dot " + (peer.verified ? "dot-ok" : "dot-warn")));
      var a = el("a", null, peer.hostname || peer.client_id);
      a.href = "/clients/" + encodeURIComponent(peer.client_id);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(a);
      li.appendChild(document.createTextNode(" "));
      li.appendChild(el("span", "muted", (peer.verified ? "verified" : "not verified") + (peer.reachable === false ? ", unreachable" : "")));
      list.appendChild(li);
    });
  }

  function onState(data) {
    if (data.database_error) { showBadge("database unreachable"); } else { hideBadge(); }
    $all("[data-count]").forEach(function (node) {
      var value = get(data, node.getAttribute("data-count"));
      if (value !== undefined || data.tasks_by_status) { setText(node, String(value || 0)); }
    });
    var agent = data.agent || {};
    var donation = agent.donation || {};
    $all("[data-donation-summary]").forEach(function (node) { setText(node, donation.summary || ""); });
    var pill = $("[data-donation-pill]");
    if (pill && donation.summary) {
      setText(pill, donation.summary);
      var paused = donation.paused || donation.finish_current;
      pill.classList.toggle("pill-paused", Boolean(paused));
      pill.classList.toggle("pill-on", !paused);
    }
    var peerList = $("[data-peers]");
    if (peerList && data.peers) { renderPeers(peerList, data.peers); }
    var work = $("[data-work]");
    if (work && data.agent) { renderWork(work, agent); }
  }

  /* ----- one task: status, progress, charts, ranks, log ----- */

  var charts = [];
  var lastPointId = 0;
  var lastLogId = 0;

  function setupCharts() {
    if (!window.AifarmChart) { return; }
    $all("[data-chart]").forEach(function (figure) {
      var names = (figure.getAttribute("data-series") || "").split(" ").filter(Boolean);
      charts.push({ figure: figure, names: names, chart: new window.AifarmChart($("svg", figure), names, {}) });
    });
  }

  function addPoints(points) {
    var added = false;
    (points || []).forEach(function (p) {
      if (p.id <= lastPointId) { return; }
      lastPointId = p.id;
      charts.forEach(function (c) { if (c.chart.add(p.name, p.step, p.value)) { added = true; } });
    });
    if (added) { drawCharts(); }
  }

  function drawCharts() {
    charts.forEach(function (c) {
      c.chart.render();
      c.names.forEach(function (name) {
        var v = c.chart.last(name);
        setText($('[data-legend="' + name + '"]', c.figure), v === null ? "—" : fmt(v));
      });
      var empty = $("[data-chart-empty]", c.figure);
      if (empty) { empty.hidden = c.chart.count() > 0; }
    });
  }

  function loadCurve(after) {
    return fetch("/api/v1/tasks/" + taskId + "/curve?after=" + after, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { points: [] }; })
      .then(function (body) {
        var points = body.points || [];
        var newest = points.length ? points[points.length - 1].id : after;
        addPoints(points);
        if (points.length >= 5000) { return loadCurve(newest); }
        drawCharts();
        return null;
      })
      .catch(function () { drawCharts(); });
  }

  function appendLogs(lines) {
    var list = $("[data-task-log]");
    if (!list || !lines || !lines.length) { return; }
    var box = list.parentElement;
    var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    lines.forEach(function (line) {
      if (line.id <= lastLogId) { return; }
      lastLogId = line.id;
      var li = el("li", "log-" + line.log_type);
      li.setAttribute("data-id", String(line.id));
      var when = el("span", "log-time");
      when.appendChild(timeEl(line.created_at));
      li.appendChild(when);
      li.appendChild(el("span", "log-level", line.log_type));
      var who = el("span", "log-client");
      if (line.client_id) { who.appendChild(clientLink(line.client_id)); } else { who.textContent = "—"; }
      li.appendChild(who);
      li.appendChild(el("span", "log-msg", line.message));
      list.appendChild(li);
    });
    while (list.children.length > MAX_LOG_LINES) { list.removeChild(list.firstElementChild); }
    var empty = $("[data-log-empty]");
    if (empty) { empty.hidden = true; }
    if (atBottom) { box.scrollTop = box.scrollHeight; }
  }

  function renderRanks(assignments) {
    var tbody = $("[data-ranks]");
    if (!tbody || !assignments) { return; }
    var rows = {};
    $all("tr[data-rank]", tbody).forEach(function (tr) { rows[tr.getAttribute("data-rank") + "|" + tr.getAttribute("data-client")] = tr; });
    var keep = {};
    assignments.forEach(function (a) {
      var key = a.rank + "|" + a.client_id;
      keep[key] = true;
      var tr = rows[key];
      var metrics = a.metrics || {};
      if (!tr) {
        tr = el("tr");
        tr.setAttribute("data-rank", String(a.rank));
        tr.setAttribute("data-client", a.client_id);
        tr.appendChild(el("td", "num", a.rank));
        var who = el("td");
        who.appendChild(clientLink(a.client_id));
        tr.appendChild(who);
        var state = el("td");
        var badgeEl = statusBadge(a.status);
        badgeEl.setAttribute("data-rank-status", "");
        state.appendChild(badgeEl);
        tr.appendChild(state);
        [["data-rank-step", "num"], ["data-rank-loss", "num"], ["data-rank-updated", ""]].forEach(function (spec) {
          var td = el("td", spec[1]);
          td.setAttribute(spec[0], "");
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      }
      var st = $("[data-rank-status]", tr);
      if (st) { setText(st, a.status); st.className = "badge status-" + a.status; }
      setText($("[data-rank-step]", tr), metrics.step === undefined || metrics.step === null ? "—" : fmt(metrics.step));
      setText($("[data-rank-loss]", tr), metrics.loss === undefined || metrics.loss === null ? "—" : fmt(metrics.loss));
      var upd = $("[data-rank-updated]", tr);
      if (upd && a.updated_at) {
        var t = $("time", upd);
        if (!t || t.getAttribute("datetime") !== a.updated_at) {
          while (upd.firstChild) { upd.removeChild(upd.firstChild); }
          upd.appendChild(timeEl(a.updated_at));
        }
      }
    });
    Object.keys(rows).forEach(function (key) { if (!keep[key]) { tbody.removeChild(rows[key]); } });
    var empty = $("[data-ranks-empty]");
    if (empty) { empty.hidden = assignments.length > 0; }
  }

  /* ----- an elastic task's group: size, ranks' shares, contributions, membership changes ----- */

  function count(v) { return v === null || v === undefined ? "—" : Math.round(v).toLocaleString("en-US"); }
  function percent(v) { return (v || 0).toFixed(1) + " %"; }

  function elasticLink(id, names) {
    if (names[id]) { hostnames[id] = names[id]; }
    return clientLink(id);
  }

  function cell(tr, className, content) {
    var td = el("td", className);
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content; }
    tr.appendChild(td);
    return td;
  }

  function fillRows(selector, items, build) {
    var tbody = $(selector);
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    items.forEach(function (item) { tbody.appendChild(build(item)); });
    var empty = $(selector.replace("]", "-empty]"));
    if (empty) { empty.hidden = items.length > 0; }
  }

  function renderElastic(view) {
    if (!view || !$("[data-elastic]")) { return; }
    var names = view.hostnames || {};
    setText($("[data-elastic-size]"), String(view.size));
    setText($("[data-elastic-total]"), count(view.contributed_samples) + " samples in optimizer steps");
    fillRows("[data-elastic-ranks]", view.ranks || [], function (r) {
      var tr = el("tr");
      tr.setAttribute("data-rank", String(r.rank));
      cell(tr, "num", String(r.rank));
      cell(tr, null, elasticLink(r.client_id, names));
      cell(tr, "num", r.share === null ? "—" : count(r.share) + " (" + percent(r.share_percent) + ")");
      cell(tr, "num", r.samples_per_sec === null ? "—" : fmt(r.samples_per_sec));
      return tr;
    });
    fillRows("[data-elastic-contributions]", view.contributions || [], function (c) {
      var tr = el("tr");
      tr.setAttribute("data-client", c.client_id);
      cell(tr, null, elasticLink(c.client_id, names));
      cell(tr, "num", count(c.samples));
      cell(tr, "num", percent(c.percent));
      cell(tr, "muted small", c.member ? "" : "no longer a member");
      return tr;
    });
    fillRows("[data-elastic-changes]", view.changes || [], function (c) {
      var tr = el("tr");
      tr.setAttribute("data-id", String(c.id));
      cell(tr, null, timeEl(c.at));
      cell(tr, null, el("span", "tag", c.kind));
      var who = cell(tr, null, c.clients.length ? "" : "—");
      c.clients.forEach(function (id, i) {
        if (i) { who.appendChild(document.createTextNode(", ")); }
        who.appendChild(elasticLink(id, names));
      });
      cell(tr, null, c.reason || "—");
      cell(tr, null, c.note);
      return tr;
    });
  }

  var checkpointsDue = 0;
  var checkpointsBusy = false;

  function renderCheckpoints(rows) {
    var tbody = $("[data-checkpoints]");
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    rows.forEach(function (c) {
      var m = c.metrics || {};
      var tr = el("tr");
      tr.setAttribute("data-id", String(c.id));
      var type = el("td");
      type.appendChild(el("span", "tag", c.type));
      tr.appendChild(type);
      tr.appendChild(el("td", "num", m.step === undefined || m.step === null ? "—" : fmt(m.step)));
      tr.appendChild(el("td", "num", m.rank === undefined || m.rank === null ? "—" : fmt(m.rank)));
      var sha = el("td");
      var code = el("code", null, (m.sha256 || "—").slice(0, 12));
      code.title = m.sha256 || "";
      sha.appendChild(code);
      tr.appendChild(sha);
      var who = el("td");
      if (c.client_id) { who.appendChild(clientLink(c.client_id)); } else { who.textContent = "—"; }
      tr.appendChild(who);
      var when = el("td");
      when.appendChild(timeEl(c.created_at));
      tr.appendChild(when);
      tbody.appendChild(tr);
    });
    var table = $("[data-checkpoints-table]");
    if (table) { table.hidden = rows.length === 0; }
    var empty = $("[data-checkpoints-empty]");
    if (empty) { empty.hidden = rows.length > 0; }
  }

  var checkpointsTimer = null;

  function refreshCheckpoints() {
    // At most every few seconds, and always once more after the last request: checkpoints are not in the
    // event stream, so they come from the API.
    if (checkpointsTimer !== null) { return; }
    var delay = Math.max(0, checkpointsDue - Date.now()) + (checkpointsBusy ? 1000 : 0);
    checkpointsTimer = window.setTimeout(function () {
      checkpointsTimer = null;
      if (checkpointsBusy) { refreshCheckpoints(); return; }
      checkpointsBusy = true;
      checkpointsDue = Date.now() + 4000;
      fetch("/api/v1/tasks/" + taskId + "/checkpoints", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) { if (body) { renderCheckpoints(body.checkpoints || []); } })
        .catch(function () { /* the next log line tries again */ })
        .then(function () { checkpointsBusy = false; });
    }, delay);
  }

  var lastStatus = null;

  function onTask(data) {
    var task = data.task;
    if (task) {
      var status = task.status;
      var st = $("[data-task-status]");
      if (st) { setText(st, status); st.className = "badge status-" + status; }
      $all("[data-when-status]").forEach(function (node) {
        node.hidden = node.getAttribute("data-when-status").split(" ").indexOf(status) < 0;
      });
      var result = task.result || {};
      setProgress($(".progress-big .progress-wrap"), result.progress);
      ["epoch", "step", "samples_per_sec", "bytes_per_step", "utilisation"].forEach(function (key) {
        var v = result[key];
        setText($('[data-result="' + key + '"]'), v === undefined || v === null ? "—" : fmt(v));
      });
      var sync = $('[data-result-text="sync"]');
      if (sync && result.sync) { setText(sync, "Sync: " + result.sync); sync.hidden = false; }
      var metrics = result.metrics || {};
      $all("[data-metric]").forEach(function (node) {
        var v = metrics[node.getAttribute("data-metric")];
        if (v !== undefined && v !== null) { setText(node, fmt(v)); }
      });
      var upd = $("[data-task-updated]");
      if (upd && task.updated_at) {
        var t = $("time", upd);
        if (!t || t.getAttribute("datetime") !== task.updated_at) {
          while (upd.firstChild) { upd.removeChild(upd.firstChild); }
          upd.appendChild(timeEl(task.updated_at));
        }
      }
    }
    addPoints(data.points);
    appendLogs(data.logs);
    renderRanks(data.assignments);
    renderElastic(data.elastic);
    var statusChanged = task && lastStatus !== null && task.status !== lastStatus;
    if (task) { lastStatus = task.status; }
    if (statusChanged) { checkpointsDue = 0; }
    if ((data.logs && data.logs.length) || statusChanged) { refreshCheckpoints(); }
  }

  /* ----- one client: performance charts from the API ----- */

  function loadClientCharts() {
    var figures = $all("[data-perf-chart]");
    if (!figures.length || !window.AifarmChart) { return; }
    var byName = {};
    figures.forEach(function (figure) {
      var name = figure.getAttribute("data-perf-chart");
      byName[name] = { figure: figure, chart: new window.AifarmChart($("svg", figure), [name], { time: true }) };
    });
    function refresh() {
      fetch("/api/v1/clients/" + encodeURIComponent(clientId), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (!body) { return; }
          Object.keys(byName).forEach(function (name) { byName[name].chart.clear(); });
          (body.series || []).forEach(function (row) {
            var entry = byName[row.metric_type];
            if (entry) { entry.chart.add(row.metric_type, Date.parse(row.recorded_at), row.value); }
          });
          Object.keys(byName).forEach(function (name) {
            var entry = byName[name];
            entry.chart.render();
            var v = entry.chart.last(name);
            setText($('[data-legend="' + name + '"]', entry.figure), v === null ? "—" : fmt(v));
          });
        })
        .catch(function () { /* the next refresh tries again */ });
    }
    refresh();
    window.setInterval(refresh, 15000);
  }

  /* ----- start ----- */

  function parse(text) {
    try { return JSON.parse(text); } catch (err) { return null; }  // a cut-off event is skipped; the next one is whole
  }

  function start() {
    learnHostnames();
    $all("[data-task-log] li[data-id]").forEach(function (li) {
      lastLogId = Math.max(lastLogId, Number(li.getAttribute("data-id")) || 0);
    });
    var logBox = $("[data-task-log]");
    if (logBox) { logBox.parentElement.scrollTop = logBox.parentElement.scrollHeight; }
    if (taskId) {
      setupCharts();
      loadCurve(0);
    }
    if (clientId) { loadClientCharts(); }
    if (!window.EventSource) { return; }
    var source = new EventSource("/api/v1/events" + (taskId ? "?task=" + encodeURIComponent(taskId) : ""));
    source.addEventListener("open", hideBadge);
    source.addEventListener("error", function () {
      showBadge(source.readyState === EventSource.CLOSED ? "disconnected: reload the page" : "reconnecting…");
    });
    source.addEventListener("state", function (event) {
      var data = parse(event.data);
      if (data) { onState(data); }
    });
    source.addEventListener("task", function (event) {
      var data = parse(event.data);
      if (data) { onTask(data); }
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
