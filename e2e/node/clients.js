// Checks that REDIS_URL works unchanged with node-redis and ioredis: each
// client connects with the URL as is, writes a key, reads it back and
// PINGs. Prints one JSON line per client; exits 1 if any failed. Never
// prints the URL (it holds the password).
'use strict';
const { createClient } = require('redis');
const IORedis = require('ioredis');

const url = process.env.REDIS_URL;
if (!url) {
  console.error('REDIS_URL is not set');
  process.exit(2);
}
const key = 'cacheplane:e2e:' + process.pid;

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise((_, reject) => { t = setTimeout(() => reject(new Error(what + ' timed out')), ms); }),
  ]);
}

async function nodeRedis() {
  // node-redis reconnects forever on a wrong password unless told not to.
  const c = createClient({ url, socket: { connectTimeout: 3000, reconnectStrategy: false } });
  let lastErr;
  c.on('error', (e) => { lastErr = e; });
  try {
    await withTimeout(c.connect(), 5000, 'connect');
    await c.set(key + ':node-redis', 'v1');
    const v = await c.get(key + ':node-redis');
    const pong = await c.ping();
    if (v !== 'v1' || pong !== 'PONG') throw new Error(`read ${v}, ping ${pong}`);
    return { client: 'node-redis', ok: true };
  } catch (e) {
    return { client: 'node-redis', ok: false, error: String((lastErr || e).message) };
  } finally {
    try { await c.disconnect(); } catch (_) { /* already closed */ }
  }
}

async function ioredis() {
  const c = new IORedis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null, connectTimeout: 3000, lazyConnect: true });
  c.on('error', () => {});
  try {
    await withTimeout(c.connect(), 5000, 'connect');
    await c.set(key + ':ioredis', 'v2');
    const v = await c.get(key + ':ioredis');
    const pong = await c.ping();
    if (v !== 'v2' || pong !== 'PONG') throw new Error(`read ${v}, ping ${pong}`);
    return { client: 'ioredis', ok: true };
  } catch (e) {
    return { client: 'ioredis', ok: false, error: String(e.message) };
  } finally {
    c.disconnect();
  }
}

(async () => {
  const results = [await nodeRedis(), await ioredis()];
  for (const r of results) console.log(JSON.stringify(r));
  process.exit(results.every((r) => r.ok) ? 0 : 1);
})();
