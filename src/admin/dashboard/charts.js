// A small canvas line chart for the dashboard: time on x (seconds before the newest point),
// "nice" 1-2-2.5-5 ticks on y starting at 0, a legend with each series' latest value, gaps where
// a value is missing (a latency with no requests). No dependencies; exposes
// window.SluiceCharts = { LineChart }.
"use strict";

(function () {
  const FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';
  const TITLE_FONT = '600 13px system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif';
  const AXIS_COLOR = "#5b6570";
  const GRID_COLOR = "#e6e9ed";
  const TEXT_COLOR = "#1d2329";
  const Y_TICKS = 4;
  // Candidate spacings of x ticks, in seconds; the first giving at most MAX_X_TICKS wins.
  const X_STEPS_S = [5, 10, 15, 30, 60, 120, 300];
  const MAX_X_TICKS = 6;

  /** The smallest "nice" step (1, 2, 2.5 or 5 times a power of ten) of at least `raw`. */
  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * magnitude >= raw * (1 - 1e-9)) return m * magnitude;
    }
    return 10 * magnitude;
  }

  function timeLabel(secondsAgo) {
    if (secondsAgo === 0) return "now";
    if (secondsAgo % 60 === 0) return `-${secondsAgo / 60}m`;
    return `-${secondsAgo}s`;
  }

  function isValue(v) {
    return typeof v === "number" && Number.isFinite(v);
  }

  class LineChart {
    /**
     * canvas: the element to draw in (sized by CSS; the chart follows its size).
     * options.title: drawn top left.
     * options.series: [{ key, label, color }], read from each point as point[key].
     * options.format: value -> text, for the y axis.
     * options.legendFormat: value -> text, for the legend's latest values [default: format].
     * options.minTop: the y axis reaches at least this, so a quiet chart is not all noise.
     */
    constructor(canvas, options) {
      this.canvas = canvas;
      this.title = options.title;
      this.series = options.series;
      this.format = options.format || ((v) => String(v));
      this.legendFormat = options.legendFormat || this.format;
      this.minTop = options.minTop || 1;
      this.points = [];
      this.windowS = 60;
      if (typeof ResizeObserver === "function") {
        new ResizeObserver(() => this.draw()).observe(canvas);
      }
    }

    /** Replaces the data (objects with t_ms, oldest first) and the span shown, then redraws. */
    setData(points, windowS) {
      this.points = points;
      this.windowS = windowS;
      this.draw();
    }

    draw() {
      const canvas = this.canvas;
      const width = canvas.clientWidth;
      const height = canvas.clientHeight;
      if (width === 0 || height === 0) return;
      const ratio = window.devicePixelRatio || 1;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);

      const last = this.points.length ? this.points[this.points.length - 1].t_ms : Date.now();
      const start = last - this.windowS * 1000;
      const visible = this.points.filter((p) => p.t_ms >= start);

      let top = 0;
      for (const p of visible) {
        for (const s of this.series) {
          if (isValue(p[s.key])) top = Math.max(top, p[s.key]);
        }
      }
      const target = Math.max(top * 1.1, this.minTop);
      const step = niceStep(target / Y_TICKS);
      const yMax = step * Math.max(1, Math.ceil(target / step - 1e-9));

      ctx.font = FONT;
      const yLabels = [];
      for (let i = 0; i * step <= yMax * (1 + 1e-9); i++) yLabels.push(i * step);
      const labelWidth = Math.max(...yLabels.map((v) => ctx.measureText(this.format(v)).width));
      const plot = { left: Math.ceil(labelWidth) + 12, right: width - 10, top: 30, bottom: height - 22 };
      const x = (t) => plot.left + ((t - start) / (last - start)) * (plot.right - plot.left);
      const y = (v) => plot.bottom - (v / yMax) * (plot.bottom - plot.top);

      this.drawAxes(ctx, plot, yLabels, y, last, x);
      let drawn = 0;
      for (const [i, s] of this.series.entries()) {
        drawn = Math.max(drawn, this.drawSeries(ctx, visible, s, x, y, plot, i === 0 && this.series.length === 1));
      }
      this.drawHeader(ctx, width, visible);
      if (drawn === 0) {
        ctx.fillStyle = AXIS_COLOR;
        ctx.textAlign = "center";
        ctx.textBaseline = "middle";
        ctx.fillText("waiting for data…", (plot.left + plot.right) / 2, (plot.top + plot.bottom) / 2);
      }

      // For tests and assistive technology: how much was drawn, and the latest values in words.
      canvas.dataset.points = String(drawn);
      canvas.setAttribute("aria-label", `${this.title}, last ${timeLabel(this.windowS).slice(1)}: ${this.latestText(visible)}`);
    }

    drawAxes(ctx, plot, yLabels, y, last, x) {
      ctx.lineWidth = 1;
      ctx.font = FONT;
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (const v of yLabels) {
        const py = Math.round(y(v)) + 0.5;
        ctx.strokeStyle = v === 0 ? AXIS_COLOR : GRID_COLOR;
        ctx.beginPath();
        ctx.moveTo(plot.left, py);
        ctx.lineTo(plot.right, py);
        ctx.stroke();
        ctx.fillStyle = AXIS_COLOR;
        ctx.fillText(this.format(v), plot.left - 6, py);
      }
      const stepS = X_STEPS_S.find((s) => this.windowS / s <= MAX_X_TICKS) || X_STEPS_S[X_STEPS_S.length - 1];
      ctx.textBaseline = "top";
      ctx.textAlign = "center";
      for (let ago = 0; ago <= this.windowS; ago += stepS) {
        const px = Math.round(x(last - ago * 1000)) + 0.5;
        ctx.strokeStyle = AXIS_COLOR;
        ctx.beginPath();
        ctx.moveTo(px, plot.bottom);
        ctx.lineTo(px, plot.bottom + 4);
        ctx.stroke();
        ctx.fillStyle = AXIS_COLOR;
        ctx.textAlign = ago === 0 ? "right" : ago === this.windowS ? "left" : "center";
        ctx.fillText(timeLabel(ago), ago === 0 ? px + 4 : px, plot.bottom + 6);
      }
    }

    /** Draws one series as a line (and a light area when it is the only one); returns its points. */
    drawSeries(ctx, points, series, x, y, plot, fill) {
      const runs = [];
      let run = [];
      for (const p of points) {
        const v = p[series.key];
        if (isValue(v)) {
          run.push([x(p.t_ms), y(v)]);
        } else if (run.length) {
          runs.push(run);
          run = [];
        }
      }
      if (run.length) runs.push(run);
      let count = 0;
      ctx.save();
      ctx.beginPath();
      ctx.rect(plot.left, plot.top - 2, plot.right - plot.left, plot.bottom - plot.top + 2);
      ctx.clip();
      for (const r of runs) {
        count += r.length;
        if (fill && r.length > 1) {
          ctx.beginPath();
          ctx.moveTo(r[0][0], plot.bottom);
          for (const [px, py] of r) ctx.lineTo(px, py);
          ctx.lineTo(r[r.length - 1][0], plot.bottom);
          ctx.closePath();
          ctx.globalAlpha = 0.12;
          ctx.fillStyle = series.color;
          ctx.fill();
          ctx.globalAlpha = 1;
        }
        ctx.beginPath();
        ctx.strokeStyle = series.color;
        ctx.lineWidth = 1.75;
        ctx.lineJoin = "round";
        if (r.length === 1) {
          ctx.arc(r[0][0], r[0][1], 2, 0, 2 * Math.PI);
          ctx.fillStyle = series.color;
          ctx.fill();
          continue;
        }
        ctx.moveTo(r[0][0], r[0][1]);
        for (const [px, py] of r.slice(1)) ctx.lineTo(px, py);
        ctx.stroke();
      }
      ctx.restore();
      return count;
    }

    /** The title on the left; on the right, each series' swatch, label and latest value. */
    drawHeader(ctx, width, points) {
      ctx.textBaseline = "middle";
      ctx.textAlign = "left";
      ctx.font = TITLE_FONT;
      ctx.fillStyle = TEXT_COLOR;
      ctx.fillText(this.title, 0, 10);
      ctx.font = FONT;
      ctx.textAlign = "right";
      let right = width - 2;
      for (const s of [...this.series].reverse()) {
        const text = `${s.label} ${this.latest(points, s)}`;
        ctx.fillStyle = TEXT_COLOR;
        ctx.fillText(text, right, 10);
        right -= ctx.measureText(text).width + 6;
        ctx.fillStyle = s.color;
        ctx.fillRect(right - 10, 7, 10, 6);
        right -= 22;
      }
    }

    latest(points, series) {
      for (let i = points.length - 1; i >= 0; i--) {
        const v = points[i][series.key];
        if (isValue(v)) return this.legendFormat(v);
      }
      return "–";
    }

    latestText(points) {
      return this.series.map((s) => `${s.label} ${this.latest(points, s)}`).join(", ");
    }
  }

  window.SluiceCharts = { LineChart, niceStep };
})();
