import type { ServerResponse } from 'node:http';

/**
 * The small page the browser shows after the redirect. Fixed texts only:
 * nothing from the request is reflected into it.
 */
export function sendPage(res: ServerResponse, status: number, title: string, text: string): void {
  const body = `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head>`
    + `<body style="font-family:sans-serif;margin:3em;max-width:40em"><h1>${title}</h1><p>${text}</p></body></html>`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
    'referrer-policy': 'no-referrer',
    connection: 'close',
  });
  res.end(body);
}
