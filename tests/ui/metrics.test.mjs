// The metrics table (span metrics over every span) and the service dependency graph.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IDS } from './fixtures.mjs';
import { useBrowser } from './harness.mjs';

const series = (service, operation, kind) =>
  `#m-table tr[data-service="${service}"][data-operation="${operation}"][data-kind="${kind}"]`;

describe('metrics', () => {
  const open = useBrowser();

  test('the metrics table shows rate, error rate and p50/p90/p99 per operation', async () => {
    const page = await open('#/metrics');
    const tr = page.locator(series('shop-payment', 'POST /pay', 'server'));
    await tr.waitFor();
    assert.equal(await tr.locator('td.p99').textContent(), '130 ms');
    assert.match(await tr.textContent(), /100\.0 %/, 'error rate');
    // 100 spans of 1..100 ms: the percentiles are told apart.
    const batch = page.locator(series('shop-batch', 'process item', 'internal'));
    const ms = async col => {
      const m = /^(\d+(?:\.\d+)?) ms$/.exec(await batch.locator(`td.${col}`).textContent());
      assert.ok(m, col);
      return Number(m[1]);
    };
    for (const [col, want] of [['p50', 50], ['p90', 90], ['p99', 99]]) {
      const got = await ms(col);
      assert.ok(Math.abs(got - want) <= 1.5, `${col}: ${got} (want ~${want})`);
    }
    assert.match(await batch.locator('td:nth-child(4)').textContent(), /\/s$/, 'a rate');
    assert.equal(await page.locator('nav a.on').textContent(), 'Metrics');
  });

  test('a service filter in the URL shows only that service', async () => {
    const page = await open('#/metrics?service=shop-cart');
    await page.locator(series('shop-cart', 'SELECT cart_items', 'client')).waitFor();
    const services = await page.$$eval('#m-table tbody tr', trs => [...new Set(trs.map(tr => tr.dataset.service))]);
    assert.deepEqual(services, ['shop-cart']);
    assert.equal(await page.inputValue('#m-service'), 'shop-cart');
  });

  test('each operation links to its slowest and its failed trace, with a latency histogram', async () => {
    const page = await open('#/metrics?service=shop-payment');
    const tr = page.locator(series('shop-payment', 'POST /pay', 'server'));
    await tr.waitFor();
    assert.equal(await tr.locator('a.failed-trace').getAttribute('href'), `#/trace/${IDS.error}`);
    assert.equal(await tr.locator('a.slowest-trace').getAttribute('href'), `#/trace/${IDS.error}`);
    assert.ok(await tr.locator('svg.hist rect').count() >= 1, 'histogram bars');
    // The service filter is a pick-list; the link opens the trace.
    await page.selectOption('#m-service', 'shop-frontend');
    const report = page.locator(`${series('shop-frontend', 'GET /report', 'server')} a.slowest-trace`);
    assert.equal(await report.getAttribute('href'), `#/trace/${IDS.slowest}`);
    await report.click();
    await page.waitForSelector('#timeline .row');
    assert.match(await page.locator('.trace-head h2').textContent(), /GET \/report/);
  });

  test('the dependency view shows the calls between services, with errors', async () => {
    const page = await open('#/dependencies');
    const edge = (p, c) => page.locator(`#v-dependencies table.edges tr[data-parent="${p}"][data-child="${c}"]`);
    await edge('shop-frontend', 'shop-payment').waitFor();
    const pay = await edge('shop-frontend', 'shop-payment').locator('td').allTextContents();
    assert.ok(Number(pay[2]) >= 1 && Number(pay[3]) >= 1, pay.join(' | '));
    const cart = await edge('shop-frontend', 'shop-cart').locator('td').allTextContents();
    assert.equal(cart[3], '0');
    assert.ok(await page.locator('#v-dependencies svg .node').count() >= 3);
  });
});
