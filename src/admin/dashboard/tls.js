// The dashboard's TLS part: loads /api/tls at start and every few seconds, lists the certificates
// in the TLS panel (hidden when the listener speaks plain TCP or HTTP), and raises a warning
// banner under the header while any certificate expires within WARN_DAYS days or has expired, so
// an operator sees it before clients do. Kept apart from app.js: it reads another route and needs
// nothing of the backend table.
"use strict";

(function () {
  const POLL_MS = 10000;
  // The same threshold `sluice ctl tls` marks rows with.
  const WARN_DAYS = 14;

  const $ = (id) => document.getElementById(id);

  function utc(unixS) {
    return `${new Date(unixS * 1000).toISOString().slice(0, 16).replace("T", " ")} UTC`;
  }

  function label(c) {
    return c.names.length ? c.names.join(", ") : c.file;
  }

  function warningText(c) {
    const what = `TLS certificate ${label(c)} (${c.file})`;
    if (c.days_left < 0) return `${what} expired on ${utc(c.not_after_unix_s)}`;
    const days = c.days_left === 1 ? "1 day" : `${c.days_left} days`;
    return `${what} expires in ${days}, on ${utc(c.not_after_unix_s)}`;
  }

  function renderWarning(certs) {
    const soon = certs.filter((c) => c.days_left < WARN_DAYS);
    const box = $("tls-warning");
    box.hidden = soon.length === 0;
    $("tls-warning-text").textContent = soon.length
      ? `${soon.map(warningText).join("; ")}. Renew it, then run sluice ctl tls reload (or send SIGHUP).`
      : "";
    box.dataset.files = soon.map((c) => c.file).join(" ");
  }

  function renderTable(certs) {
    const body = $("certs").tBodies[0];
    body.replaceChildren(
      ...certs.map((c) => {
        const tr = document.createElement("tr");
        tr.dataset.file = c.file;
        tr.dataset.daysLeft = String(c.days_left);
        if (c.days_left < WARN_DAYS) tr.className = "expiring";
        const cells = [
          [label(c) + (c.default ? " (default)" : ""), ""],
          [utc(c.not_after_unix_s).slice(0, 10), "date"],
          [String(c.days_left), "num"],
        ];
        for (const [text, cls] of cells) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          tr.appendChild(td);
        }
        tr.title = `${c.file}\nissuer: ${c.issuer}\nnot after: ${utc(c.not_after_unix_s)}`;
        return tr;
      }),
    );
  }

  function render(view) {
    $("tls-panel").hidden = !view.enabled;
    $("tls-summary").textContent = view.enabled
      ? `loaded ${utc(view.loaded_unix_s)} · ${view.reloads} reload${view.reloads === 1 ? "" : "s"}`
      : "";
    renderTable(view.certificates);
    renderWarning(view.certificates);
  }

  async function poll() {
    try {
      const resp = await fetch("api/tls", { cache: "no-store", headers: { Accept: "application/json" } });
      if (resp.ok) render(await resp.json());
    } catch (_) {
      // app.js reports an unreachable sluice; the panel keeps what it last showed
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
})();
