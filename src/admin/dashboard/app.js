// The dashboard's behaviour: loads /api/history and /api/status every second, draws the charts,
// keeps the backend table in place (rows are updated, not rebuilt, so focus and clicks survive a
// refresh), and sends the changes the buttons and forms ask for. A 401 on a change asks for the
// admin token once and keeps it in sessionStorage for this tab.
"use strict";

(function () {
  const POLL_MS = 1000;
  const TOKEN_KEY = "sluice.adminToken";
  const OK_NOTICE_MS = 4000;
  // The auto window grows with the history, by whole minutes, up to what /api/history keeps.
  const MIN_WINDOW_S = 60;
  const MAX_WINDOW_S = 300;

  const $ = (id) => document.getElementById(id);
  const { LineChart } = window.SluiceCharts;

  // ---- formatting ----

  function fmtCount(v) {
    if (v >= 1e6) return `${trim(v / 1e6)}M`;
    if (v >= 1e4) return `${trim(v / 1e3)}k`;
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function fmtPercent(v) {
    const p = v * 100;
    if (p === 0) return "0%";
    if (p < 1) return `${p.toFixed(2)}%`;
    if (p < 10) return `${p.toFixed(1)}%`;
    return `${Math.round(p)}%`;
  }

  function fmtMs(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1000) return `${trim(v / 1000)} s`;
    if (v === 0) return "0 ms";
    if (v < 10) return `${v.toFixed(v < 1 ? 2 : 1)} ms`;
    return `${Math.round(v)} ms`;
  }

  function trim(v) {
    return v.toFixed(v < 10 ? 1 : 0).replace(/\.0$/, "");
  }

  // ---- charts ----

  const charts = [
    new LineChart($("chart-rps"), {
      title: "Requests per second",
      series: [{ key: "requests_per_s", label: "req/s", color: "#1f5fd1" }],
      format: fmtCount,
      minTop: 1,
    }),
    new LineChart($("chart-errors"), {
      title: "Error rate (5xx)",
      series: [{ key: "error_rate", label: "errors", color: "#c62828" }],
      format: fmtPercent,
      minTop: 0.01,
    }),
    new LineChart($("chart-conns"), {
      title: "Active client connections",
      series: [{ key: "active_connections", label: "conns", color: "#6d3fc0" }],
      format: fmtCount,
      minTop: 1,
    }),
    new LineChart($("chart-latency"), {
      title: "Latency",
      series: [
        { key: "p50_ms", label: "p50", color: "#13865a" },
        { key: "p99_ms", label: "p99", color: "#d07a00" },
      ],
      format: (v) => (v >= 1000 ? `${trim(v / 1000)}s` : `${Number(v.toFixed(2))}ms`),
      legendFormat: fmtMs,
      minTop: 1,
    }),
  ];

  let history = [];

  function windowSeconds() {
    const chosen = $("window-select").value;
    if (chosen !== "auto") return Number(chosen);
    if (history.length < 2) return MIN_WINDOW_S;
    const spanS = (history[history.length - 1].t_ms - history[0].t_ms) / 1000;
    return Math.min(MAX_WINDOW_S, Math.max(MIN_WINDOW_S, Math.ceil(spanS / 60) * 60));
  }

  function drawCharts() {
    const w = windowSeconds();
    for (const c of charts) c.setData(history, w);
  }

  // ---- the API ----

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) {
      // not JSON: fall through to the status
    }
    return `HTTP ${resp.status}`;
  }

  async function getJSON(path) {
    const resp = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!resp.ok) throw new Error(await errorText(resp));
    return resp.json();
  }

  /** Sends a change; on 401 asks for the token (once per tab) and tries again. */
  async function mutate(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const headers = { Accept: "application/json" };
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = `Bearer ${token}`;
      const init = { method, headers, cache: "no-store" };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const resp = await fetch(path, init);
      if (resp.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        if (attempt === 0) {
          const entered = window.prompt(
            token
              ? "The admin token was refused. Admin token:"
              : "This sluice runs with --admin-token; changes need it. Admin token:"
          );
          if (entered && entered.trim()) {
            sessionStorage.setItem(TOKEN_KEY, entered.trim());
            continue;
          }
          throw new Error("this change needs the admin token");
        }
      }
      if (!resp.ok) throw new Error(await errorText(resp));
      return resp;
    }
  }

  const backendPath = (address) => `api/backends/${encodeURIComponent(address)}`;

  // ---- notices ----

  let noticeTimer = null;

  function notify(text, isError) {
    const box = $("notice");
    $("notice-text").textContent = text;
    box.classList.toggle("error", Boolean(isError));
    box.setAttribute("role", isError ? "alert" : "status");
    box.hidden = false;
    clearTimeout(noticeTimer);
    if (!isError) noticeTimer = setTimeout(() => (box.hidden = true), OK_NOTICE_MS);
  }

  $("notice-close").addEventListener("click", () => ($("notice").hidden = true));

  /**
   * Runs a change from a control, disabling the control meanwhile, and reports the outcome:
   * `done` on success, "Could not <action>: <the API's error>" otherwise.
   */
  async function change(control, action, done, request) {
    control.disabled = true;
    try {
      await request();
      notify(done);
      await refresh();
    } catch (e) {
      notify(`Could not ${action}: ${e.message}`, true);
    } finally {
      control.disabled = false;
      if (lastStatus) renderBackends(lastStatus.backends);
    }
  }

  // ---- the backend table ----

  const rows = new Map();

  // A member of a backend given by DNS name shows that name, and its buttons act on the name
  // (the API changes a name as a whole).
  function makeRow(address, name) {
    const tr = document.createElement("tr");
    tr.dataset.address = address;
    const cell = (cls) => {
      const td = document.createElement("td");
      if (cls) td.className = cls;
      tr.appendChild(td);
      return td;
    };
    const row = {
      tr,
      address: cell("address"),
      health: cell(),
      enabled: cell(),
      weight: cell("num"),
      inFlight: cell("num"),
      conns: cell("num"),
      rps: cell("num"),
      success: cell("num"),
      p50: cell("num"),
      p99: cell("num"),
      belief: cell("num belief"),
      limit: cell("num limit"),
      pacing: cell("pacing"),
      actions: cell("actions"),
      toggle: document.createElement("button"),
      remove: document.createElement("button"),
      backend: null,
    };
    row.address.textContent = name ? `${address} (${name})` : address;
    address = name || address;
    row.toggle.type = "button";
    row.toggle.className = "toggle";
    row.remove.type = "button";
    row.remove.className = "remove danger";
    row.remove.textContent = "Remove";
    row.remove.setAttribute("aria-label", `Remove ${address}`);
    row.actions.append(row.toggle, row.remove);

    row.toggle.addEventListener("click", () => {
      const enable = !row.backend.enabled;
      const verb = enable ? "enable" : "disable";
      change(row.toggle, `${verb} ${address}`, `${address} ${verb}d`, () =>
        mutate("POST", `${backendPath(address)}/${verb}`)
      );
    });
    row.remove.addEventListener("click", () => {
      if (!window.confirm(`Remove ${address}? It takes no new work and goes once its requests finish.`)) return;
      change(row.remove, `remove ${address}`, `${address} removed; draining`, () =>
        mutate("DELETE", backendPath(address))
      );
    });
    return row;
  }

  function badge(td, cls, text) {
    td.replaceChildren();
    const span = document.createElement("span");
    span.className = `badge ${cls}`;
    span.textContent = text;
    td.appendChild(span);
  }

  function healthOf(b) {
    if (b.draining) return ["draining", "removing"];
    if (b.ejected) return ["ejected", "ejected"];
    return b.healthy ? ["up", "healthy"] : ["down", "down"];
  }

  function updateRow(row, b) {
    row.backend = b;
    const [healthCls, healthText] = healthOf(b);
    row.tr.dataset.enabled = String(b.enabled);
    row.tr.dataset.health = healthCls;
    badge(row.health, healthCls, healthText);
    badge(row.enabled, b.enabled ? "enabled" : "disabled", b.enabled ? "enabled" : "disabled");
    row.weight.textContent = String(b.weight);
    row.inFlight.textContent = String(b.in_flight);
    row.conns.textContent = String(b.active_connections);
    row.rps.textContent = fmtCount(Math.round(b.requests_per_s * 10) / 10);
    const idle = b.requests_per_s === 0 && b.error_rate === 0;
    row.success.textContent = idle ? "–" : fmtPercent(1 - b.error_rate);
    row.p50.textContent = fmtMs(b.p50_ms);
    row.p99.textContent = fmtMs(b.p99_ms);
    // What bandit believes; blank under other strategies.
    const l = b.learned;
    row.belief.textContent = l ? fmtPercent(l.success_estimate) : "";
    row.limit.textContent = l ? (l.limit == null ? "none yet" : `${l.limit} / ${l.window_ms} ms`) : "";
    row.pacing.textContent = l ? (l.backoff_ms > 0 ? `${l.pacing} ${fmtMs(l.backoff_ms)}` : l.pacing) : "";
    row.tr.dataset.pacing = l ? l.pacing : "";
    const label = b.enabled ? "Disable" : "Enable";
    if (row.toggle.textContent !== label) row.toggle.textContent = label;
    row.toggle.setAttribute("aria-label", `${label} ${b.address}`);
    if (b.draining) {
      row.toggle.disabled = true;
      row.remove.disabled = true;
    }
  }

  function renderBackends(list) {
    const tbody = $("backends").tBodies[0];
    const seen = new Set();
    list.forEach((b, i) => {
      const key = b.name ? `${b.address} ${b.name}` : b.address;
      let row = rows.get(key);
      if (!row) {
        row = makeRow(b.address, b.name);
        rows.set(key, row);
      }
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
      updateRow(row, b);
      seen.add(key);
    });
    for (const [address, row] of rows) {
      if (!seen.has(address)) {
        row.tr.remove();
        rows.delete(address);
      }
    }
    $("no-backends").hidden = list.length > 0;
  }

  // ---- strategy ----

  let strategyDirty = false;

  function fillStrategies(names) {
    const select = $("strategy-select");
    if (select.options.length || !names || !names.length) return;
    for (const name of names) {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = name;
      select.appendChild(opt);
    }
  }

  function renderStrategy(s) {
    fillStrategies(s.available);
    const select = $("strategy-select");
    if (!strategyDirty && document.activeElement !== select) select.value = s.configured;
    $("strategy-configured").textContent = s.configured;
    $("strategy-active").textContent = s.active;
    $("strategy-reason").textContent =
      s.reason || (s.configured === "adaptive" ? "no switch yet" : "– (only adaptive gives reasons)");
    $("strategy-switches").textContent = String(s.switches);
    $("sum-strategy").textContent = s.configured === s.active ? s.active : `${s.configured} → ${s.active}`;
  }

  $("strategy-select").addEventListener("change", () => (strategyDirty = true));
  $("strategy-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("strategy-select").value;
    const button = event.submitter || $("strategy-form").querySelector("button");
    change(button, `set the strategy to ${name}`, `Strategy set to ${name}`, async () => {
      await mutate("PUT", "api/strategy", { strategy: name });
      strategyDirty = false;
    });
  });

  // ---- add a backend ----

  $("add-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const address = $("add-address").value.trim();
    const weight = Number($("add-weight").value);
    const button = event.submitter || $("add-form").querySelector("button");
    change(button, `add ${address || "a backend"}`, `${address} added`, async () => {
      await mutate("POST", "api/backends", { address, weight });
      $("add-address").value = "";
    });
  });

  // ---- polling ----

  let lastStatus = null;

  function renderStatus(status) {
    lastStatus = status;
    $("sum-mode").textContent = status.mode;
    $("sum-rps").textContent = fmtCount(status.requests_per_s);
    $("sum-conns").textContent = fmtCount(status.active_connections);
    const serving = status.backends.filter((b) => b.enabled && b.healthy && !b.ejected && !b.draining);
    $("sum-up").textContent = `${serving.length} / ${status.backends.length}`;
    $("sum-version").textContent = String(status.version);
    renderStrategy(status.strategy);
    renderBackends(status.backends);
  }

  function setConnState(ok, error) {
    const el = $("conn-state");
    el.dataset.state = ok ? "live" : "down";
    el.textContent = ok
      ? `Live · updated ${new Date().toLocaleTimeString()}`
      : `Cannot reach sluice (${error.message}); retrying`;
  }

  // In a cluster (the status names it), the members and the configuration revision each has
  // installed; alone, the panel stays hidden.
  let clustered = false;

  function renderCluster(c) {
    $("cluster-panel").hidden = false;
    const store = c.store_up ? "store up" : "store UNREACHABLE: changes refused, routing goes on";
    $("cluster-summary").textContent =
      `${c.name} · this instance ${c.instance} at revision ${c.revision} · ${store}`;
    const body = $("members").querySelector("tbody");
    body.replaceChildren(
      ...c.members.map((m) => {
        const tr = document.createElement("tr");
        for (const [text, cls] of [[m.id, ""], [m.proxy, ""], [String(m.revision), "num"]]) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          tr.appendChild(td);
        }
        if (m.revision < c.revision) tr.title = "behind this instance";
        return tr;
      }),
    );
  }

  async function refreshCluster() {
    if (clustered) renderCluster(await getJSON("api/cluster"));
  }

  // With per-client limits on (/api/clients says so), the busiest clients of the last second by
  // requests and by refusals; with them off, the panel stays hidden and is not asked again.
  let clientsOn = true;

  function clientRows(tableId, list) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren(
      ...list.map((c) => {
        const tr = document.createElement("tr");
        tr.dataset.client = c.client;
        const cells = [[c.client, ""], [fmtCount(c.requests_per_s), "num"],
          [fmtCount(c.refusals_per_s), "num"], [fmtCount(c.connections), "num"]];
        for (const [text, cls] of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          tr.appendChild(td);
        }
        return tr;
      }),
    );
  }

  function renderClients(c) {
    $("clients-panel").hidden = false;
    const limits = [];
    if (c.max_conns_per_client) limits.push(`${c.max_conns_per_client} connections`);
    if (c.rate_per_s) limits.push(`${fmtCount(c.rate_per_s)} req/s, burst ${c.burst}`);
    $("clients-summary").textContent =
      `per client: ${limits.join(" · ")} · refused: ${fmtCount(c.refused_connections)} connections, ` +
      `${fmtCount(c.refused_rate)} over the rate`;
    clientRows("clients-requests", c.top_by_requests);
    clientRows("clients-refusals", c.top_by_refusals);
  }

  async function refreshClients() {
    if (!clientsOn) return;
    const c = await getJSON("api/clients");
    clientsOn = c.enabled === true;
    if (clientsOn) renderClients(c);
  }

  async function refresh() {
    const [h, s] = await Promise.all([
      getJSON("api/history"), getJSON("api/status"), refreshCluster(), refreshClients(),
    ]);
    history = Array.isArray(h) ? h : [];
    clustered = typeof s.cluster === "string";
    renderStatus(s);
    drawCharts();
  }

  async function poll() {
    const started = performance.now();
    try {
      await refresh();
      setConnState(true);
    } catch (e) {
      setConnState(false, e);
    }
    setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
  }

  $("window-select").addEventListener("change", drawCharts);

  getJSON("api/strategy")
    .then((s) => fillStrategies(s.available))
    .catch(() => {
      // the status poll fills the list too
    });
  poll();
})();
