#!/usr/bin/env node
// Drives Debian's Chromium (/usr/bin/chromium, through playwright-core: no browser download) against
// the dashboard of a running sluice.
//
//   node dashboard.mjs <admin-url> --disable <address>     end-to-end check (tests/dashboard.rs)
//   node dashboard.mjs <admin-url> --screenshot <file.png> picture for the README (scripts/screenshot.sh)
//   node dashboard.mjs <admin-url> --tls-warning <file>    the expiry banner names this certificate file
//                                                          (tests/tls_dashboard.rs)
//   node dashboard.mjs <admin-url> --clients N             top-clients panel shows N rows in each list
//   node dashboard.mjs <admin-url> --learned N             N backend rows show what bandit learned
//
// Options: --min-points N (chart points to wait for, default 2), --rows N (backend rows to wait
// for, default 1), --chromium PATH (default $CHROMIUM or /usr/bin/chromium), --timeout-ms N (per
// wait, default 60000: generous, since a wait ends as soon as its condition holds). Waits on conditions only, never on fixed delays. On success prints one JSON
// line of what it saw and exits 0; exits 1 when the page misbehaves and 2 when a tool is missing.
import { existsSync } from "node:fs";

const HELP = "scripts/test.sh installs what this needs (Debian chromium, npm ci --prefix tests/browser)";
// What the machine's Chromium needs in a sandboxed, offline container; Playwright adds --headless
// and a fresh temporary --user-data-dir on every launch.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const VIEWPORT = { width: 1280, height: 800 };
const WATCHDOG_MS = 240_000;

function parseArgs(argv) {
  const opts = {
    url: null,
    disable: null,
    screenshot: null,
    tlsWarning: null,
    clients: 0,
    learned: 0,
    minPoints: 2,
    rows: 1,
    chromium: process.env.CHROMIUM || "/usr/bin/chromium",
    timeoutMs: 60_000,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === "--disable") opts.disable = value();
    else if (arg === "--screenshot") opts.screenshot = value();
    else if (arg === "--tls-warning") opts.tlsWarning = value();
    else if (arg === "--min-points") opts.minPoints = Number(value());
    else if (arg === "--rows") opts.rows = Number(value());
    else if (arg === "--clients") opts.clients = Number(value());
    else if (arg === "--learned") opts.learned = Number(value());
    else if (arg === "--chromium") opts.chromium = value();
    else if (arg === "--timeout-ms") opts.timeoutMs = Number(value());
    else if (!arg.startsWith("--") && !opts.url) opts.url = arg;
    else usage(`unknown argument ${arg}`);
  }
  if (!opts.url) usage("the admin URL is missing");
  if (!opts.disable && !opts.screenshot && !opts.tlsWarning && !opts.clients && !opts.learned) {
    usage("say --disable ADDRESS, --screenshot PATH, --tls-warning FILE, --clients N or --learned N");
  }
  return opts;
}

function usage(message) {
  console.error(`dashboard.mjs: ${message}\nusage: node dashboard.mjs <admin-url> (--disable ADDRESS | --screenshot PATH | --tls-warning FILE) [options]`);
  process.exit(2);
}

function fail(message) {
  console.error(`dashboard.mjs: ${message}`);
  process.exitCode = 1;
  throw new Error(message);
}

function attr(value) {
  return `"${value.replace(/["\\]/g, "\\$&")}"`;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let chromium;
  try {
    ({ chromium } = await import("playwright-core"));
  } catch (e) {
    console.error(`dashboard.mjs: playwright-core is not installed (${e.message}); ${HELP}`);
    process.exit(2);
  }
  if (!existsSync(opts.chromium)) {
    console.error(`dashboard.mjs: no Chromium at ${opts.chromium}; ${HELP}`);
    process.exit(2);
  }

  const origin = new URL(opts.url).origin;
  const browser = await chromium.launch({ executablePath: opts.chromium, headless: true, args: CHROMIUM_ARGS });
  try {
    const context = await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 });
    const page = await context.newPage();
    page.setDefaultTimeout(opts.timeoutMs);

    // The page must be self-contained and quiet: nothing fetched from elsewhere, no script errors,
    // no unexpected dialogs (a prompt would mean a 401, a confirm a click on Remove).
    const problems = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(origin)) problems.push(`request outside sluice: ${r.url()}`);
    });
    page.on("pageerror", (e) => problems.push(`script error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()}`);
    });
    page.on("dialog", async (d) => {
      problems.push(`unexpected ${d.type()}: ${d.message()}`);
      await d.dismiss();
    });

    try {
      await drive(page, opts, problems);
    } catch (e) {
      console.error(`dashboard.mjs: the page when it failed: ${await pageState(page)}`);
      throw e;
    }
  } finally {
    await browser.close();
  }
}

