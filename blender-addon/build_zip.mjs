#!/usr/bin/env node
// Builds the installable add-on: dist/depthcast-addon.zip holding the `depthcast/` package
// folder. The same zip installs in Blender 3.4-4.1 (legacy add-on, bl_info) and 4.2+
// (extension: blender_manifest.toml inside the single top-level folder).
// Usage: node blender-addon/build_zip.mjs [--out path/to/file.zip]
// No dependencies: a small ZIP writer (deflate from node:zlib), fixed timestamps so the same
// sources always give the same bytes.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = join(here, 'depthcast');
const EXCLUDE_DIRS = new Set(['__pycache__', '.pytest_cache']);
const EXCLUDE_FILE = /\.(pyc|pyo|orig|rej|swp)$|~$|^\.DS_Store$/;

function parseArgs(argv) {
  const args = { out: resolve(here, '..', 'dist', 'depthcast-addon.zip') };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out') args.out = resolve(argv[++i]);
    else if (argv[i] === '--help' || argv[i] === '-h') {
      console.log('usage: node blender-addon/build_zip.mjs [--out FILE.zip]');
      process.exit(0);
    } else {
      console.error(`unknown argument ${argv[i]}`);
      process.exit(2);
    }
  }
  return args;
}

function listFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name);
    const st = statSync(full);
    if (st.isDirectory()) {
      if (!EXCLUDE_DIRS.has(name)) out.push(...listFiles(full));
    } else if (st.isFile() && !EXCLUDE_FILE.test(name)) {
      out.push(full);
    }
  }
  return out;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  if (typeof zlib.crc32 === 'function') return zlib.crc32(buf) >>> 0;
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// 2024-01-01 00:00:00 in MS-DOS date/time.
const DOS_TIME = 0;
const DOS_DATE = ((2024 - 1980) << 9) | (1 << 5) | 1;

export function buildZip(entries) {
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const { name, data } of entries) {
    const nameBytes = Buffer.from(name, 'utf8');
    const deflated = zlib.deflateRawSync(data, { level: 9 });
    const useDeflate = deflated.length < data.length;
    const body = useDeflate ? deflated : data;
    const crc = crc32(data);
    // Version needed, flags, method, time, date, CRC, sizes, name and extra lengths: the local
    // header and the central directory entry carry these 26 bytes alike.
    const shared = Buffer.alloc(26);
    shared.writeUInt16LE(20, 0); // version needed
    shared.writeUInt16LE(0x0800, 2); // UTF-8 names
    shared.writeUInt16LE(useDeflate ? 8 : 0, 4);
    shared.writeUInt16LE(DOS_TIME, 6);
    shared.writeUInt16LE(DOS_DATE, 8);
    shared.writeUInt32LE(crc, 10);
    shared.writeUInt32LE(body.length, 14);
    shared.writeUInt32LE(data.length, 18);
    shared.writeUInt16LE(nameBytes.length, 22);
    shared.writeUInt16LE(0, 24); // extra
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    shared.copy(local, 4);
    locals.push(local, nameBytes, body);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by: unix
    shared.copy(central, 6);
    central.writeUInt16LE(0, 32); // comment
    central.writeUInt16LE(0, 34); // disk
    central.writeUInt16LE(0, 36); // internal attrs
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38); // external attrs: -rw-r--r--
    central.writeUInt32LE(offset, 42);
    centrals.push(central, nameBytes);
    offset += local.length + nameBytes.length + body.length;
  }
  const centralSize = centrals.reduce((n, b) => n + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, ...centrals, end]);
}

function main() {
  const { out } = parseArgs(process.argv.slice(2));
  const files = listFiles(packageDir);
  for (const required of ['__init__.py', 'blender_manifest.toml']) {
    if (!files.includes(join(packageDir, required))) throw new Error(`blender-addon/depthcast/${required} is missing`);
  }
  const entries = files.map((full) => ({
    name: ['depthcast', ...relative(packageDir, full).split(sep)].join('/'),
    data: readFileSync(full),
  }));
  // The add-on's "start a local service" runs this folder's CLI (core/service.py resolve_command),
  // so a zip built from a clone finds the service without a path typed into its preferences.
  entries.push({ name: 'depthcast/depthcast_root.txt', data: Buffer.from(`${resolve(here, '..')}\n`, 'utf8') });
  mkdirSync(dirname(out), { recursive: true });
  const zip = buildZip(entries);
  writeFileSync(out, zip);
  console.log(`wrote ${out} (${entries.length} files, ${zip.length} bytes)`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
