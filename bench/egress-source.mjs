// The bench's "outside" host for the egress section: on each connection it
// reads a decimal byte count and a newline, sends that many bytes, closes.
import net from 'node:net';

const chunk = Buffer.alloc(256 * 1024, 120);
const server = net.createServer({ noDelay: true }, (s) => {
  s.on('error', () => undefined);
  let head = '';
  const onData = (d) => {
    head += d.toString('latin1');
    const nl = head.indexOf('\n');
    if (nl < 0) return;
    s.off('data', onData);
    let left = Number(head.slice(0, nl));
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  };
  s.on('data', onData);
});
server.listen(0, process.argv[2] ?? '127.0.0.2', () => process.stdout.write(`PORT=${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
