// Opens the console page in Debian's headless Chromium (driven by playwright-core) and checks
// what it shows: the job and its failed batch, an export with its state and rows, a token entry's
// age, the org's API usage with the org-budget guard's figures beside it, and that markup from
// callers or Salesforce is text (no element made of it, no script run). Leaves a screenshot at
// $SCREENSHOT. Run by tests/it/console.rs, which sets CONSOLE_URL, EXPECTED and NODE_PATH (where
// playwright-core is installed).
"use strict";

const { chromium } = require("playwright-core");

const url = process.env.CONSOLE_URL;
const expected = JSON.parse(process.env.EXPECTED);
const screenshot = process.env.SCREENSHOT;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  try {
    const dialogs = [];
    page.on("dialog", async (dialog) => {
      dialogs.push(dialog.message());
      await dialog.dismiss();
    });
    const violations = [];
    page.on("console", (message) => {
      if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
    });
    const outside = [];
    page.on("request", (request) => {
      if (!request.url().startsWith(new URL(url).origin)) outside.push(request.url());
    });
    const answer = await page.goto(url, { timeout: 60000 });
    check(answer.status() === 200, "the page answered " + answer.status());
    await page.waitForSelector("body[data-loaded=true]", { timeout: 60000 });

    const jobRow = page.locator("#jobs tbody tr", { hasText: expected.job });
    await jobRow.waitFor({ timeout: 60000 });
    const jobText = await jobRow.innerText();
    check(jobText.includes("Contact"), "the job row names its object: " + jobText);
    check(jobText.includes(expected.failedBatch), "the job row shows its failed batch: " + jobText);
    check(jobText.includes("InvalidBatch"), "the failed batch's message shows: " + jobText);
    check((await jobRow.getAttribute("class")).includes("failed"), "the failed job stands out");

    const exportRow = page.locator("#exports tbody tr", { hasText: expected.exportJob });
    await exportRow.waitFor({ timeout: 60000 });
    const exportCells = await exportRow.locator("td").allInnerTexts();
    check(exportCells[1] === "bulk2", "the export row names its API: " + exportCells.join(" | "));
    check(exportCells[2] === "Completed", "the export row shows its state: " + exportCells.join(" | "));
    check(exportCells[3] === expected.exportRows, "the export row shows its rows: " + exportCells.join(" | "));
    check(/^\d+(\.\d)? (s|min|h|d) ago$/.test(exportCells[5]), "the export row shows when it started: " + exportCells.join(" | "));
    check(await page.locator("#exports .empty").isHidden(), "the exports' empty note is hidden");

    const tokenRow = page.locator("#tokens tbody tr", { hasText: expected.tokenPath });
    await tokenRow.waitFor({ timeout: 60000 });
    const tokenCells = await tokenRow.locator("td").allInnerTexts();
    check(/^\d+(\.\d)? (s|min|h|d)$/.test(tokenCells[2]), "the token's age shows: " + tokenCells.join(" | "));

    const gauge = page.locator("#gauges .gauge", { hasText: expected.org });
    await gauge.waitFor({ timeout: 60000 });
    const gaugeText = await gauge.innerText();
    check(gaugeText.includes(expected.usage), "the org's API usage shows: " + gaugeText);
    // Beside it, the org-budget guard's figures.
    const guardFigure = async (name) => (await gauge.locator(".guard-" + name + " .figure").innerText()).trim();
    check((await guardFigure("api")) === expected.guardApi, "the guard's count and ceiling show: " + gaugeText);
    check((await guardFigure("batches")) === expected.guardBatches, "the guard's batches show: " + gaugeText);
    check((await guardFigure("in-flight")) === expected.guardInFlight, "the requests in flight show: " + gaugeText);
    check((await guardFigure("refusals")) === expected.guardRefusals, "the refusals by reason show: " + gaugeText);
    check((await gauge.locator(".guard-refusals").getAttribute("class")).includes("alert"), "refusals stand out");

    // Markup from Salesforce (an object name) and from a caller (a registry path) is text.
    const objectCell = page.locator("#jobs tbody td", { hasText: expected.markupObject });
    await objectCell.waitFor({ timeout: 60000 });
    const pathCell = page.locator("#tokens tbody td", { hasText: expected.markupPath });
    await pathCell.waitFor({ timeout: 60000 });
    check((await page.locator("main img").count()) === 0, "an img element was made of the markup");
    check((await page.locator("main b").count()) === 0, "a b element was made of the markup");
    const getJob = page.locator("#operations tbody tr", { hasText: "getJob" });
    await getJob.waitFor({ timeout: 60000 });
    const rps = await page.locator("#chart-requests polyline").count();
    check(rps > 0, "the requests chart has lines");

    await page.screenshot({ path: screenshot, fullPage: true });
    check(dialogs.length === 0, "a script ran: " + dialogs.join(", "));
    check(violations.length === 0, "the page broke its own policy: " + violations.join(", "));
    check(outside.length === 0, "the page fetched from outside: " + outside.join(", "));
    console.log("console checked");
  } catch (error) {
    // The page as it stood when a check failed, for whoever reads the failure.
    await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
    throw error;
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
