// The Node.js X-Ray SDK (aws-xray-sdk-core) as a client of sidetrace's X-Ray daemon port, driven
// by tests/python/test_xray_sdk.py. Prints one JSON object on stdout: what the SDK sent.
//
//   node send_segment.js send UDP_ADDR
//     Sampling off: one segment with nested subsegments, annotations, non-ASCII metadata, an
//     error and an SQL subsegment. Prints {"datagrams": [...]}: each UDP payload as sent.
//   node send_segment.js sampling UDP_ADDR TCP_ADDR N
//     Centralised sampling through the proxy at TCP_ADDR: waits for the rules, makes N decisions
//     for "never-sampled" and for "node-checkout", sends the sampled segments, waits for one
//     SamplingTargets answer. Prints the decisions, the rules loaded, the sampling calls' bodies
//     and the datagrams.
'use strict';

const dgram = require('dgram');
const http = require('http');

const AWSXRay = require('aws-xray-sdk-core');
const SegmentEmitter = require('aws-xray-sdk-core/dist/lib/segment_emitter');
const ServiceConnector = require('aws-xray-sdk-core/dist/lib/middleware/sampling/service_connector');
const ruleCache = require('aws-xray-sdk-core/dist/lib/middleware/sampling/rule_cache');
const rulePoller = require('aws-xray-sdk-core/dist/lib/middleware/sampling/rule_poller');
const targetPoller = require('aws-xray-sdk-core/dist/lib/middleware/sampling/target_poller');

// The pollers' intervals (5 min for rules, 10 s for targets) are module constants handed to
// setInterval when the sampler starts; shorten them for this process only.
const FAST_POLL_MS = 300;
const DEADLINE_MS = 15000;

const [mode, udpAddr, tcpAddr, count] = process.argv.slice(2);

AWSXRay.setLogger({
  debug() {},
  info() {},
  warn: (...a) => console.error('xray-sdk warn:', ...a),
  error: (...a) => console.error('xray-sdk error:', ...a),
});
AWSXRay.enableManualMode();
AWSXRay.setContextMissingStrategy('LOG_ERROR');

// Every datagram the emitter sends, recorded as the bytes that go on the wire.
const datagrams = [];
let pendingSends = 0;
const realSocket = dgram.createSocket('udp4');
SegmentEmitter.socket = {
  send(msg, offset, length, port, address, callback) {
    datagrams.push(msg.subarray(offset, offset + length).toString('utf8'));
    pendingSends += 1;
    realSocket.send(msg, offset, length, Number(port), address, (err) => {
      pendingSends -= 1;
      callback(err);
    });
  },
};

function waitFor(pred, what) {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (pred()) return resolve();
      if (Date.now() - start > DEADLINE_MS) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 20);
    };
    tick();
  });
}

function finish(out) {
  waitFor(() => pendingSends === 0, 'UDP sends').then(() => {
    process.stdout.write(JSON.stringify(out) + '\n');
    realSocket.close();
    process.exit(0);
  }, fail);
}

function fail(err) {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
}

function sendCheckout() {
  const segment = new AWSXRay.Segment('node-checkout');
  segment.addAnnotation('tenant', 'ünïcödé ✓ 日本');
  segment.addAnnotation('attempt', 3);
  segment.addAnnotation('vip', true);
  segment.addMetadata('note', '日本語 ünïcödé', 'default');
  segment.addMetadata('order', { items: ['café', 'crème brûlée'], total: 12.5 }, 'shop');

  const validate = segment.addNewSubsegment('validate');
  validate.addAnnotation('rule', 'größe');
  const parse = validate.addNewSubsegment('parse-items');
  parse.addMetadata('raw', 'ünïcödé 日本語', 'default');
  const lookup = parse.addNewSubsegment('price-lookup');
  let err;
  try {
    throw new RangeError("no price for 'crème brûlée'");
  } catch (e) {
    err = e;
  }
  lookup.close(err);
  parse.close();
  validate.close();

  const db = segment.addNewSubsegment('orders-db@localhost');
  db.namespace = 'remote';
  db.addSqlData({
    url: 'postgresql://localhost:5432/orders',
    sanitized_query: 'SELECT * FROM orders WHERE id = $1',
    database_type: 'PostgreSQL',
    database_version: '16.2',
    user: 'app',
    driver_version: 'pg-8.11',
  });
  db.close();
  segment.close();
  return segment.trace_id;
}

async function sampling() {
  // What the SDK's sampling calls send and get back, recorded at the HTTP client it uses.
  const calls = [];
  ServiceConnector.httpClient = {
    request(options, onResponse) {
      const call = { path: options.path, body: '', status: null, response: '' };
      calls.push(call);
      const req = http.request(options, (res) => {
        call.status = res.statusCode;
        res.on('data', (d) => { call.response += d; });
        res.on('end', () => { call.done = true; });
        onResponse(res);
      });
      const write = req.write.bind(req);
      req.write = (chunk, ...rest) => {
        call.body += chunk;
        return write(chunk, ...rest);
      };
      req.on('error', (e) => { call.error = String(e); call.done = true; });
      return req;
    },
  };
  const realSetInterval = global.setInterval;
  global.setInterval = (fn, ms, ...args) => realSetInterval(fn, Math.min(ms, FAST_POLL_MS), ...args);
  try {
    AWSXRay.middleware.sampler.start();
  } finally {
    global.setInterval = realSetInterval;
  }
  await waitFor(() => ruleCache.getRules().length >= 2, 'sampling rules');

  const n = Number(count);
  const decisions = { 'never-sampled': [], 'node-checkout': [] };
  for (let i = 0; i < n; i += 1) {
    for (const name of Object.keys(decisions)) {
      const decision = AWSXRay.middleware.sampler.shouldSample({
        host: 'shop.example', httpMethod: 'GET', urlPath: `/orders/${i}`, serviceName: name,
      });
      decisions[name].push(decision);
      const segment = new AWSXRay.Segment(name);
      if (!decision) segment.notTraced = true;
      else segment.setMatchedSamplingRule(decision);
      segment.close();
    }
  }
  const targetsAnswered = () => calls.some((c) => c.path === '/SamplingTargets' && c.done && c.status === 200);
  await waitFor(targetsAnswered, 'a SamplingTargets answer');
  // Stop polling (a rule poll is delayed by up to 5 ms of jitter), then let every call end, so
  // that the calls reported are all the proxy saw.
  clearInterval(rulePoller.poller);
  clearInterval(targetPoller.poller);
  await new Promise((r) => setTimeout(r, 50));
  await waitFor(() => calls.every((c) => c.done), 'the sampling calls to end');
  finish({
    decisions,
    rules: ruleCache.getRules().map((r) => ({ name: r.getName(), rate: r.getRate() })),
    calls,
    datagrams,
  });
}

try {
  if (mode === 'send') {
    AWSXRay.middleware.disableCentralizedSampling();
    AWSXRay.setDaemonAddress(udpAddr);
    sendCheckout();
    finish({ datagrams });
  } else if (mode === 'sampling') {
    AWSXRay.setDaemonAddress(`udp:${udpAddr} tcp:${tcpAddr}`);
    sampling().catch(fail);
  } else {
    fail(new Error(`usage: send_segment.js send UDP_ADDR | sampling UDP_ADDR TCP_ADDR N (got ${mode})`));
  }
} catch (e) {
  fail(e);
}
