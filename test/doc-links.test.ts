/**
 * Every relative link in README.md and docs/*.md resolves: the file exists, and a #fragment names
 * a heading of that file (GitHub's anchor rules: lower case, punctuation dropped, spaces to -).
 * Docs name no machine-specific paths.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './support/tiny.ts';

const DOCS = ['README.md', ...readdirSync(join(REPO_ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** GitHub's heading anchors of a markdown file. */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const m of markdown.replace(/```[\s\S]*?```/g, '').matchAll(/^#{1,6}\s+(.+?)\s*#*$/gm)) {
    const base = m[1]!.toLowerCase().replace(/[`*_]/g, '').replace(/[^\p{L}\p{N}\s-]/gu, '').trim().replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    anchors.add(n ? `${base}-${n}` : base);
  }
  return anchors;
}

/** [text](target) links outside code, with the line they are on. */
export function linksOf(markdown: string): { target: string; line: number }[] {
  const out: { target: string; line: number }[] = [];
  let inCode = false;
  markdown.split('\n').forEach((text, i) => {
    if (text.trimStart().startsWith('```')) inCode = !inCode;
    if (inCode) return;
    for (const m of text.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) out.push({ target: m[1]!, line: i + 1 });
  });
  return out;
}

describe('documentation links', () => {
  it('finds links and anchors the way GitHub does', () => {
    expect([...anchorsOf('# The depth contract\n## `npx depthcast` — set-up (two commands)\n## Limits\n## Limits\n')])
      .toEqual(['the-depth-contract', 'npx-depthcast--set-up-two-commands', 'limits', 'limits-1']);
    expect(linksOf('see [a](docs/a.md#x) and `[b](c.md)`\n```\n[d](e.md)\n```\n[f](http://x.org)')).toEqual([
      { target: 'docs/a.md#x', line: 1 },
      { target: 'http://x.org', line: 5 },
    ]);
  });

  it.each(DOCS)('every relative link in %s resolves', (doc) => {
    const path = join(REPO_ROOT, doc);
    const markdown = readFileSync(path, 'utf8');
    const broken: string[] = [];
    for (const { target, line } of linksOf(markdown)) {
      if (/^[a-z]+:/i.test(target)) continue; // http(s), mailto: not fetched here
      const [file, fragment] = target.split('#') as [string, string | undefined];
      const resolved = file ? resolve(dirname(path), decodeURIComponent(file)) : path;
      if (!existsSync(resolved)) {
        broken.push(`${doc}:${line}: ${target} (no ${relative(REPO_ROOT, resolved)})`);
      } else if (fragment && resolved.endsWith('.md') && !anchorsOf(readFileSync(resolved, 'utf8')).has(fragment)) {
        broken.push(`${doc}:${line}: ${target} (no heading #${fragment})`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('every docs/*.md named in the docs and sources exists', () => {
    const missing: string[] = [];
    const walk = (dir: string): string[] => readdirSync(join(REPO_ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? (e.name === 'node_modules' || e.name.startsWith('.') ? [] : walk(join(dir, e.name))) : [join(dir, e.name)]);
    const files = [...DOCS, ...['src', 'server', 'blender-addon', 'tools', 'examples'].flatMap(walk).filter((f) => /\.(ts|mjs|py|ya?ml|md)$/.test(f))];
    for (const file of files) {
      for (const m of readFileSync(join(REPO_ROOT, file), 'utf8').matchAll(/\bdocs\/[\w.-]+\.md\b/g)) {
        if (!existsSync(join(REPO_ROOT, m[0]))) missing.push(`${file}: ${m[0]}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it.each(DOCS)('%s names no machine-specific path', (doc) => {
    const markdown = readFileSync(join(REPO_ROOT, doc), 'utf8');
    expect(markdown.match(/(^|[\s`(])\/(work|home\/\w+|root|Users\/\w+)\//gm) ?? []).toEqual([]);
  });
});
