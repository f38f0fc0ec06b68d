import type { ServerResponse } from 'node:http';

/** Text shown on the page; escaped here, so no caller can inject markup. */
function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export interface LandingPage {
  title: string;
  /** What happened, in plain words. */
  happened: string;
  /** What to do next. */
  next: string;
  /** Anything else worth knowing (e.g. that the login cannot be renewed). */
  note?: string;
}

/**
 * The small page the browser shows after the redirect. Fixed texts and the
 * configured provider name only: nothing from the request is reflected into
 * it, and everything is escaped anyway.
 */
export function sendPage(res: ServerResponse, status: number, page: LandingPage): void {
  const ok = status < 300;
  const accent = ok ? '#1a7f37' : '#b42318';
  const note = page.note === undefined ? '' : `<p style="background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.6em .8em">${escapeHtml(page.note)}</p>`;
  const paragraphs = [page.happened, page.next].map((p) => `<p>${escapeHtml(p)}</p>`).join('') + note;
  const body = '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    + `<meta name="viewport" content="width=device-width, initial-scale=1"><title>credproxy: ${escapeHtml(page.title)}</title></head>`
    + '<body style="font-family:system-ui,sans-serif;margin:0;background:#f6f8fa;color:#1f2328">'
    + `<main style="max-width:36em;margin:4em auto;padding:2em 2.5em;background:#fff;border:1px solid #d0d7de;border-top:6px solid ${accent};border-radius:8px;line-height:1.5">`
    + `<p style="margin:0;color:#59636e;font-size:.9em">credproxy</p><h1 style="margin:.2em 0 .6em;color:${accent}">${escapeHtml(page.title)}</h1>`
    + `${paragraphs}</main></body></html>`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'",
    'referrer-policy': 'no-referrer',
    connection: 'close',
  });
  res.end(body);
}
