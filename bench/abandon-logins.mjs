// One peer process of the memory benchmark: starts `count` logins over the
// proxy socket and exits without finishing or cancelling any (abandoned
// sessions, owned by this process). Plain JS so that hundreds start fast.
import { connect } from 'node:net';

const [socketPath, capabilityToken, provider, countText] = process.argv.slice(2);
const count = Number(countText);
const frame = (m) => {
  const body = Buffer.from(JSON.stringify(m));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
};
const s = connect(socketPath);
let buf = Buffer.alloc(0);
let sent = 0;
let ok = 0;
let answered = -1; // the handshake answer comes first
const send = () => {
  sent++;
  s.write(frame({ v: 1, id: `l${sent}`, op: 'oauth_initiate', payload: { provider, bucket: `b${sent}` } }));
};
s.on('connect', () => s.write(frame({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken } })));
s.on('data', (chunk) => {
  buf = Buffer.concat([buf, chunk]);
  while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
    const len = buf.readUInt32BE(0);
    const msg = JSON.parse(buf.subarray(4, 4 + len).toString());
    buf = buf.subarray(4 + len);
    answered++;
    if (answered === 0) {
      if (!msg.ok) throw new Error(`handshake refused: ${msg.code}`);
      // Under the per-connection in-flight cap of 16.
      for (let i = 0; i < Math.min(16, count); i++) send();
      continue;
    }
    if (msg.ok) ok++;
    else process.stderr.write(`${msg.code}: ${msg.error}\n`);
    if (sent < count) send();
    else if (answered === count) {
      process.stdout.write(`${ok}\n`);
      s.destroy();
    }
  }
});
s.on('error', (err) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(1);
});
