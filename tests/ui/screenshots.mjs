// Writes docs/ui/*.png (1280x800) of the main views, from the agent run.sh started and seeded.
// Usage: tests/ui/run.sh BIN --screenshots   (or, with an agent already seeded: node screenshots.mjs)
import { mkdir } from 'node:fs/promises';
import { launch } from './browser.mjs';
import { IDS, SPANS } from './fixtures.mjs';

const OUT = new URL('../../docs/ui/', import.meta.url);
const SHOTS = [
  ['search.png', '#/search', '#results tbody tr'],
  ['trace.png', `#/trace/${IDS.error}?span=${SPANS.payServer}`, '#detail pre.stack'],
  ['metrics.png', '#/metrics', '#m-table'],
  ['dependencies.png', '#/dependencies', '#v-dependencies .toolbar'],
];

await mkdir(OUT, { recursive: true });
const browser = await launch();
try {
  for (const [file, hash, ready] of SHOTS) {
    const page = await browser.page(hash);
    await page.waitForSelector(ready);
    await page.waitForTimeout(300);
    await page.screenshot({ path: new URL(file, OUT).pathname });
    console.log(`docs/ui/${file}`);
    await page.close();
  }
  if (browser.problems.length) throw new Error(browser.problems.join('\n'));
} finally {
  await browser.close();
}
