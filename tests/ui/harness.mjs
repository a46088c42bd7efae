// Per test file: one browser; per test, fresh pages that are closed afterwards, and no page errors
// or requests outside the agent allowed.
import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import { launch } from './browser.mjs';

export function useBrowser() {
  let browser;
  const pages = [];
  before(async () => { browser = await launch(); });
  after(async () => { await browser?.close(); });
  afterEach(async () => {
    for (const p of pages.splice(0)) await p.close();
    const problems = browser.problems.splice(0);
    assert.deepEqual(problems, [], 'no page errors and no requests outside the agent');
  });
  return async hash => {
    const page = await browser.page(hash);
    pages.push(page);
    return page;
  };
}

// Trace IDs of the rows in the search results, in order.
export const rowIds = page => page.$$eval('#results tbody tr[data-id]', trs => trs.map(tr => tr.dataset.id));

// Waits until the search list shows the answer to the search in the URL (rows, none, or an error).
export async function searched(page) {
  await page.waitForFunction(() => {
    const box = document.querySelector('#results');
    const hash = location.hash.replace(/^#\/?/, '');
    const query = new URLSearchParams(hash.includes('?') ? hash.slice(hash.indexOf('?') + 1) : '').toString();
    return hash.startsWith('search') || hash === '' ? box.dataset.query === query && box.dataset.state !== 'loading' : false;
  });
  return page.$eval('#results', el => el.dataset.state);
}
