// The bench's client for the egress section: downloads BYTES from the
// source, directly or through an HTTP proxy with CONNECT (the proxy URL in
// HTTPS_PROXY, as inside `credproxy run --allow-host`), ROUNDS times, and
// prints one JSON line with the MiB/s of each round.
//   node egress-client.mjs HOST PORT BYTES ROUNDS [direct|proxy]
import net from 'node:net';

const [host, port, bytes, rounds, mode = 'proxy'] = process.argv.slice(2);
const total = Number(bytes);

function open() {
  if (mode === 'direct') return new Promise((resolve, reject) => {
    const s = net.connect({ host, port: Number(port), noDelay: true }, () => resolve({ s, rest: Buffer.alloc(0) }));
    s.once('error', reject);
  });
  const proxy = new URL(process.env.HTTPS_PROXY);
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: proxy.hostname, port: Number(proxy.port), noDelay: true }, () => s.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`));
    s.once('error', reject);
    let head = Buffer.alloc(0);
    const onData = (d) => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      s.off('data', onData);
      s.pause();
      const status = head.subarray(0, end).toString('latin1').split(' ')[1];
      if (status !== '200') return reject(new Error(`CONNECT answered ${status}: ${head.toString('latin1')}`));
      resolve({ s, rest: head.subarray(end + 4) });
    };
    s.on('data', onData);
  });
}

async function round() {
  const t0 = process.hrtime.bigint();
  const { s, rest } = await open();
  let got = rest.length;
  await new Promise((resolve, reject) => {
    s.on('data', (d) => (got += d.length));
    s.once('end', resolve);
    s.once('error', reject);
    s.write(`${total}\n`);
    s.resume();
  });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (got !== total) throw new Error(`got ${got} of ${total} bytes`);
  return total / 2 ** 20 / secs;
}

const results = [];
for (let i = 0; i < Number(rounds); i++) results.push(await round());
process.stdout.write(`${JSON.stringify({ mode, mibPerSec: results })}\n`);
