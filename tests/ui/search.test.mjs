// The search view: the list, each filter, API errors in the page, live notice, history.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { postTraces } from './agent.mjs';
import { IDS, freshTrace } from './fixtures.mjs';
import { rowIds, searched, useBrowser } from './harness.mjs';

describe('search', () => {
  const open = useBrowser();

  test('the list loads with start, root, services, spans, errors and duration columns', async () => {
    const page = await open('');
    assert.equal(await searched(page), 'done');
    const ids = await rowIds(page);
    assert.ok(ids.length >= 6, `rows: ${ids.length}`);
    const head = await page.$$eval('#results th', ths => ths.map(th => th.textContent.trim().toLowerCase()));
    for (const col of ['start', 'root span', 'services', 'spans', 'errors', 'duration']) assert.ok(head.includes(col), col);
    const err = page.locator(`#results tr[data-id="${IDS.error}"]`);
    if (await err.count()) assert.match(await err.locator('.errtag').textContent(), /error/);
  });

  test('the store status shows traces kept, evicted and the age of the oldest trace', async () => {
    const page = await open('');
    // The status is filled in by its own fetch: wait for it rather than read it at once.
    const store = page.locator('#store', { hasText: /traces kept/ });
    await store.waitFor({ timeout: 10000 });
    const text = await store.textContent();
    assert.match(text, /\d+ traces kept/);
    assert.match(text, /\d+ evicted/);
    assert.match(text, /oldest \d+[smhd]/);
  });

  test('search by a service that appears only below the root finds the trace (pick-list and button)', async () => {
    const page = await open('');
    await searched(page);
    await page.waitForSelector('select[name=service] option[value="shop-payment"]', { state: 'attached' });
    await page.selectOption('select[name=service]', 'shop-payment');
    await page.click('#sf button[type=submit]');
    await page.waitForFunction(() => location.hash.includes('service=shop-payment'));
    assert.equal(await searched(page), 'done');
    assert.deepEqual(await rowIds(page), [IDS.error]);
    // The row lists every service the trace crosses.
    const chips = await page.$$eval(`#results tr[data-id="${IDS.error}"] td:nth-child(3) .chip`, cs => cs.map(c => c.textContent));
    assert.deepEqual(chips, ['shop-cart', 'shop-frontend', 'shop-payment']);
  });

  test('the operation pick-list follows the service and filters by operation', async () => {
    const page = await open('');
    await page.waitForSelector('select[name=service] option[value="shop-cart"]', { state: 'attached' });
    await page.selectOption('select[name=service]', 'shop-cart');
    const ops = await page.$$eval('select[name=operation] option', os => os.map(o => o.value));
    assert.ok(ops.includes('SELECT cart_items'), ops.join(', '));
    assert.ok(!ops.includes('GET /inventory'), 'another service\'s operation is not offered');
    await page.selectOption('select[name=operation]', 'SELECT cart_items');
    await page.click('#sf button[type=submit]');
    await page.waitForFunction(() => location.hash.includes('operation='));
    assert.equal(await searched(page), 'done');
    assert.deepEqual(await rowIds(page), [IDS.error]);
  });

  test('search by attribute key=value (text and integer values)', async () => {
    const page = await open('');
    await page.fill('textarea[name=attr]', 'app.tenant=acme');
    await page.click('#sf button[type=submit]');
    await page.waitForFunction(() => location.hash.includes('attr='));
    assert.equal(await searched(page), 'done');
    assert.deepEqual(await rowIds(page), [IDS.slow]);
    const page2 = await open(`#/search?service=shop-payment&attr=${encodeURIComponent('http.response.status_code=500')}`);
    assert.equal(await searched(page2), 'done');
    assert.deepEqual(await rowIds(page2), [IDS.error]);
  });

  test('search by min and max duration written as 100ms and 1.5s', async () => {
    const page = await open('');
    await page.waitForSelector('select[name=service] option[value="shop-frontend"]', { state: 'attached' });
    await page.selectOption('select[name=service]', 'shop-frontend');
    await page.fill('input[name=min_duration]', '100ms');
    await page.fill('input[name=max_duration]', '1.5s');
    await page.click('#sf button[type=submit]');
    await page.waitForFunction(() => location.hash.includes('min_duration=100ms'));
    assert.equal(await searched(page), 'done');
    const ids = await rowIds(page);
    for (const id of [IDS.medium, IDS.slow, IDS.slowest, IDS.error]) assert.ok(ids.includes(id), `has ${id}`);
    assert.ok(!ids.includes(IDS.fast), 'the 20 ms trace is shorter than 100ms');
    const page2 = await open('#/search?service=shop-frontend&max_duration=100ms');
    assert.equal(await searched(page2), 'done');
    assert.deepEqual(await rowIds(page2), [IDS.fast]);
  });

  test('a bad duration shows the API error in the page and no stale rows', async () => {
    const page = await open('#/search?service=shop-frontend');
    assert.equal(await searched(page), 'done');
    assert.ok((await rowIds(page)).length > 0);
    await page.fill('input[name=min_duration]', 'soon');
    await page.click('#sf button[type=submit]');
    await page.waitForFunction(() => location.hash.includes('min_duration=soon'));
    assert.equal(await searched(page), 'error');
    const text = await page.locator('#search-error').textContent();
    assert.match(text, /min_duration/);
    assert.deepEqual(await rowIds(page), []);
  });

  test('the field the API names as bad is marked, and an unknown parameter is reported', async () => {
    const page = await open('#/search?min_duration=soon');
    assert.equal(await searched(page), 'error');
    assert.equal(await page.getAttribute('input[name=min_duration]', 'aria-invalid'), 'true');
    const page2 = await open('#/search?colour=blue');
    assert.equal(await searched(page2), 'error');
    assert.match(await page2.locator('#search-error').textContent(), /colour/);
  });

  test('errors only lists failed traces only', async () => {
    const page = await open('#/search?errors=true');
    assert.equal(await searched(page), 'done');
    const flags = await page.$$eval('#results tbody tr', trs => trs.map(tr => tr.classList.contains('failed')));
    assert.ok(flags.length > 0);
    assert.ok(flags.every(Boolean));
    assert.ok((await rowIds(page)).includes(IDS.error));
  });

  test('sorting by longest orders the rows by duration', async () => {
    const page = await open('#/search?service=shop-frontend&sort=longest');
    assert.equal(await searched(page), 'done');
    const ids = await rowIds(page);
    assert.equal(ids[0], IDS.slowest);
    assert.equal(ids.at(-1), IDS.fast);
    assert.equal(await page.inputValue('select[name=sort]'), 'longest');
  });

  test('a time range in the future matches nothing; the last 15 minutes match the seeded traces', async () => {
    const page = await open(`#/search?service=shop-frontend&start=${Date.now() + 3600e3}`);
    assert.equal(await searched(page), 'done');
    assert.deepEqual(await rowIds(page), []);
    const page2 = await open('#/search?service=shop-frontend&lookback=15m');
    assert.equal(await searched(page2), 'done');
    assert.ok((await rowIds(page2)).includes(IDS.fast));
    assert.equal(await page2.inputValue('select[name=lookback]'), '15m');
  });

  test('new traces are announced, not rendered under the cursor, and shown on request', async () => {
    const page = await open('#/search');
    assert.equal(await searched(page), 'done');
    const before = await rowIds(page);
    const id = `5eed${Date.now().toString(16).padStart(28, '0')}`;
    await postTraces(freshTrace(id), Date.now() - 1000);
    const pill = page.locator('#newpill');
    await pill.waitFor({ state: 'visible', timeout: 8000 });
    assert.match(await pill.textContent(), /\d+ new traces? — show/);
    assert.deepEqual(await rowIds(page), before, 'the list did not change by itself');
    await pill.click();
    await page.waitForFunction(i => document.querySelector(`#results tr[data-id="${i}"]`), id);
    assert.equal(await pill.isVisible(), false);
  });

  test('a trace opens in place and the back button returns to the same search', async () => {
    const page = await open('#/search?service=shop-frontend&min_duration=100ms');
    assert.equal(await searched(page), 'done');
    await page.click(`#results tr[data-id="${IDS.error}"] td:first-child`);
    await page.waitForSelector('#timeline .row');
    assert.equal(await page.isVisible('#v-search'), false, 'the list is not shown below the trace');
    assert.ok(page.url().includes(`#/trace/${IDS.error}`));
    await page.goBack();
    await page.waitForSelector('#v-search', { state: 'visible' });
    assert.ok(page.url().endsWith('#/search?service=shop-frontend&min_duration=100ms'), page.url());
    assert.equal(await page.inputValue('input[name=min_duration]'), '100ms');
    assert.ok((await rowIds(page)).includes(IDS.error));
    await page.goForward();
    await page.waitForSelector('#timeline .row');
  });

  test('a search URL survives a reload', async () => {
    const page = await open('#/search?service=shop-frontend&min_duration=1s');
    assert.equal(await searched(page), 'done');
    await page.reload();
    assert.equal(await searched(page), 'done');
    assert.equal(await page.inputValue('select[name=service]'), 'shop-frontend');
    assert.equal(await page.inputValue('input[name=min_duration]'), '1s');
    assert.deepEqual(await rowIds(page), [IDS.slowest]);
  });

  test('a trace ID typed in the form opens that trace', async () => {
    const page = await open('');
    await page.fill('input[name=trace_id]', IDS.wide);
    await page.press('input[name=trace_id]', 'Enter');
    await page.waitForSelector('#timeline .row');
    assert.ok(page.url().endsWith(`#/trace/${IDS.wide}`));
  });
});
