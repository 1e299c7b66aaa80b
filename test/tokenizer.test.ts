import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DepthcastError } from '../src/errors.ts';
import { bpe, bpeDirect, bpeHeap, HEAP_THRESHOLD } from '../src/tokenizer/bpe.ts';
import { BYTE_TO_UNICODE, byteEncode } from '../src/tokenizer/bytes.ts';
import { ClipTokenizer, MAX_MERGES } from '../src/tokenizer/clip.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const conformanceDir = path.resolve(repoRoot, '../shared/conformance');
const vectorsPath = path.join(conformanceDir, 'tokenizer.json');
const haveConformance = existsSync(vectorsPath);
if (!haveConformance) console.warn('skipping conformance tokenizer vectors: ../shared/conformance not found');

// ---------------------------------------------------------------------------------------------
// A tiny vocab, as depthcast's tiny models have: 256 byte symbols, their 256 `</w>` variants,
// a few merges, the two specials. Built here from first principles (not from src/).
// ---------------------------------------------------------------------------------------------

/** GPT-2 bytes_to_unicode, written out independently of src/tokenizer/bytes.ts. */
function gpt2ByteMap(): string[] {
  const bs: number[] = [];
  for (let b = '!'.charCodeAt(0); b <= '~'.charCodeAt(0); b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const map: string[] = [];
  bs.forEach((b, i) => (map[b] = String.fromCharCode(cs[i]!)));
  return map;
}
const BYTES = gpt2ByteMap();
const ch = (c: string): number => c.charCodeAt(0); // id of a byte symbol
const end = (c: string): number => 256 + c.charCodeAt(0); // id of its `</w>` variant

const CA = 512;
const CAT = 513; // cat</w>
const DO = 514;
const DOG = 515; // dog</w>
const BOS = 516;
const EOS = 517;
const XY_MERGE = 'x y</w>'; // a merge whose result is not in the vocab

function tinyVocab(): Record<string, number> {
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[BYTES[b]!] = b;
  for (let b = 0; b < 256; b++) vocab[`${BYTES[b]!}</w>`] = 256 + b;
  Object.assign(vocab, { ca: CA, 'cat</w>': CAT, do: DO, 'dog</w>': DOG, '<|startoftext|>': BOS, '<|endoftext|>': EOS });
  delete vocab['z</w>']; // so that a lone "z" is an unknown symbol
  return vocab;
}
const TINY_MERGES = ['c a', 'ca t</w>', 'd o', 'do g</w>', XY_MERGE];

const tiny = ClipTokenizer.fromData({ vocab: tinyVocab(), merges: TINY_MERGES });

/** The expected 77 ids for a body of token ids. */
function padded(body: number[], max = 77, bos = BOS, eos = EOS, pad = EOS): number[] {
  const ids = [bos, ...body.slice(0, max - 2), eos];
  while (ids.length < max) ids.push(pad);
  return ids;
}
const enc = (text: string, tok = tiny): number[] => [...tok.encode(text)];

describe('byte-to-unicode alphabet', () => {
  it('matches GPT-2 bytes_to_unicode', () => {
    expect([...BYTE_TO_UNICODE]).toEqual(BYTES);
    expect(BYTE_TO_UNICODE[0x20]).toBe('\u0120'); // space → Ġ
    expect(BYTE_TO_UNICODE[0x00]).toBe('\u0100');
    expect(BYTE_TO_UNICODE[0x61]).toBe('a');
    expect(BYTE_TO_UNICODE[0xad]).toBe('\u0143'); // soft hyphen is the last remapped byte
    expect(new Set(BYTE_TO_UNICODE).size).toBe(256);
  });
});

describe('ClipTokenizer on a tiny vocab', () => {
  it('reads special ids from the vocab, not hard-coded', () => {
    expect([tiny.bosId, tiny.eosId, tiny.padId, tiny.modelMaxLength]).toEqual([BOS, EOS, EOS, 77]);
  });

  it('applies merges by rank and marks word ends', () => {
    expect(tiny.tokenize('cat')).toEqual([CAT]);
    expect(tiny.tokenize('dog')).toEqual([DOG]);
    expect(tiny.tokenize('cats')).toEqual([CA, ch('t'), end('s')]);
    expect(tiny.tokenize('a cat')).toEqual([end('a'), CAT]);
    expect(enc('a cat')).toEqual(padded([end('a'), CAT]));
  });

  it('lowercases', () => {
    expect(enc('CAT Dog')).toEqual(padded([CAT, DOG]));
  });

  it('collapses whitespace runs, tabs and newlines', () => {
    expect(enc('  cat \t\n\r\n  dog  ')).toEqual(padded([CAT, DOG]));
    expect(enc('cat\u00a0\u3000dog')).toEqual(padded([CAT, DOG])); // Zs separators
  });

  it('splits words with CLIP\'s pattern: contractions, digits one by one, punctuation runs', () => {
    expect(tiny.tokenize("cat's")).toEqual([CAT, ch("'"), end('s')]);
    expect(tiny.tokenize('cat!!')).toEqual([CAT, ch('!'), end('!')]);
    expect(tiny.tokenize('2024')).toEqual([end('2'), end('0'), end('2'), end('4')]);
    expect(tiny.tokenize('cat2dog')).toEqual([CAT, end('2'), DOG]);
  });

  it('byte-encodes non-ASCII text (UTF-8 bytes through the GPT-2 alphabet)', () => {
    // é = C3 A9
    expect(tiny.tokenize('é')).toEqual([0xc3, 256 + 0xa9]);
    // NFC: e + combining acute is the same word as é
    expect(tiny.tokenize('e\u0301')).toEqual([0xc3, 256 + 0xa9]);
  });

  it('drops control/format characters and spaces out CJK ideographs', () => {
    expect(tiny.tokenize('ca\u200bt\u0000\ufffd')).toEqual([CAT]);
    // 猫 = E7 8C AB; each ideograph is its own word
    expect(tiny.tokenize('猫猫')).toEqual([0xe7, 0x8c, 256 + 0xab, 0xe7, 0x8c, 256 + 0xab]);
  });

  it('turns special-token literals into their ids', () => {
    expect(enc('cat<|endoftext|>dog')).toEqual(padded([CAT, EOS, DOG]));
    expect(tiny.tokenize('<|startoftext|> cat')).toEqual([BOS, CAT]);
    // after lowercasing, the word pattern still recognises the literal
    expect(tiny.tokenize('<|ENDOFTEXT|>')).toEqual([EOS]);
    // an incomplete literal is ordinary text
    expect(tiny.tokenize('<|cat')).toEqual([ch('<'), end('|'), CAT]);
  });

  it('maps unknown symbols to the unk token', () => {
    expect(tiny.tokenize('z')).toEqual([EOS]); // z</w> is not in the vocab
    expect(tiny.tokenize('xy')).toEqual([EOS]); // the merge gives xy</w>, which is not in the vocab
    const withUnk = ClipTokenizer.fromData({ vocab: { ...tinyVocab(), '<unk>': 600 }, merges: TINY_MERGES, unkToken: '<unk>' });
    expect(withUnk.tokenize('z cat')).toEqual([600, CAT]);
  });

  it('gives [bos, eos, pad...] for an empty or blank prompt', () => {
    expect(enc('')).toEqual(padded([]));
    expect(enc(' \t\n ')).toEqual(padded([]));
    expect(tiny.tokenize('')).toEqual([]);
  });

  it('truncates to 77 ids ending in eos', () => {
    const prompt = Array.from({ length: 200 }, () => 'cat').join(' ');
    const ids = tiny.encode(prompt);
    expect(ids).toBeInstanceOf(Int32Array);
    expect(ids.length).toBe(77);
    expect([...ids]).toEqual([BOS, ...Array<number>(75).fill(CAT), EOS]);
    expect(tiny.tokenize(prompt).length).toBe(200);
  });

  it('pads with the configured pad token and honours modelMaxLength', () => {
    const tok = ClipTokenizer.fromData({ vocab: { ...tinyVocab(), '<pad>': 700 }, merges: TINY_MERGES, padToken: '<pad>', modelMaxLength: 6 });
    expect(tok.padId).toBe(700);
    expect(enc('cat', tok)).toEqual([BOS, CAT, EOS, 700, 700, 700]);
    expect(enc('cat dog cat dog cat', tok)).toEqual([BOS, CAT, DOG, CAT, DOG, EOS]);
  });

  it('uses whatever ids the vocab gives the specials', () => {
    const vocab = tinyVocab();
    vocab['<|startoftext|>'] = 1000;
    vocab['<|endoftext|>'] = 1001;
    const tok = ClipTokenizer.fromData({ vocab, merges: TINY_MERGES });
    expect(enc('cat z', tok)).toEqual(padded([CAT, 1001], 77, 1000, 1001, 1001));
  });

  it('caches per word without changing results', () => {
    const tok = ClipTokenizer.fromData({ vocab: tinyVocab(), merges: TINY_MERGES });
    const first = enc('a cat, a dog', tok);
    expect(enc('a cat, a dog', tok)).toEqual(first);
    expect(first).toEqual(padded([end('a'), CAT, end(','), end('a'), DOG]));
  });

  it('uses only the first 48894 merges, like the reference', () => {
    expect(MAX_MERGES).toBe(48894);
    const filler = Array.from({ length: MAX_MERGES }, (_, i) => `q${i} r`);
    const tok = ClipTokenizer.fromData({ vocab: tinyVocab(), merges: [...filler, 'c a', 'ca t</w>'] });
    expect(tok.tokenize('cat')).toEqual([ch('c'), ch('a'), end('t')]);
  });

  it('refuses a vocab without its special tokens', () => {
    const vocab = tinyVocab();
    delete vocab['<|startoftext|>'];
    expect(() => ClipTokenizer.fromData({ vocab, merges: TINY_MERGES })).toThrowError(/bos token "<\|startoftext\|>" is not in vocab/);
  });
});

/** Deterministic pseudo-random numbers (LCG), so failures reproduce. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}
/** Symbols of a byte-encoded word with the end-of-word mark, as the tokenizer feeds BPE. */
function symbolsOf(word: string): string[] {
  const symbols = byteEncode(word).split('');
  symbols[symbols.length - 1] += '</w>';
  return symbols;
}

describe('BPE merge loop', () => {
  it('merges overlapping runs left to right, one rank per pass', () => {
    const ranks = new Map([['a a', 0], ['aa a', 1]]);
    for (const f of [bpeDirect, bpeHeap]) {
      expect(f(['a', 'a', 'a'], ranks)).toEqual(['aaa']); // [aa, a], then aa+a
      expect(f(['a', 'a', 'a', 'a'], ranks)).toEqual(['aa', 'aa']);
      expect(f(['a', 'a', 'a', 'a', 'a'], ranks)).toEqual(['aa', 'aaa']);
    }
  });

  it('heap and direct loops agree on random words, even with out-of-order merge files', () => {
    const rand = rng(7);
    const alphabet = ['a', 'b', 'c', 'd'];
    for (let trial = 0; trial < 200; trial++) {
      // random merges over short strings of the alphabet, ranks in random order
      // (distinct ranks, as a merges file gives: one line, one rank)
      const ranks = new Map<string, number>();
      const order = Array.from({ length: 30 }, (_, r) => r).sort(() => rand() - 0.5);
      const pieces = [...alphabet];
      for (let r = 0; r < 30; r++) {
        const x = pieces[Math.floor(rand() * pieces.length)]!;
        const y = pieces[Math.floor(rand() * pieces.length)]!;
        if (!ranks.has(`${x} ${y}`)) ranks.set(`${x} ${y}`, order[r]!);
        if (x.length + y.length < 6) pieces.push(x + y);
      }
      const len = 1 + Math.floor(rand() * 150);
      const word = Array.from({ length: len }, () => alphabet[Math.floor(rand() * alphabet.length)]!);
      expect(bpeHeap(word, ranks), `trial ${trial}`).toEqual(bpeDirect(word, ranks));
    }
  });

  it('sends only long words to the heap', () => {
    expect(HEAP_THRESHOLD).toBeGreaterThan(16);
    const ranks = new Map([['a b</w>', 0]]);
    expect(bpe(['a', 'b</w>'], ranks)).toEqual(['ab</w>']);
  });

  it.skipIf(!haveConformance)('heap and direct loops agree with the real CLIP merges on long random words', () => {
    const lines = readFileSync(path.join(conformanceDir, 'models/depth2img-tiny/tokenizer/merges.txt'), 'utf8').trim().split('\n').slice(1, MAX_MERGES + 1);
    const ranks = new Map(lines.map((l, i) => [l, i] as [string, number]));
    const rand = rng(11);
    const ranges: [number, number][] = [[0x61, 0x7a], [0xc0, 0x24f], [0x3040, 0x30ff], [0xac00, 0xd7a3], [0x430, 0x44f]];
    for (const [lo, hi] of ranges) {
      for (let trial = 0; trial < 4; trial++) {
        let word = '';
        const len = 20 + Math.floor(rand() * 400);
        for (let i = 0; i < len; i++) word += String.fromCodePoint(lo + Math.floor(rand() * (hi - lo + 1)));
        const symbols = symbolsOf(word);
        expect(bpeHeap(symbols, ranks)).toEqual(bpeDirect(symbols, ranks));
      }
    }
  });
});

describe('ClipTokenizer.fromFolder', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  function folder(files: Record<string, string>): string {
    const dir = mkdtempSync(path.join(tmpdir(), 'depthcast-tok-'));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
    return dir;
  }
  const goodFiles = () => ({
    'vocab.json': JSON.stringify(tinyVocab()),
    'merges.txt': `#version: 0.2\n${TINY_MERGES.join('\n')}\n`,
    'tokenizer_config.json': JSON.stringify({ model_max_length: 10, bos_token: '<|startoftext|>', pad_token: '<|endoftext|>' }),
  });

  it('reads vocab, merges (dropping the header line) and config', async () => {
    const tok = await ClipTokenizer.fromFolder(folder(goodFiles()));
    expect(tok.modelMaxLength).toBe(10);
    expect(enc('a cat dog', tok)).toEqual([BOS, end('a'), CAT, DOG, EOS, EOS, EOS, EOS, EOS, EOS]);
  });

  it('defaults model_max_length to 77 and takes special tokens from special_tokens_map.json', async () => {
    const files: Record<string, string> = { ...goodFiles() };
    delete files['tokenizer_config.json'];
    const vocab = { ...tinyVocab(), '<pad>': 900 };
    files['vocab.json'] = JSON.stringify(vocab);
    files['special_tokens_map.json'] = JSON.stringify({ pad_token: { content: '<pad>', lstrip: false } });
    const tok = await ClipTokenizer.fromFolder(folder(files));
    expect(tok.modelMaxLength).toBe(77);
    expect(tok.padId).toBe(900);
    expect(enc('cat', tok)).toEqual(padded([CAT], 77, BOS, EOS, 900));
  });

  it('gives BAD_MODEL for a missing merges.txt', async () => {
    const files: Record<string, string> = goodFiles();
    delete files['merges.txt'];
    const err = await ClipTokenizer.fromFolder(folder(files)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DepthcastError);
    expect((err as DepthcastError).code).toBe('BAD_MODEL');
    expect((err as DepthcastError).message).toMatch(/merges\.txt is missing/);
  });

  it('gives BAD_MODEL for a missing vocab.json or a missing folder', async () => {
    const files: Record<string, string> = goodFiles();
    delete files['vocab.json'];
    await expect(ClipTokenizer.fromFolder(folder(files))).rejects.toMatchObject({ code: 'BAD_MODEL', message: expect.stringMatching(/vocab\.json is missing/) });
    await expect(ClipTokenizer.fromFolder(path.join(tmpdir(), 'depthcast-no-such-tokenizer'))).rejects.toMatchObject({ code: 'BAD_MODEL' });
  });

  it('gives BAD_MODEL for unparsable JSON', async () => {
    await expect(ClipTokenizer.fromFolder(folder({ ...goodFiles(), 'vocab.json': '{"a": 1,' }))).rejects.toMatchObject({
      code: 'BAD_MODEL',
      message: expect.stringMatching(/vocab\.json is not valid JSON/),
    });
    await expect(ClipTokenizer.fromFolder(folder({ ...goodFiles(), 'tokenizer_config.json': 'nope' }))).rejects.toMatchObject({
      code: 'BAD_MODEL',
      message: expect.stringMatching(/tokenizer_config\.json is not valid JSON/),
    });
    await expect(ClipTokenizer.fromFolder(folder({ ...goodFiles(), 'vocab.json': '[1,2]' }))).rejects.toMatchObject({ code: 'BAD_MODEL' });
  });
});

describe('conformance tokenizer vectors', () => {
  const vectors: { text: string; ids: number[] }[] = haveConformance ? JSON.parse(readFileSync(vectorsPath, 'utf8')) : [];
  const models = ['depth2img-tiny', 'controlnet-tiny'];
  const tokenizers = new Map<string, Promise<ClipTokenizer>>();
  const load = (model: string) => {
    if (!tokenizers.has(model)) tokenizers.set(model, ClipTokenizer.fromFolder(path.join(conformanceDir, 'models', model, 'tokenizer')));
    return tokenizers.get(model)!;
  };

  it.skipIf(!haveConformance)('has 25 vectors and the real CLIP special ids', async () => {
    expect(vectors.length).toBe(25);
    const tok = await load('depth2img-tiny');
    expect([tok.bosId, tok.eosId, tok.padId, tok.modelMaxLength]).toEqual([49406, 49407, 49407, 77]);
  });

  vectors.forEach((v, i) => {
    it.skipIf(!haveConformance)(`vector ${i}: ${JSON.stringify(v.text).slice(0, 50)}`, async () => {
      for (const model of models) {
        const tok = await load(model);
        expect([...tok.encode(v.text)], model).toEqual(v.ids);
      }
    });
  });
});
