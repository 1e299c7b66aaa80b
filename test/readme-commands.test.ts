/**
 * A newcomer's first ten minutes, literally: the shell commands of README.md's set-up section
 * (parsed from its code blocks, so this breaks when the README drifts), run in a fresh clone of
 * HEAD with an empty HOME, plus the pasteable POST /v1/generate example of docs/protocol.md.
 *
 * Two things differ from a newcomer's machine, both outside the commands: node_modules is a
 * hard-linked copy of this checkout's install (its .package-lock.json a real copy), so
 * `npm install` checks it instead of downloading 500 MB; and DEPTHCAST_PORT=0 lets the service
 * pick a free port instead of 7788 on a shared machine (the commands that name 7788 get the port
 * it chose). `npm test` is this suite itself and is not run.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readPngText } from '../src/image/codec.ts';
import { REPO_ROOT } from './support/tiny.ts';

/** The lines of every ```sh block in the markdown between `from` and `to` headings. */
export function shellLines(markdown: string, from: string, to?: string): string[] {
  const start = markdown.indexOf(from);
  if (start < 0) throw new Error(`no section "${from}"`);
  const end = to ? markdown.indexOf(to, start) : markdown.length;
  const section = markdown.slice(start, end < 0 ? markdown.length : end);
  const lines: string[] = [];
  for (const block of section.matchAll(/```sh\n([\s\S]*?)```/g)) {
    // Join backslash continuations, drop comments after the command.
    for (const line of block[1]!.replace(/\\\n\s*/g, '').split('\n')) {
      const command = line.replace(/\s+#.*$/, '').trim();
      if (command) lines.push(command);
    }
  }
  return lines;
}

const hasGit = spawnSync('git', ['--version']).status === 0;
const hasBlender = spawnSync(process.env.DEPTHCAST_BLENDER || 'blender', ['--version'], { timeout: 60_000 }).status === 0;
const root = mkdtempSync(join(tmpdir(), 'depthcast-readme-'));
const clone = join(root, 'depthcast');
const home = join(root, 'home');
const services: ChildProcess[] = [];

const env = {
  PATH: process.env.PATH!,
  HOME: home,
  DEPTHCAST_PORT: '0',
  npm_config_audit: 'false',
  npm_config_fund: 'false',
  npm_config_update_notifier: 'false',
  ...(process.env.DEPTHCAST_BLENDER ? { DEPTHCAST_BLENDER: process.env.DEPTHCAST_BLENDER } : {}),
};

function sh(command: string, timeout = 300_000) {
  const r = spawnSync('bash', ['-c', command], { cwd: clone, env, encoding: 'utf8', timeout });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** `npm start` in its own process group; resolves with its URL once it listens. */
function start(command: string): Promise<{ url: string; output: () => string }> {
  const child = spawn('bash', ['-c', `exec ${command}`], { cwd: clone, env, detached: true });
  services.push(child);
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line in 120 s:\n${output}`)), 120_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /depthcast listening on (http:\/\/\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1]!, output: () => output });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(new Error(`${command} exited (${code}) before listening:\n${output}`)));
  });
}

async function stopAll(): Promise<void> {
  for (const child of services.splice(0)) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((r) => child.once('exit', r));
    process.kill(-child.pid!, 'SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid!, 'SIGKILL');
  }
}

afterAll(async () => {
  await stopAll();
  rmSync(root, { recursive: true, force: true });
});

function pngsUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.png')).sort();
}

describe.skipIf(!hasGit)('the README, literally, in a fresh clone with an empty HOME', () => {
  it('install, start, the tiny demo, one generate, every example manifest and the HTTP example', async () => {
    const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
    const commands = shellLines(readme, '## Set-up', '## Commands');
    const curl = shellLines(readFileSync(join(REPO_ROOT, 'docs/protocol.md'), 'utf8'), 'To paste,');
    // The README still documents what this test is about.
    expect(commands).toEqual(expect.arrayContaining(['npm install && npm start', 'npm test']));
    expect(commands.some((c) => c.startsWith('npx depthcast models create-tiny'))).toBe(true);
    expect(commands.some((c) => c.startsWith('npx depthcast generate'))).toBe(true);
    const manifests = readdirSync(join(REPO_ROOT, 'examples')).filter((f) => /\.(ya?ml|json)$/.test(f));
    for (const m of manifests) expect(commands).toContain(`npx depthcast batch examples/${m}`);
    expect(curl.some((c) => c.includes('/v1/generate'))).toBe(true);

    expect(spawnSync('git', ['clone', '-q', REPO_ROOT, clone]).status).toBe(0);
    // DEPTHCAST_TEST_CLONE_REF runs today's README against an older commit (to see this test fail on an old bug).
    const ref = process.env.DEPTHCAST_TEST_CLONE_REF;
    if (ref) expect(spawnSync('git', ['-C', clone, 'checkout', '-q', ref]).status).toBe(0);
    const shared = join(REPO_ROOT, '..', 'shared');
    if (existsSync(shared)) symlinkSync(realpathSync(shared), join(root, 'shared'));
    const modules = realpathSync(join(REPO_ROOT, 'node_modules'));
    expect(spawnSync('cp', ['-al', modules, join(clone, 'node_modules')]).status).toBe(0);
    // npm rewrites this one file: give the clone its own copy, never the shared inode.
    const lock = join(clone, 'node_modules/.package-lock.json');
    if (existsSync(lock)) {
      unlinkSync(lock);
      copyFileSync(join(modules, '.package-lock.json'), lock);
    }
    mkdirSync(home);

    let serviceStarts = 0;
    for (const line of commands) {
      for (const command of line.split(' && ')) {
        if (command === 'npm test') continue;
        if (command === 'npm start') {
          const service = await start(command);
          serviceStarts++;
          const health = await (await fetch(`${service.url}/v1/health`)).json() as { status: string };
          expect(health.status).toBe('ok');
          expect((await fetch(`${service.url}/`)).status).toBe(200);
          // With no model the start-up says how to make one, in words that run as written.
          if (serviceStarts === 1) expect(service.output()).toContain('npx depthcast models create-tiny');
          await stopAll();
          continue;
        }
        const r = sh(command);
        expect(r.code, `${command}\n${r.out}`).toBe(r.code === 2 && !hasBlender && command.endsWith('examples/batch.yaml') ? 2 : 0);
        expect(r.out).not.toMatch(/Unknown project config/);
      }
    }
    expect(serviceStarts).toBe(2);

    // What the README says each command writes.
    expect(existsSync(join(home, '.cache/depthcast/models/tiny/model_index.json'))).toBe(true);
    const png = readFileSync(join(clone, 'box.png'));
    expect(JSON.parse(readPngText(png).parameters!)).toMatchObject({ prompt: 'a wooden box', steps: 4 });
    expect(pngsUnder(join(clone, 'examples/out/box'))).toHaveLength(8);
    const out = join(clone, 'examples/out');
    const full = ['kitchen', 'street', 'canyon', ...(hasBlender ? ['shot'] : [])].flatMap((s) => pngsUnder(join(out, s)).map((f) => join(s, f)));
    expect(full).toHaveLength(2 + 2 + 8 + (hasBlender ? 8 : 0));
    for (const f of full) expect(existsSync(join(out, f.replace(/\.png$/, '.json'))), f).toBe(true);

    // docs/protocol.md's HTTP example against the running service, on the port it chose.
    const service = await start('npm start');
    const port = new URL(service.url).port;
    for (const command of curl) {
      const r = sh(command.replaceAll('127.0.0.1:7788', `127.0.0.1:${port}`));
      expect(r.code, `${command}\n${r.out}`).toBe(0);
    }
    const http = readFileSync(join(clone, 'box-http.png'));
    expect(http.subarray(1, 4).toString('latin1')).toBe('PNG');
    expect(JSON.parse(readPngText(http).parameters!)).toMatchObject({ prompt: 'a wooden box', seed: 42, width: 64, height: 64 });
    await stopAll();
  }, 900_000);
});
