// The traces the UI tests seed over OTLP/JSON, with fixed IDs so each test knows what to look for.

export const IDS = {
  error: '5eed0000000000000000000000000e01', // shop-frontend -> shop-cart -> db, shop-frontend -> shop-payment (fails)
  wide: '5eed0000000000000000000000000a01', // its root span has 60 attributes
  fast: '5eed0000000000000000000000000f01', // 20 ms
  medium: '5eed0000000000000000000000000f02', // 150 ms
  slow: '5eed0000000000000000000000000f03', // 400 ms, app.tenant=acme
  slowest: '5eed0000000000000000000000000f04', // 1.2 s
  batch: '5eed0000000000000000000000000b01', // 100 "process item" spans of 1..100 ms: p50 50, p90 90, p99 99
};

export const SPANS = {
  root: 'e000000000000001',
  cartClient: 'e000000000000002',
  cartServer: 'e000000000000003',
  db: 'e000000000000004',
  payClient: 'e000000000000005',
  payServer: 'e000000000000006',
  recs: 'e000000000000007',
  fastRoot: 'f100000000000001',
  wideRoot: 'a000000000000001',
};

export const STACK = [
  'PaymentDeclinedError: card declined by issuer (code 51)',
  '    at Gateway.charge (/srv/payment/gateway.js:88:11)',
  '    at async PaymentService.pay (/srv/payment/service.js:41:5)',
  '    at async /srv/payment/routes.js:17:3',
].join('\n');

const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 };

