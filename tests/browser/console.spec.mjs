// The console in a real browser: Debian's chromium driven headless by
// playwright-core (no browser download). Run by tests/console_browser.rs,
// which starts the servers and talks to this script over stdin/stdout, one
// word a line:
//
//   script: READY      the page is open and its feed is live
//   test:   SENT       btc_crash.csv was sent to the server
//   script: CRASH_OK   the halt is in the live list and on the halt board
//                      within a second, and the sparkline marks it
//   test:   BROKEN     a broken rule file was written and reloaded
//   script: RELOAD_OK  the reload error shows with file:line:column
//   script: AUTH_OK    where auth is on, the API refuses a request without
//                      a token and the page asks for one
//
// Environment: CONSOLE_URL, AUTH_CONSOLE_URL, AUTH_TOKEN, SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium). Any failure prints `FAIL: ...` and
// exits 1; every wait is bounded.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import readline from "node:readline";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) fail(`${name} is not set`);
  return v;
};
const say = (word) => process.stdout.write(`${word}\n`);
const log = (msg) => process.stderr.write(`browser: ${msg}\n`);
function fail(msg) {
  process.stdout.write(`FAIL: ${msg}\n`);
  process.exit(1);
}

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function expectLine(word) {
  const { value, done } = await lines.next();
  if (done || value.trim() !== word) fail(`expected ${word} from the test, got ${done ? "end of input" : value}`);
}

const consoleUrl = env("CONSOLE_URL");
const authUrl = env("AUTH_CONSOLE_URL");
const authToken = env("AUTH_TOKEN");
const shots = env("SCREENSHOT_DIR");
const profile = mkdtempSync(join(tmpdir(), "airbag-chromium-"));

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
  viewport: { width: 1400, height: 900 },
  timeout: 30_000,
}).catch((e) => fail(`cannot launch chromium: ${e.message}`));

async function shot(page, name) {
  const path = join(shots, name);
  await page.screenshot({ path, fullPage: true });
  log(`screenshot ${path}`);
}

async function within(what, ms, promise) {
  const started = Date.now();
  try {
    await promise;
  } catch (e) {
    fail(`${what}: not within ${ms} ms (${e.message.split("\n")[0]})`);
  }
  return Date.now() - started;
}

try {
  const page = await context.newPage();
  page.on("pageerror", (e) => fail(`page error: ${e.message}`));
  await page.goto(consoleUrl, { timeout: 10_000 });
  await within("the feed going live", 10_000, page.locator("#feed-state", { hasText: "live" }).waitFor({ timeout: 10_000 }));
  await shot(page, "console-1-open.png");
  say("READY");

  await expectLine("SENT");
  const sent = Date.now();
  const alert = page.locator('#alerts li.alert.critical[data-rule="btc-flash-crash"][data-instrument="BTC-USDT"]');
  await within("the halt in the live list", 1000, alert.first().waitFor({ timeout: 1000 }));
  const inList = Date.now() - sent;
  const halt = page.locator('#halts tbody tr[data-rule="btc-flash-crash"][data-instrument="BTC-USDT"]');
  const left = Math.max(1, 1000 - (Date.now() - sent));
  await within("the halt on the halt board", left, halt.waitFor({ timeout: left }));
  const onBoard = Date.now() - sent;
  if (!(await halt.textContent()).includes("halt")) fail("the halt board row does not name the action halt");
  await within("the sparkline's alert mark", 3000,
    page.locator('#instruments tr[data-symbol="BTC-USDT"] svg.spark circle.alert-mark').first().waitFor({ timeout: 3000 }));
  const marked = Date.now() - sent;
  await alert.first().click();
  const values = await alert.first().locator(".values").innerText();
  if (!values.includes("change_pct = -8")) fail(`the expanded alert shows no change_pct = -8: ${values}`);
  await shot(page, "console-2-crash.png");
  log(`halt in the list after ${inList} ms, on the board after ${onBoard} ms, on the sparkline after ${marked} ms`);
  say(`MEASURED list_ms=${inList} board_ms=${onBoard} sparkline_ms=${marked}`);
  say("CRASH_OK");

  await expectLine("BROKEN");
  const failed = page.locator("#reload.failed", { hasText: /99-broken\.toml:\d+:\d+: / });
  await within("the reload error with file:line:column", 6000, failed.waitFor({ timeout: 6000 }));
  await shot(page, "console-3-reload-error.png");
  say("RELOAD_OK");

  const guarded = await context.newPage();
  await guarded.goto(authUrl, { timeout: 10_000 });
  await within("the token prompt", 5000, guarded.locator("#token-form").waitFor({ state: "visible", timeout: 5000 }));
  const refused = await guarded.evaluate(async () => (await fetch("/api/status")).status);
  if (refused !== 401) fail(`a request without a token got ${refused}, not 401`);
  const text = await guarded.locator("#token-error").innerText();
  if (!text.includes("no credentials")) fail(`the token prompt does not say why: ${text}`);
  await shot(guarded, "console-4-token-prompt.png");
  await guarded.fill("#token", authToken);
  await guarded.click("#token-form button");
  await within("the feed going live with the token", 5000,
    guarded.locator("#feed-state", { hasText: "live" }).waitFor({ timeout: 5000 }));
  await within("the rules with the token", 5000, guarded.locator("#rules tbody tr").first().waitFor({ timeout: 5000 }));
  await shot(guarded, "console-5-with-token.png");
  say("AUTH_OK");
} catch (e) {
  fail(e.stack || String(e));
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(0);
