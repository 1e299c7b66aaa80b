/**
 * A Hugging Face–style hub on 127.0.0.1 for the downloader tests. It speaks the parts of the hub
 * API that @huggingface/hub's listFiles / modelInfo / fileDownloadInfo and our Range downloader
 * use:
 *
 *   GET /api/models/<repo>/revision/<rev>        → { id, sha, ... }
 *   GET /api/models/<repo>/tree/<rev>?recursive= → [{ type, path, size, oid, lfs?: { oid, size, pointerSize } }], Link-paginated
 *   GET /<repo>/resolve/<rev>/<path>             → file bytes, ETag, X-Repo-Commit, Range/If-Range (206)
 *   GET /cdn/<sha256>                            → LFS bytes after a 302 (when lfsRedirect is on)
 *
 * Switches make it hostile or broken: cut a connection mid-file, corrupt a file, drop a file,
 * inject listing entries (`../evil`), ignore Range, require a token.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { onnx } = require('onnx-proto') as typeof import('onnx-proto');

export interface RequestRecord {
  kind: 'info' | 'tree' | 'resolve' | 'cdn' | 'other';
  url: string;
  /** Repo-relative file path for resolve requests. */
  path?: string;
  range?: string;
  ifRange?: string;
  auth?: string;
  status: number;
  bytes: number;
}

export interface ListingExtra {
  path: string;
  size?: number;
  type?: 'file' | 'directory';
}

export interface HubSwitches {
  /** Cut the connection once, after `afterBytes` body bytes of `path` (not on the 1-byte probe). */
  cutOnce?: { repo?: string; path: string; afterBytes: number };
  /** Serve these paths with one byte flipped (same size, wrong hash). */
  corrupt?: Set<string>;
  /** List these paths but answer 404 EntryNotFound when they are fetched. */
  drop?: Set<string>;
  /** Extra raw entries appended to every tree listing (e.g. `../evil`). */
  listingExtra?: ListingExtra[];
  /** Answer 200 with the whole file even when a Range is asked for. */
  ignoreRange?: boolean;
  /** Answer resolve of LFS files with a 302 to /cdn/<sha256> (as the real hub does). */
  lfsRedirect?: boolean;
  /** Tree listing page size (Link rel="next" pagination). */
  pageSize?: number;
  /** Require `Authorization: Bearer <token>`. */
  requireToken?: string;
}

interface RepoState {
  commit: string;
  files: Map<string, Buffer>;
}

const LFS_EXT = /\.(onnx|onnx_data|pb|bin|safetensors|data)$/;

export function isLfsPath(p: string): boolean {
  return LFS_EXT.test(p);
}

export function gitBlobOid(content: Buffer): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

export function sha256(content: Buffer | Uint8Array | string): string {
  return createHash('sha256').update(content).digest('hex');
}