function value(v) {
  if (typeof v === 'boolean') return { boolValue: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
  return { stringValue: String(v) };
}
const attrs = obj => Object.entries(obj || {}).map(([key, v]) => ({ key, value: value(v) }));

// A trace as [{service, id, parent, name, kind, at (ms), ms (duration), attrs, error, events, links}].
function traceSpecs() {
  const wideAttrs = {};
  for (let i = 0; i < 60; i++) {
    wideAttrs[`inventory.attr_${String(i).padStart(2, '0')}`] = `value ${i} ${'x'.repeat(20 + (i % 7) * 15)}`;
  }
  const res = (id, name, ms, tenant, extra = {}) => [
    { service: 'shop-frontend', id: `${id}1`, name, kind: 'server', at: 0, ms,
      attrs: { 'http.request.method': 'GET', 'http.route': name.slice(4), 'http.response.status_code': 200, 'app.tenant': tenant, ...extra } },
    { service: 'shop-catalog', id: `${id}2`, parent: `${id}1`, name: 'catalog.lookup', kind: 'internal', at: ms * 0.1, ms: ms * 0.6 },
  ];
  return {
    [IDS.error]: [
      { service: 'shop-frontend', id: SPANS.root, name: 'GET /checkout', kind: 'server', at: 0, ms: 250,
        error: 'payment failed', attrs: { 'http.request.method': 'GET', 'http.route': '/checkout', 'http.response.status_code': 500 } },
      { service: 'shop-frontend', id: SPANS.cartClient, parent: SPANS.root, name: 'POST /cart/checkout', kind: 'client', at: 10, ms: 80 },
      { service: 'shop-cart', id: SPANS.cartServer, parent: SPANS.cartClient, name: 'POST /cart/checkout', kind: 'server', at: 15, ms: 70,
        attrs: { 'http.response.status_code': 200 } },
      { service: 'shop-cart', id: SPANS.db, parent: SPANS.cartServer, name: 'SELECT cart_items', kind: 'client', at: 25, ms: 45,
        attrs: { 'db.system.name': 'postgresql', 'db.query.text': 'SELECT * FROM cart_items WHERE cart_id = $1', 'server.address': 'db.internal' } },
      { service: 'shop-frontend', id: SPANS.payClient, parent: SPANS.root, name: 'POST /pay', kind: 'client', at: 100, ms: 140,
        error: 'HTTP 500', attrs: { 'http.response.status_code': 500 } },
      { service: 'shop-payment', id: SPANS.payServer, parent: SPANS.payClient, name: 'POST /pay', kind: 'server', at: 105, ms: 130,
        error: 'card declined by issuer', attrs: { 'http.response.status_code': 500, 'payment.provider': 'acmepay', 'payment.amount': 42.5 },
        events: [
          { at: 160, name: 'retrying', attrs: { attempt: 2 } },
          { at: 230, name: 'exception', attrs: { 'exception.type': 'PaymentDeclinedError',
            'exception.message': 'card declined by issuer (code 51)', 'exception.stacktrace': STACK } },
        ],
        links: [{ traceId: IDS.fast, spanId: SPANS.fastRoot, attrs: { 'link.reason': 'same cart' } }] },
      // In parallel with the payment call, and over before it: not on the critical path.
      { service: 'shop-frontend', id: SPANS.recs, parent: SPANS.root, name: 'load recommendations', kind: 'internal', at: 110, ms: 40 },
    ],
    [IDS.wide]: [
      { service: 'shop-inventory', id: SPANS.wideRoot, name: 'GET /inventory', kind: 'server', at: 0, ms: 80, attrs: wideAttrs },
      { service: 'shop-inventory', id: 'a000000000000002', parent: SPANS.wideRoot, name: 'cache get', kind: 'client', at: 5, ms: 4 },
      { service: 'shop-inventory', id: 'a000000000000003', parent: SPANS.wideRoot, name: 'SELECT stock', kind: 'client', at: 10, ms: 60 },
    ],
    [IDS.batch]: [
      { service: 'shop-batch', id: 'b000000000000000', name: 'POST /batch', kind: 'server', at: 0, ms: 120 },
      ...Array.from({ length: 100 }, (_, i) => ({ service: 'shop-batch', id: `b0000000000001${String(i).padStart(2, '0')}`,
        parent: 'b000000000000000', name: 'process item', kind: 'internal', at: 5 + (i % 10), ms: i + 1 })),
    ],
    [IDS.fast]: res('f10000000000000', 'GET /products', 20, 'globex'),
    [IDS.medium]: res('f20000000000000', 'GET /products/{id}', 150, 'globex'),
    [IDS.slow]: res('f30000000000000', 'GET /search', 400, 'acme'),
    [IDS.slowest]: res('f40000000000000', 'GET /report', 1200, 'initech'),
  };
}

const nanos = (base, ms) => String(base + BigInt(Math.round(ms * 1e6)));

// OTLP/JSON for the given traces ({traceId: [spec...]}), each trace starting at startMs (unix ms).
export function otlpRequest(traces, startMs) {
  const byService = new Map();
  let offset = 0;
  for (const [traceId, specs] of Object.entries(traces)) {
    const base = BigInt(startMs + offset) * 1000000n;
    offset += 1500; // traces a little apart, in the order given
    for (const s of specs) {
      const span = {
        traceId, spanId: s.id, parentSpanId: s.parent || '', name: s.name, kind: KIND[s.kind],
        startTimeUnixNano: nanos(base, s.at), endTimeUnixNano: nanos(base, s.at + s.ms), attributes: attrs(s.attrs),
        events: (s.events || []).map(e => ({ timeUnixNano: nanos(base, e.at), name: e.name, attributes: attrs(e.attrs) })),
        links: (s.links || []).map(l => ({ traceId: l.traceId, spanId: l.spanId, attributes: attrs(l.attrs) })),
        status: s.error ? { code: 2, message: s.error } : { code: 0 },
      };
      if (!byService.has(s.service)) byService.set(s.service, []);
      byService.get(s.service).push(span);
    }
  }
  return {
    resourceSpans: [...byService].map(([service, spans]) => ({
      resource: { attributes: attrs({ 'service.name': service, 'service.version': '1.2.3', 'telemetry.sdk.language': 'nodejs',
        'deployment.environment.name': 'ui-test' }) },
      scopeSpans: [{ scope: { name: 'sidetrace-ui-fixtures', version: '1.0.0' }, spans }],
    })),
  };
}

export const seedTraces = () => traceSpecs();

// A one-span trace, for the "new traces" notice.
export function freshTrace(traceId) {
  return { [traceId]: [{ service: 'shop-fresh', id: 'c000000000000001', name: 'GET /fresh', kind: 'server', at: 0, ms: 5 }] };
}
