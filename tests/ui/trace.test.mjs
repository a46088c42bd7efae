// The trace view: opened by URL, span tree, timeline bars, the detail pane, missing traces.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IDS, SPANS } from './fixtures.mjs';
import { useBrowser } from './harness.mjs';

const row = id => `#tl-rows .row[data-span-id="${id}"]`;
const indent = (page, id) => page.$eval(`${row(id)} .nm`, el => parseFloat(getComputedStyle(el).paddingLeft));

describe('trace view', () => {
  const open = useBrowser();

  test('a trace opens directly from its URL as a nested span tree', async () => {
    const page = await open(`#/trace/${IDS.error}`);
    await page.waitForSelector('#timeline .row');
    assert.equal(await page.locator('#tl-rows .row').count(), 7);
    assert.match(await page.locator('.trace-head h2').textContent(), /GET \/checkout/);
    const [root, cartClient, cartServer, db, pay] = await Promise.all(
      [SPANS.root, SPANS.cartClient, SPANS.cartServer, SPANS.db, SPANS.payClient].map(id => indent(page, id)));
    assert.ok(root < cartClient && cartClient < cartServer && cartServer < db, `${root} ${cartClient} ${cartServer} ${db}`);
    assert.equal(pay, cartClient, 'siblings sit at the same depth');
    assert.equal(await page.title(), 'sidetrace · shop-frontend: GET /checkout');
  });

  test('every bar of the error trace is visible, inside its lane, and failed spans are red', async () => {
    const page = await open(`#/trace/${IDS.error}`);
    await page.waitForSelector('#timeline .row');
    for (const r of await page.$$('#tl-rows .row')) {
      const bar = await (await r.$('.bar')).boundingBox();
      const lane = await (await r.$('.lane')).boundingBox();
      assert.ok(bar.width > 2 && bar.height > 4, `bar ${JSON.stringify(bar)}`);
      assert.ok(bar.x >= lane.x - 0.5 && bar.x + bar.width <= lane.x + lane.width + 0.5, 'bar within its lane');
    }
    // The root spans the whole trace: its bar is (nearly) the lane's width; the db call is 45/250 of it.
    const laneW = (await page.locator(`${row(SPANS.root)} .lane`).boundingBox()).width;
    const rootW = (await page.locator(`${row(SPANS.root)} .bar`).boundingBox()).width;
    const dbW = (await page.locator(`${row(SPANS.db)} .bar`).boundingBox()).width;
    assert.ok(Math.abs(rootW - laneW) < 2, `${rootW} vs ${laneW}`);
    assert.ok(Math.abs(dbW / laneW - 45 / 250) < 0.02, `${dbW / laneW}`);
    const failed = await page.$$eval('#tl-rows .row.err', rs => rs.map(r => r.dataset.spanId));
    assert.deepEqual(failed.sort(), [SPANS.root, SPANS.payClient, SPANS.payServer].sort());
    const red = await page.$eval(`${row(SPANS.payServer)} .bar`, b => getComputedStyle(b).backgroundColor);
    assert.equal(red, 'rgb(210, 47, 39)');
  });

  test('the bar of a span with 60 attributes keeps its width; attributes stay out of the row', async () => {
    const page = await open(`#/trace/${IDS.wide}`);
    await page.waitForSelector('#timeline .row');
    const panel = await page.locator('#timeline').boundingBox();
    const r = page.locator(row(SPANS.wideRoot));
    const bar = await r.locator('.bar').boundingBox();
    const lane = await r.locator('.lane').boundingBox();
    assert.ok(bar.width > 2, `bar width ${bar.width}`);
    // The lane keeps its share of the panel and stays inside it; the root's bar fills the lane.
    assert.ok(lane.width > panel.width * 0.4, `lane ${lane.width} of ${panel.width}`);
    assert.ok(lane.x + lane.width <= panel.x + panel.width + 1, 'lane inside the panel');
    assert.ok(bar.width > lane.width * 0.95, `root bar ${bar.width} of ${lane.width}`);
    assert.ok((await r.boundingBox()).height < 40, 'one line per span');
    assert.ok(!(await r.textContent()).includes('inventory.attr_00'), 'no attributes in the row');
    // The children are 4 and 60 ms of 80: their bars are that share of the lane.
    for (const [id, share] of [['a000000000000002', 4 / 80], ['a000000000000003', 60 / 80]]) {
      const w = (await page.locator(`${row(id)} .bar`).boundingBox()).width;
      assert.ok(w > 2 && Math.abs(w / lane.width - share) < 0.02, `${id}: ${w} of ${lane.width}`);
    }
    await r.click();
    await page.waitForSelector('#detail table.attrs');
    assert.equal(await page.locator('#detail details[data-sec=attributes] table.attrs tr').count(), 60);
  });

  test('the failed span shows its status message, exception and stack trace', async () => {
    const page = await open(`#/trace/${IDS.error}`);
    await page.waitForSelector('#timeline .row');
    await page.click(`${row(SPANS.payServer)} .op`);
    const detail = page.locator('#detail');
    assert.match(await detail.locator('.status-message').textContent(), /card declined by issuer/);
    assert.match(await detail.locator('.exc-msg').textContent(), /PaymentDeclinedError: card declined by issuer \(code 51\)/);
    const stack = await detail.locator('pre.stack').innerText();
    assert.match(stack, /\n\s+at Gateway\.charge \(\/srv\/payment\/gateway\.js:88:11\)/);
    const dl = await detail.locator('dl.kv').textContent();
    assert.match(dl, /server/);
    assert.match(await detail.textContent(), /shop-payment/);
    assert.match(await detail.locator('details[data-sec=resource]').textContent(), /Resource/);
    // The selection is in the URL: a reload shows the same span.
    assert.ok(page.url().endsWith(`?span=${SPANS.payServer}`));
    await page.reload();
    await page.waitForSelector('#detail pre.stack');
    assert.equal(await page.locator('#tl-rows .row.sel').getAttribute('data-span-id'), SPANS.payServer);
  });

  test('jump to first error, then to each next one', async () => {
    const page = await open(`#/trace/${IDS.error}`);
    await page.waitForSelector('#timeline .row');
    const seen = [];
    for (let i = 0; i < 4; i++) {
      await page.click('#jump-error');
      seen.push(await page.locator('#tl-rows .row.sel').getAttribute('data-span-id'));
    }
    assert.deepEqual(seen, [SPANS.root, SPANS.payClient, SPANS.payServer, SPANS.root]);
  });

  test('subtrees collapse and expand', async () => {
    const page = await open(`#/trace/${IDS.error}`);
    await page.waitForSelector('#timeline .row');
    await page.click(`${row(SPANS.cartClient)} [data-toggle]`);
    assert.equal(await page.locator('#tl-rows .row').count(), 5);
    assert.equal(await page.locator(`${row(SPANS.cartClient)} .more`).textContent(), '+2');
    await page.click(`${row(SPANS.cartClient)} [data-toggle]`);
    assert.equal(await page.locator('#tl-rows .row').count(), 7);
    await page.click('#collapse-all');
    assert.equal(await page.locator('#tl-rows .row').count(), 4);
    await page.click('#expand-all');
    assert.equal(await page.locator('#tl-rows .row').count(), 7);
  });

  test('a span link opens the linked trace', async () => {
    const page = await open(`#/trace/${IDS.error}?span=${SPANS.payServer}`);
    await page.click(`#detail a[data-linked-trace="${IDS.fast}"]`);
    await page.waitForFunction(id => location.hash.startsWith(`#/trace/${id}`), IDS.fast);
    await page.waitForSelector(`#tl-rows .row[data-span-id="${SPANS.fastRoot}"].sel`);
    assert.match(await page.locator('.trace-head h2').textContent(), /GET \/products/);
  });

  test('a trace that is not in the store shows a clear message', async () => {
    const page = await open(`#/trace/${'ab'.repeat(16)}`);
    const box = page.locator('#trace-missing');
    assert.match(await box.textContent(), /not found/i);
    assert.match(await box.textContent(), /local store/);
    assert.ok(await box.locator('a[data-back]').isVisible());
    const page2 = await open('#/trace/not-an-id');
    assert.match(await page2.locator('#trace-missing').textContent(), /32 hex/);
  });

  test('the critical path fades the spans the trace did not wait on', async () => {
    const page = await open(`#/trace/${IDS.error}`);
    await page.waitForSelector('#timeline .row');
    await page.click('#crit');
    const crit = await page.$$eval('#tl-rows .row.crit', rs => rs.map(r => r.dataset.spanId));
    const all = Object.entries(SPANS).filter(([k]) => !['fastRoot', 'wideRoot', 'recs'].includes(k)).map(([, id]) => id);
    assert.deepEqual(crit.sort(), all.sort());
    assert.equal(await page.$eval(`${row(SPANS.recs)} .bar`, b => getComputedStyle(b).opacity), '0.25');
    assert.equal(await page.$eval(`${row(SPANS.db)} .bar`, b => getComputedStyle(b).opacity), '1');
  });
});
