/* AI Farm: small SVG line charts (no dependencies). window.AifarmChart(svg, seriesNames, {time: bool}). */
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var MARGIN = { left: 52, right: 14, top: 12, bottom: 26 };
  var MAX_DRAWN = 1200;

  function node(name, attrs, parent) {
    var el = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) { el.setAttribute(key, String(attrs[key])); });
    if (parent) { parent.appendChild(el); }
    return el;
  }

  function formatValue(v) {
    if (v === null || v === undefined || !isFinite(v)) { return "—"; }
    var a = Math.abs(v);
    if (a !== 0 && (a < 0.001 || a >= 1e6)) { return v.toExponential(2); }
    if (a >= 1000) { return Math.round(v).toLocaleString(); }
    if (a >= 100) { return v.toFixed(1); }
    return String(Number(v.toPrecision(4)));
  }

  function formatTime(ms, withSeconds) {
    var d = new Date(ms);
    var text = String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
    return withSeconds ? text + ":" + String(d.getSeconds()).padStart(2, "0") : text;
  }

  function niceStep(span, count) {
    var raw = span / Math.max(1, count);
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var unit = raw / power;
    var nice = unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10;
    return nice * power;
  }

  function ticks(lo, hi, count) {
    if (hi <= lo) { return [lo]; }
    var step = niceStep(hi - lo, count);
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) { out.push(t); }
    return out;
  }

  function thin(points, limit) {
    if (points.length <= limit) { return points; }
    var stride = points.length / limit;
    var out = [];
    for (var i = 0; i < limit; i++) { out.push(points[Math.floor(i * stride)]); }
    out.push(points[points.length - 1]);
    return out;
  }

  function Chart(svg, names, options) {
    this.svg = svg;
    this.names = names.slice();
    this.time = Boolean(options && options.time);
    this.data = {};
    var self = this;
    this.names.forEach(function (name) { self.data[name] = []; });
    this.pending = false;
    window.addEventListener("resize", function () { self.schedule(); });
  }

  Chart.prototype.add = function (name, x, y) {
    if (!Object.prototype.hasOwnProperty.call(this.data, name) || !isFinite(x) || !isFinite(y)) { return false; }
    this.data[name].push([x, y]);
    return true;
  };

  Chart.prototype.clear = function () {
    var self = this;
    this.names.forEach(function (name) { self.data[name] = []; });
  };

  Chart.prototype.count = function () {
    var self = this;
    return this.names.reduce(function (sum, name) { return sum + self.data[name].length; }, 0);
  };

  Chart.prototype.last = function (name) {
    var points = this.data[name] || [];
    var best = null;
    points.forEach(function (p) { if (best === null || p[0] >= best[0]) { best = p; } });
    return best ? best[1] : null;
  };

  Chart.prototype.schedule = function () {
    if (this.pending) { return; }
    this.pending = true;
    var self = this;
    window.requestAnimationFrame(function () { self.pending = false; self.render(); });
  };

  Chart.prototype.render = function () {
    var svg = this.svg;
    var width = Math.max(240, Math.round(svg.getBoundingClientRect().width) || 640);
    var height = Math.max(120, Math.round(svg.getBoundingClientRect().height) || 220);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.setAttribute("data-count", String(this.count()));

    var series = [];
    var xs = [], ys = [];
    var self = this;
    this.names.forEach(function (name, index) {
      var points = self.data[name].slice().sort(function (a, b) { return a[0] - b[0]; });
      points = thin(points, MAX_DRAWN);
      series.push({ name: name, index: index, points: points });
      points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); });
    });
    if (!xs.length) { return; }

    var xLo = Math.min.apply(null, xs), xHi = Math.max.apply(null, xs);
    var yLo = Math.min.apply(null, ys), yHi = Math.max.apply(null, ys);
    if (xHi === xLo) { xLo -= 1; xHi += 1; }
    if (yHi === yLo) { var pad = Math.abs(yHi) * 0.1 || 1; yLo -= pad; yHi += pad; }
    var yPad = (yHi - yLo) * 0.06;
    yLo -= yPad; yHi += yPad;
    if (Math.min.apply(null, ys) >= 0 && yLo < 0) { yLo = 0; }

    var plotW = width - MARGIN.left - MARGIN.right;
    var plotH = height - MARGIN.top - MARGIN.bottom;
    function sx(x) { return MARGIN.left + (x - xLo) / (xHi - xLo) * plotW; }
    function sy(y) { return MARGIN.top + (1 - (y - yLo) / (yHi - yLo)) * plotH; }

    var grid = node("g", { "class": "grid" }, svg);
    ticks(yLo, yHi, 4).forEach(function (t) {
      node("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: sy(t), y2: sy(t) }, grid);
      var label = node("text", { x: MARGIN.left - 6, y: sy(t) + 4, "text-anchor": "end", "class": "tick" }, svg);
      label.textContent = formatValue(t);
    });
    var xCount = Math.max(2, Math.floor(plotW / 110));
    ticks(xLo, xHi, xCount).forEach(function (t) {
      var label = node("text", { x: sx(t), y: height - 8, "text-anchor": "middle", "class": "tick" }, svg);
      label.textContent = self.time ? formatTime(t, xHi - xLo < 15 * 60 * 1000) : formatValue(t);
    });
    node("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH, "class": "axis" }, svg);

    series.forEach(function (s) {
      if (!s.points.length) { return; }
      var coords = s.points.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); });
      node("polyline", { points: coords.join(" "), "class": "line series-" + s.index }, svg);
      var end = s.points[s.points.length - 1];
      node("circle", { cx: sx(end[0]), cy: sy(end[1]), r: 3, "class": "dot series-" + s.index }, svg);
    });
  };

  Chart.formatValue = formatValue;
  window.AifarmChart = Chart;
})();
