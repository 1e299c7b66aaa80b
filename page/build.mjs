// Builds the preview page into dist/page/: one minified ESM bundle (three.js, zod and the shared
// protocol modules included; nothing loaded from a CDN), the stylesheet, index.html; sourcemaps.
// Usage: node page/build.mjs [--watch]
import { build, context } from 'esbuild';
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const outdir = path.join(root, 'dist', 'page');
const watch = process.argv.includes('--watch');

/** @type {import('esbuild').BuildOptions} */
const options = {
  absWorkingDir: root,
  entryPoints: { main: path.join(here, 'main.ts'), style: path.join(here, 'style.css') },
  outdir,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
  minify: true,
  sourcemap: true,
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
  // Every import must resolve locally; a bare URL import would mean a network fetch at runtime.
  plugins: [{
    name: 'no-network',
    setup(b) {
      b.onResolve({ filter: /^(https?:)?\/\// }, (args) => ({ errors: [{ text: `network import not allowed in the page bundle: ${args.path}` }] }));
    },
  }, {
    // zod's `z` namespace re-exports every error-message locale (~250 KiB minified) and esbuild
    // cannot shake a namespace re-export. The page only needs English, which zod's schemas
    // import directly, so `z.locales` becomes empty in the page bundle.
    name: 'zod-english-only',
    setup(b) {
      b.onResolve({ filter: /\/locales\/index\.js$/ }, (args) =>
        /[\\/]zod[\\/]v4[\\/](classic|core)[\\/]/.test(args.importer) ? { path: 'zod-locales', namespace: 'depthcast-empty' } : undefined);
      b.onLoad({ filter: /.*/, namespace: 'depthcast-empty' }, () => ({ contents: 'export {};', loader: 'js' }));
    },
  }],
};

async function copyStatic() {
  await copyFile(path.join(here, 'index.html'), path.join(outdir, 'index.html'));
}

if (watch) {
  await mkdir(outdir, { recursive: true });
  const ctx = await context({ ...options, plugins: [...options.plugins, { name: 'copy', setup(b) { b.onEnd(() => copyStatic()); } }] });
  await ctx.watch();
  console.log(`watching page → ${path.relative(root, outdir)}/`);
} else {
  await rm(outdir, { recursive: true, force: true });
  await mkdir(outdir, { recursive: true });
  const result = await build(options);
  await copyStatic();
  const sizes = [];
  for (const f of ['index.html', 'main.js', 'style.css']) sizes.push(`${f} ${((await stat(path.join(outdir, f))).size / 1024).toFixed(1)} KiB`);
  console.log(`page built → ${path.relative(root, outdir)}/: ${sizes.join(', ')}`);
}
