// Headless Chromium (Debian's /usr/bin/chromium) driven by playwright-core, one fresh profile per run.
// UI_FROM_DISK=1 serves src/admin/ui.html from the work tree instead of the page the binary embeds
// (for development only: the API calls still go to the agent).
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { ADMIN } from './agent.mjs';

const UI_FILE = new URL('../../src/admin/ui.html', import.meta.url);
// Without the background-networking flags Chromium reaches out to Google services.
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];

export async function launch() {
  const profile = await mkdtemp(join(tmpdir(), 'sidetrace-ui-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ARGS,
    viewport: { width: 1280, height: 800 },
  });
  const problems = [];
  // The page may only talk to the agent: anything else (a CDN script, a web font) fails the test.
  await context.route(url => url.origin !== ADMIN, route => {
    problems.push(`request outside the agent: ${route.request().url()}`);
    return route.abort();
  });
  if (process.env.UI_FROM_DISK === '1') {
    await context.route(url => url.origin === ADMIN && url.pathname === '/', async route =>
      route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: await readFile(UI_FILE, 'utf8') }));
  }
  for (const p of context.pages()) await p.close();
  return {
    problems,
    async page(hash = '') {
      const page = await context.newPage();
      page.setDefaultTimeout(6000);
      page.on('pageerror', e => problems.push(`page error: ${e.message}`));
      if (hash !== null) await page.goto(`${ADMIN}/${hash}`);
      return page;
    },
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
