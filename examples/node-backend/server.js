'use strict';
// A backend that is not Python, behind the zipware proxy (see README.md).
//
// Node's own http module, no npm dependencies. It serves a page with two download links,
// the files themselves (with Range), and answers the downloads with *descriptions* of the
// archive, never with the archive: a zipware manifest (JSON) at /download and an nginx
// mod_zip file list at /download-modzip. The proxy in front turns either into the ZIP.
//
//   node examples/node-backend/server.js        # http://127.0.0.1:3000
//
// PORT, HOST, FILES_DIR (what to offer; zipware's sample files by default) and SELF_URL
// (where the proxy reaches this server: the manifest's URLs point there, and the proxy
// only fetches URLs under its upstream) are read from the environment.

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const zlib = require('node:zlib');

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOST || '127.0.0.1';
const SELF_URL = (process.env.SELF_URL || `http://${HOST}:${PORT}`).replace(/\/+$/, '');
const FILES = path.resolve(
  process.env.FILES_DIR || path.join(__dirname, '..', '..', 'zipware', 'samples'),
);
const MANIFEST_TYPE = 'application/vnd.zipware.manifest+json';
const NOTES = 'These files were listed by a Node.js backend and zipped by the zipware proxy.\n';

// -- the files on offer ------------------------------------------------------------------

// Every regular file under FILES: its name in the archive ("a/b.txt"), size and mtime.
function listFiles(dir = FILES, prefix = '') {
  const found = [];
  const entries = fs.readdirSync(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    const name = prefix + entry.name;
    if (entry.isDirectory()) {
      found.push(...listFiles(full, name + '/'));
    } else if (entry.isFile()) {
      const st = fs.statSync(full);
      found.push({ name, full, size: st.size, mtime: st.mtime });
    }
  }
  return found;
}

// The CRC-32 of a file, when this Node has zlib.crc32 (20.15+, 22.2+). Declaring it lets
// the proxy answer Range requests for the archive (resumable downloads).
const crcCache = new Map();
function crc32Of(file) {
  if (typeof zlib.crc32 !== 'function') return null;
  const key = `${file.full}:${file.size}:${file.mtime.getTime()}`;
  if (!crcCache.has(key)) {
    const fd = fs.openSync(file.full, 'r');
    const buffer = Buffer.alloc(1 << 20);
    let crc = 0;
    try {
      let n;
      while ((n = fs.readSync(fd, buffer, 0, buffer.length, null)) > 0) {
        crc = zlib.crc32(buffer.subarray(0, n), crc);
      }
    } finally {
      fs.closeSync(fd);
    }
    crcCache.set(key, crc);
  }
  return crcCache.get(key);
}

// "/files/données/été.txt", each segment percent-encoded
function fileUrlPath(name) {
  return '/files/' + name.split('/').map(encodeURIComponent).join('/');
}

// -- the downloads: descriptions of archives ----------------------------------------------

function sendManifest(res) {
  const entries = listFiles().map((file) => {
    const entry = {
      name: 'samples/' + file.name,
      url: SELF_URL + fileUrlPath(file.name),
      size: file.size, // declared: no HEAD request per file
      mtime: file.mtime.toISOString(),
    };
    const crc = crc32Of(file);
    if (crc !== null) entry.crc32 = crc.toString(16).padStart(8, '0');
    return entry;
  });
  entries.push({ name: 'samples/NOTES.txt', text: NOTES });
  entries.push({ name: 'samples/empty/' });
  const body = JSON.stringify({ version: 1, filename: 'samples.zip', entries });
  res.writeHead(200, {
    'Content-Type': MANIFEST_TYPE,
    'X-Zip-Manifest': '1',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(body);
}

// The same files as an nginx mod_zip list: "CRC SIZE LOCATION NAME" lines, where the
// location is a path on this server. A backend written for mod_zip moves behind the
// zipware proxy unchanged.
function sendModzipList(res) {
  const lines = listFiles().map((file) => {
    const crc = crc32Of(file);
    const crcField = crc === null ? '-' : crc.toString(16).padStart(8, '0');
    return `${crcField} ${file.size} ${fileUrlPath(file.name)} samples/${file.name}`;
  });
  lines.push('0 0 @directory samples/empty/');
  const body = lines.join('\n') + '\n';
  res.writeHead(200, {
    'Content-Type': 'text/plain; charset=utf-8',
    'X-Archive-Files': 'zip',
    'Content-Disposition': 'attachment; filename="samples-modzip.zip"',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
}

// -- the files themselves, with Range (the proxy fetches members with it) -----------------

function sendFile(req, res, urlPath) {
  let relative;
  try {
    relative = urlPath.slice('/files/'.length).split('/').map(decodeURIComponent).join('/');
  } catch {
    return sendText(res, 400, 'bad path\n');
  }
  const full = path.resolve(FILES, relative);
  if (!full.startsWith(FILES + path.sep)) return sendText(res, 404, 'not found\n');
  let st;
  try {
    st = fs.statSync(full);
  } catch {
    return sendText(res, 404, 'not found\n');
  }
  if (!st.isFile()) return sendText(res, 404, 'not found\n');

  const headers = {
    'Content-Type': 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    'Last-Modified': st.mtime.toUTCString(),
  };
  let start = 0;
  let end = st.size; // exclusive
  let status = 200;
  const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range || '');
  if (range && (range[1] || range[2])) {
    if (range[1]) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]) + 1, st.size) : st.size;
    } else {
      start = Math.max(0, st.size - Number(range[2]));
    }
    if (start >= st.size || start >= end) {
      res.writeHead(416, { 'Content-Range': `bytes */${st.size}` });
      return res.end();
    }
    status = 206;
    headers['Content-Range'] = `bytes ${start}-${end - 1}/${st.size}`;
  }
  headers['Content-Length'] = end - start;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || end === start) return res.end();
  fs.createReadStream(full, { start, end: end - 1 }).pipe(res);
}

function sendText(res, status, text, type = 'text/plain; charset=utf-8') {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>Node.js backend behind zipware</title>
<h1>Downloads</h1>
<p><a href="/download">samples.zip</a> (a zipware manifest)</p>
<p><a href="/download-modzip">samples-modzip.zip</a> (an nginx mod_zip file list)</p>
`;

const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, 'http://localhost');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return sendText(res, 405, 'method not allowed\n');
  }
  if (pathname === '/') return sendText(res, 200, PAGE, 'text/html; charset=utf-8');
  if (pathname === '/download') return sendManifest(res);
  if (pathname === '/download-modzip') return sendModzipList(res);
  if (pathname.startsWith('/files/')) return sendFile(req, res, pathname);
  return sendText(res, 404, 'not found\n');
});

server.listen(PORT, HOST, () => {
  console.log(`node backend on http://${HOST}:${PORT}/ serving ${FILES}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections(); // idle keep-alive connections of the proxy's pool too
  });
}
