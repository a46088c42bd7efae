// Talking to the agent under test: its addresses (from run.sh) and OTLP/JSON posts.
import { otlpRequest } from './fixtures.mjs';

export const ADMIN = process.env.SIDETRACE_ADMIN_URL || 'http://127.0.0.1:23133';
export const OTLP_HTTP = process.env.SIDETRACE_OTLP_HTTP_URL || 'http://127.0.0.1:24318';

export const sleep = ms => new Promise(r => setTimeout(r, ms));

export async function waitReady(timeoutMs = 15000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try { if ((await fetch(`${ADMIN}/readyz`)).ok) return; } catch { /* not up yet */ }
    if (Date.now() > until) throw new Error(`the agent at ${ADMIN} did not become ready`);
    await sleep(100);
  }
}

// Posts traces and waits until the store serves each of them.
export async function postTraces(traces, startMs = Date.now() - 60000) {
  const res = await fetch(`${OTLP_HTTP}/v1/traces`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(otlpRequest(traces, startMs)),
  });
  const text = await res.text();
  if (!res.ok || /rejectedSpans/.test(text)) throw new Error(`POST /v1/traces: ${res.status} ${text}`);
  for (const id of Object.keys(traces)) {
    const until = Date.now() + 10000;
    while (!(await fetch(`${ADMIN}/api/traces/${id}`)).ok) {
      if (Date.now() > until) throw new Error(`trace ${id} never reached the store`);
      await sleep(50);
    }
  }
}