function toBuffer(v: Uint8Array | string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

export class FakeHub {
  url = '';
  readonly requests: RequestRecord[] = [];
  switches: HubSwitches = {};
  private readonly repos = new Map<string, RepoState>();
  private server?: Server;
  private commitCounter = 0;

  /** Publishes (or replaces) a repo's files; returns the new commit id. */
  setRepo(repo: string, files: Map<string, Uint8Array | string | Buffer>): string {
    const commit = createHash('sha1').update(`${repo}#${++this.commitCounter}`).digest('hex');
    const m = new Map<string, Buffer>();
    for (const [k, v] of files) m.set(k, toBuffer(v));
    this.repos.set(repo, { commit, files: m });
    return commit;
  }

  repoFiles(repo: string): Map<string, Buffer> {
    return this.repos.get(repo)!.files;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
        res.end(String(err));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    return this;
  }

  async close(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  /** Resolve requests for `path` (excluding the 1-byte probe of fileDownloadInfo). */
  transfers(path: string): RequestRecord[] {
    return this.requests.filter((r) => (r.kind === 'resolve' || r.kind === 'cdn') && r.path === path && r.range !== 'bytes=0-0' && r.status < 300);
  }

  private record(r: RequestRecord): RequestRecord {
    this.requests.push(r);
    return r;
  }

  private json(res: ServerResponse, rec: RequestRecord, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    rec.status = status;
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  private findRepo(owner: string, name: string, rev: string): RepoState | undefined {
    const r = this.repos.get(`${owner}/${name}`);
    if (!r) return undefined;
    if (rev !== 'main' && rev !== 'HEAD' && rev !== r.commit) return undefined;
    return r;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', this.url);
    const parts = u.pathname.split('/').slice(1).map((p) => decodeURIComponent(p));
    const auth = req.headers.authorization;
    const rec = this.record({
      kind: 'other',
      url: req.url ?? '',
      range: req.headers.range,
      ifRange: req.headers['if-range'] as string | undefined,
      auth,
      status: 0,
      bytes: 0,
    });
    if (this.switches.requireToken && auth !== `Bearer ${this.switches.requireToken}` && parts[0] !== 'cdn') {
      this.json(res, rec, 401, { error: 'Invalid credentials in Authorization header' }, { 'X-Error-Code': 'RepoNotFound' });
      return;
    }
    // /api/models/<owner>/<name>/revision/<rev>
    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'revision') {
      rec.kind = 'info';
      const repo = this.findRepo(parts[2]!, parts[3]!, parts[5]!);
      if (!repo) return this.json(res, rec, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
      return this.json(res, rec, 200, {
        _id: 'x',
        id: `${parts[2]}/${parts[3]}`,
        sha: repo.commit,
        private: false,
        gated: false,
        pipeline_tag: 'text-to-image',
        downloads: 0,
        likes: 0,
        lastModified: '2024-01-01T00:00:00.000Z',
      });
    }
    // /api/models/<owner>/<name>/tree/<rev>
    if (parts[0] === 'api' && parts[1] === 'models' && parts[4] === 'tree') {
      rec.kind = 'tree';
      const repo = this.findRepo(parts[2]!, parts[3]!, parts[5]!);
      if (!repo) return this.json(res, rec, 404, { error: 'Revision not found' }, { 'X-Error-Code': 'RevisionNotFound' });
      const entries: unknown[] = [];
      const dirs = new Set<string>();
      for (const [p, content] of [...repo.files].sort(([a], [b]) => (a < b ? -1 : 1))) {
        const segs = p.split('/');
        for (let i = 1; i < segs.length; i++) {
          const d = segs.slice(0, i).join('/');
          if (!dirs.has(d)) {
            dirs.add(d);
            entries.push({ type: 'directory', oid: gitBlobOid(Buffer.from(d)), size: 0, path: d });
          }
        }
        if (isLfsPath(p)) {
          const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(content)}\nsize ${content.length}\n`;
          entries.push({ type: 'file', oid: gitBlobOid(Buffer.from(pointer)), size: content.length, path: p, lfs: { oid: sha256(content), size: content.length, pointerSize: pointer.length } });
        } else {
          entries.push({ type: 'file', oid: gitBlobOid(content), size: content.length, path: p });
        }
      }
      for (const x of this.switches.listingExtra ?? []) {
        entries.push({ type: x.type ?? 'file', oid: gitBlobOid(Buffer.from(x.path)), size: x.size ?? 4, path: x.path });
      }
      const pageSize = this.switches.pageSize ?? 1000;
      const cursor = Number(u.searchParams.get('cursor') ?? '0');
      const page = entries.slice(cursor, cursor + pageSize);
      const headers: Record<string, string> = {};
      if (cursor + pageSize < entries.length) {
        const next = new URL(u.href);
        next.searchParams.set('cursor', String(cursor + pageSize));
        headers.Link = `<${next.href}>; rel="next"`;
      }
      return this.json(res, rec, 200, page, headers);
    }
    // /cdn/<sha256>
    if (parts[0] === 'cdn') {
      rec.kind = 'cdn';
      for (const [id, repo] of this.repos) {
        for (const [p, content] of repo.files) {
          if (sha256(content) === parts[1]) {
            rec.path = p;
            return this.serveBytes(req, res, rec, id, p, content, `"${sha256(content)}"`, repo.commit);
          }
        }
      }
      rec.status = 404;
      res.writeHead(404).end();
      return;
    }
    // /<owner>/<name>/resolve/<rev>/<path...>
    if (parts[2] === 'resolve' && parts.length >= 5) {
      rec.kind = 'resolve';
      const repoId = `${parts[0]}/${parts[1]}`;
      const repo = this.findRepo(parts[0]!, parts[1]!, parts[3]!);
      const path = parts.slice(4).join('/');
      rec.path = path;
      if (!repo) return this.json(res, rec, 404, { error: 'Revision not found' }, { 'X-Error-Code': 'RevisionNotFound' });
      const content = repo.files.get(path);
      if (!content || this.switches.drop?.has(path)) {
        return this.json(res, rec, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
      }
      const etag = `"${isLfsPath(path) ? sha256(content) : gitBlobOid(content)}"`;
      if (this.switches.lfsRedirect && isLfsPath(path)) {
        rec.status = 302;
        res.writeHead(302, {
          Location: `${this.url}/cdn/${sha256(content)}`,
          'X-Repo-Commit': repo.commit,
          'X-Linked-Etag': etag,
          'X-Linked-Size': String(content.length),
          'Content-Length': '0',
        });
        res.end();
        return;
      }
      return this.serveBytes(req, res, rec, repoId, path, content, etag, repo.commit);
    }
    rec.status = 404;
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
  }

  private serveBytes(req: IncomingMessage, res: ServerResponse, rec: RequestRecord, repoId: string, path: string, original: Buffer, etag: string, commit: string): void {
    let content = original;
    if (this.switches.corrupt?.has(path)) {
      content = Buffer.from(original);
      content[content.length >> 1] = (content[content.length >> 1]! ^ 0xff) & 0xff;
    }
    const total = content.length;
    let start = 0;
    let end = total - 1;
    let status = 200;
    const range = req.headers.range;
    const ifRange = req.headers['if-range'];
    const m = range ? /^bytes=(\d+)-(\d*)$/.exec(range) : null;
    if (m && !this.switches.ignoreRange && (!ifRange || ifRange === etag)) {
      start = Number(m[1]);
      end = m[2] ? Math.min(Number(m[2]), total - 1) : total - 1;
      if (start >= total) {
        rec.status = 416;
        res.writeHead(416, { 'Content-Range': `bytes */${total}` }).end();
        return;
      }
      status = 206;
    }
    const body = content.subarray(start, end + 1);
    const headers: Record<string, string> = {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(body.length),
      'Accept-Ranges': 'bytes',
      ETag: etag,
      'X-Repo-Commit': commit,
    };
    if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${total}`;
    rec.status = status;
    res.writeHead(status, headers);
    const cut = this.switches.cutOnce;
    if (cut && cut.path === path && (!cut.repo || cut.repo === repoId) && range !== 'bytes=0-0' && cut.afterBytes > start) {
      this.switches.cutOnce = undefined;
      const n = Math.min(cut.afterBytes - start, body.length);
      rec.bytes = n;
      res.write(body.subarray(0, n), () => {
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    rec.bytes = body.length;
    res.end(body);
  }
}

/**
 * Moves the raw weights of an ONNX model into an external-data file (as torch.onnx / onnx.save
 * with save_as_external_data do), 4 KiB-aligned. Returns the rewritten model and the data file.
 */
export function externalizeWeights(model: Uint8Array, location: string, minBytes = 256): { onnx: Uint8Array; data: Buffer } {
  const m = onnx.ModelProto.decode(model);
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const t of m.graph?.initializer ?? []) {
    const raw = t.rawData;
    if (!raw || raw.length < minBytes) continue;
    const pad = (4096 - (offset % 4096)) % 4096;
    if (pad) chunks.push(Buffer.alloc(pad));
    offset += pad;
    chunks.push(Buffer.from(raw));
    t.externalData = [
      onnx.StringStringEntryProto.create({ key: 'location', value: location }),
      onnx.StringStringEntryProto.create({ key: 'offset', value: String(offset) }),
      onnx.StringStringEntryProto.create({ key: 'length', value: String(raw.length) }),
    ];
    t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    t.rawData = new Uint8Array(0);
    offset += raw.length;
  }
  return { onnx: onnx.ModelProto.encode(m).finish(), data: Buffer.concat(chunks) };
}

/** A minimal valid ONNX model whose one initializer is stored externally at `location` (for hostile-model tests). */
export function onnxWithExternal(location: string, length = 16): Uint8Array {
  const m = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'g',
      initializer: [
        {
          name: 'w',
          dataType: onnx.TensorProto.DataType.FLOAT,
          dims: [length / 4],
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: location },
            { key: 'offset', value: '0' },
            { key: 'length', value: String(length) },
          ],
        },
      ],
      output: [{ name: 'w', type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimValue: length / 4 }] } } } }],
    },
  });
  return onnx.ModelProto.encode(m).finish();
}
