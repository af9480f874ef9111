// End-to-end: a new user clicks through mlbox's UI in a real browser (Debian's chromium driven by
// playwright-core). Run by `cargo test` (tests/e2e/mod.rs), which starts the server with the small
// taxi pipeline loaded and sign-in on, and passes BASE_URL, MLBOX_PASSWORD (the admin's), SHOTS
// (where to save a screenshot of every page) and CHROMIUM.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SHOTS ?? "/tmp/mlbox-ui-shots";
const PIPELINE = process.env.PIPELINE ?? "taxi_small";
const MODEL = process.env.MODEL ?? "taxi-duration";
let browser, page;
const errors = [];

before(async () => {
  assert.ok(BASE, "BASE_URL must name the server");
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
});
after(async () => { await browser?.close(); });

async function shot(name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

test("open, trigger, watch live, read a log, search, promote", { timeout: 600_000 }, async () => {
  // Sign-in is on: the first page asks for a login, and comes back after it.
  await page.goto(`${BASE}/`);
  await page.waitForURL("**/login?next=*");
  await shot("00-login");
  await page.fill('input[name="name"]', process.env.MLBOX_USER ?? "admin");
  await page.fill('input[name="password"]', "wrong password");
  await page.click('button:text-is("Log in")');
  await page.locator(".error-box", { hasText: "Wrong user name or password" }).waitFor();
  // That answer is a 401, which the browser logs as a failed load: expected here, nowhere else.
  assert.ok(errors.every((e) => e.includes("status of 401")), errors.join("\n"));
  errors.length = 0;
  await page.fill('input[name="name"]', process.env.MLBOX_USER ?? "admin");
  await page.fill('input[name="password"]', process.env.MLBOX_PASSWORD);
  await page.click('button:text-is("Log in")');
  await page.waitForURL(`${BASE}/`);
  assert.match(await page.locator("form.who").textContent(), /admin \(admin\)/);

  // Home.
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  assert.equal(await page.locator('link[rel="icon"]').count(), 1);
  await shot("01-home");

  // Pipelines → trigger the taxi pipeline from its row's form.
  await page.click('header nav a:text-is("Pipelines")');
  await page.waitForURL("**/pipelines");
  await shot("02-pipelines");
  const row = page.locator("tr", { has: page.locator(`a[href="/pipelines/${PIPELINE}"]`) });
  await row.locator("summary", { hasText: "Trigger" }).click();
  await shot("03-trigger-form");
  await row.locator("button", { hasText: "Start run" }).click();
  await page.waitForURL(/\/runs\/\d+$/);
  const runUrl = page.url();

  // Watch it reach success live: the page is marked, and the mark must survive (no reload).
  await page.evaluate(() => { window.__sameDocument = true; });
  const badge = page.locator('.title-row [data-state-of^="run:"]');
  assert.match(await badge.textContent(), /queued|running/);
  await shot("04-run-live");
  await page.waitForFunction(
    () => document.querySelector('.title-row [data-state-of^="run:"]').textContent === "success",
    null,
    { timeout: 540_000, polling: 250 },
  );
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the state changed without a reload");
  assert.equal(await page.locator('g.node[data-task="train"]').getAttribute("class"), "node st-success");
  await page.locator(".flash", { hasText: "Run finished" }).waitFor();
  await shot("05-run-success");

  // Open a task log from the refreshed run page.
  await page.goto(runUrl);
  await page.click('table a:text-is("train")');
  await page.waitForURL(/task=train/);
  const log = page.locator("#log pre.log");
  await log.waitFor();
  const text = await log.textContent();
  assert.match(text, /epoch/, "the train log shows its epochs");
  await shot("06-task-log");

  // Search for a word from that log with the header's box.
  await page.fill("header form.search input", "epoch");
  await page.press("header form.search input", "Enter");
  await page.waitForURL(/\/search\?q=epoch/);
  await page.locator("h2", { hasText: "logs" }).waitFor();
  assert.ok((await page.locator(".snippet b").count()) > 0, "the word is highlighted");
  await shot("07-search");

  // Promote a model: confirm the dialog, tick the box, and see the move in the history.
  await page.click('header nav a:text-is("Models")');
  await page.waitForURL("**/models");
  await shot("08-models");
  await page.click(`a[href="/models/${MODEL}"]`);
  await page.waitForURL(`**/models/${MODEL}`);
  await page.fill('form[action$="/promote"] input[name="alias"]', "staging");
  await page.fill('form[action$="/promote"] input[name="reason"]', "promoted in the browser");
  await page.check('form[action$="/promote"] input[name="confirm"]');
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await page.click('form[action$="/promote"] button[type="submit"]');
  await page.waitForURL(`**/models/${MODEL}`);
  await page.locator("td", { hasText: "promoted in the browser" }).waitFor();
  assert.match(asked, /Move this alias/);
  await shot("09-model-promoted");

  // "Try it": the example goes to the serving endpoint and the answer shows in place.
  await page.click('form[data-try] button[type="submit"]');
  await page.locator(".try-output", { hasText: "predictions" }).waitFor();
  await shot("10-model-try");

  // A second run (through the API), so two trainings can be compared.
  // The request shares the browser's session, so a change carries the page's CSRF token.
  const csrf = await page.locator('meta[name="csrf-token"]').getAttribute("content");
  assert.equal(csrf.length, 64);
  const refused = await page.request.post(`${BASE}/api/v1/pipelines/${PIPELINE}/trigger`, { data: { params: {} } });
  assert.equal(refused.status(), 403, "a session's change without its CSRF token is refused");
  const trig = await page.request.post(`${BASE}/api/v1/pipelines/${PIPELINE}/trigger`,
    { data: { params: {} }, headers: { "x-csrf-token": csrf } });
  assert.equal(trig.status(), 201);
  const { run_id } = await trig.json();
  for (let i = 0; ; i++) {
    const r = await (await page.request.get(`${BASE}/api/v1/runs/${run_id}`)).json();
    if (["success", "failed", "cancelled"].includes(r.run.state)) { assert.equal(r.run.state, "success"); break; }
    assert.ok(i < 2400, "the second run finishes");
    await new Promise((ok) => setTimeout(ok, 250));
  }

  // Every other page, for the screenshots (and no script errors anywhere).
  await page.click('header nav a:text-is("Experiments")');
  await page.waitForURL("**/experiments");
  await shot("11-experiments");
  const boxes = page.locator('input[name="ids"]');
  assert.ok((await boxes.count()) >= 2, "two experiments to compare");
  await boxes.nth(0).check();
  await boxes.nth(1).check();
  await page.click("#compare button");
  await page.waitForURL(/experiments\/compare/);
  await page.locator("svg.chart.line").first().waitFor();
  await shot("12-compare");
  await page.click('header nav a:text-is("Datasets")');
  await page.waitForURL("**/datasets");
  await shot("13-datasets");
  // `trips` is the dataset the pipeline validates: its page has statistics.
  await page.click('table a[href="/datasets/trips"]');
  await page.waitForURL(/\/datasets\/trips/);
  await page.locator("svg.chart.bars").first().waitFor();
  await shot("14-dataset");
  await page.goto(`${BASE}/pipelines/${PIPELINE}`);
  await page.locator("svg.dag").waitFor();
  await shot("15-pipeline");
  await page.click('header nav a:text-is("Runs")');
  await page.waitForURL("**/runs");
  await shot("16-runs");
  await page.goto(`${BASE}/`);
  await shot("17-home-after");

  // Log out: the session ends and pages ask for a login again.
  await page.click('form.who button:text-is("Log out")');
  await page.waitForURL("**/login");
  await page.goto(`${BASE}/runs`);
  await page.waitForURL("**/login?next=*");
  assert.deepEqual(errors, []);
});
