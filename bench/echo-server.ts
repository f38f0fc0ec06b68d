// The floor for the round-trip benchmark: a length-prefixed JSON echo over a
// Unix socket that answers each frame with a reply of a given size, doing
// only what any framed server must do (decode, parse, serialize, write).
import { createServer } from 'node:net';
import { encodeFrame, FrameDecoder, parsePayload } from '../src/protocol/frame.js';

const [path, replyBytes] = process.argv.slice(2);
const filler = 'x'.repeat(Math.max(0, Number(replyBytes) - 40));
const server = createServer((socket) => {
  const decoder = new FrameDecoder();
  socket.on('data', (chunk) => {
    for (const payload of decoder.push(chunk)) {
      const msg = parsePayload(payload);
      socket.write(encodeFrame({ v: 1, id: msg.id, ok: true, data: { f: filler } }));
    }
  });
  socket.on('error', () => undefined);
});
server.listen(path!, () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