/** What the page showed, for a failure message. */
async function pageState(page) {
  try {
    return await page.evaluate(() =>
      JSON.stringify({
        connection: document.querySelector("#conn-state")?.textContent,
        notice: document.querySelector("#notice")?.textContent.trim(),
        charts: [...document.querySelectorAll("canvas.chart")].map((c) => `${c.id}=${c.dataset.points}`),
        rows: [...document.querySelectorAll("#backends tbody tr")].map((tr) => tr.innerText.replace(/\s+/g, " ")),
      })
    );
  } catch (e) {
    return `(unreadable: ${e.message})`;
  }
}

/** Opens the dashboard, waits for charts and rows, then disables a backend or takes the picture. */
async function drive(page, opts, problems) {
  const resp = await page.goto(opts.url);
  if (!resp || resp.status() !== 200) fail(`GET ${opts.url} answered ${resp && resp.status()}`);
  if (!(resp.headers()["content-type"] || "").startsWith("text/html")) fail("the dashboard is not text/html");

  // The charts need traffic (the latency chart draws only answered requests); the TLS check
  // runs without any.
  if (opts.disable || opts.screenshot) {
    await page.waitForFunction(
      (min) => {
        const charts = [...document.querySelectorAll("canvas.chart")];
        return charts.length === 4 && charts.every((c) => c.width > 0 && Number(c.dataset.points) >= min);
      },
      opts.minPoints
    );
  }
  await page.waitForFunction(
    (n) => document.querySelectorAll("#backends tbody tr[data-address]").length >= n,
    opts.rows
  );

  const seen = { charts: {}, rows: [], disabled: null, screenshot: null, tlsWarning: null, certs: [], clients: null, learned: null };
  if (opts.learned) {
    // The bandit columns: filled in on N rows.
    await page.waitForFunction(
      (n) => document.querySelectorAll('#backends tbody tr[data-address]:not([data-pacing=""])').length >= n,
      opts.learned
    );
    seen.learned = await page.$$eval("#backends tbody tr[data-address]", (trs) =>
      trs.map((tr) => ({
        address: tr.dataset.address,
        belief: tr.querySelector("td.belief").textContent,
        limit: tr.querySelector("td.limit").textContent,
        pacing: tr.querySelector("td.pacing").textContent,
      }))
    );
  }
  if (opts.clients) {
    // The top-clients panel: rows in both of its tables.
    await page.waitForFunction(
      (n) =>
        document.querySelectorAll("#clients-requests tbody tr").length >= n &&
        document.querySelectorAll("#clients-refusals tbody tr").length >= n,
      opts.clients
    );
    seen.clients = await page.evaluate(() => {
      const rows = (id) =>
        [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) => ({
          client: tr.dataset.client,
          cells: [...tr.cells].map((td) => td.textContent),
        }));
      return { requests: rows("clients-requests"), refusals: rows("clients-refusals") };
    });
  }
  if (opts.disable) {
    const row = page.locator(`#backends tbody tr[data-address=${attr(opts.disable)}]`);
    await row.getByRole("button", { name: `Disable ${opts.disable}`, exact: true }).click();
    // The notice hides itself after a few seconds; its text stays, so wait for the text.
    await page.locator("#notice", { hasText: `${opts.disable} disabled` }).waitFor({ state: "attached" });
    await page.locator(`#backends tbody tr[data-address=${attr(opts.disable)}][data-enabled="false"]`).waitFor();
    await row.getByRole("button", { name: `Enable ${opts.disable}`, exact: true }).waitFor();
    seen.disabled = opts.disable;
  }
  if (opts.tlsWarning) {
    // The banner is shown (not only present) and names the file; the panel marks its row.
    const banner = page.locator("#tls-warning", { hasText: opts.tlsWarning });
    await banner.waitFor({ state: "visible" });
    await page.locator(`#certs tbody tr.expiring[data-file=${attr(opts.tlsWarning)}]`).waitFor();
    seen.tlsWarning = await banner.innerText();
    seen.certs = await page.$$eval("#certs tbody tr", (trs) =>
      trs.map((tr) => ({ file: tr.dataset.file, daysLeft: Number(tr.dataset.daysLeft), expiring: tr.classList.contains("expiring") }))
    );
  }
  if (opts.screenshot) {
    await page.screenshot({ path: opts.screenshot });
    seen.screenshot = opts.screenshot;
  }

  seen.charts = await page.$$eval("canvas.chart", (cs) =>
    Object.fromEntries(cs.map((c) => [c.id, Number(c.dataset.points)]))
  );
  seen.rows = await page.$$eval("#backends tbody tr[data-address]", (trs) =>
    trs.map((tr) => ({ address: tr.dataset.address, enabled: tr.dataset.enabled === "true", health: tr.dataset.health }))
  );
  if (problems.length) fail(problems.join("\n"));
  console.log(JSON.stringify(seen));
}

setTimeout(() => {
  console.error(`dashboard.mjs: gave up after ${WATCHDOG_MS} ms`);
  process.exit(1);
}, WATCHDOG_MS).unref();

main().catch((e) => {
  if (!process.exitCode) console.error(`dashboard.mjs: ${e.stack || e.message}`);
  process.exitCode = process.exitCode || 1;
});
