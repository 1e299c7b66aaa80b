/**
 * CLIP byte-level BPE tokenizer, reproducing transformers' slow `CLIPTokenizer` (without ftfy)
 * called with padding="max_length", max_length=model_max_length, truncation=True.
 * The normative description is section 5 of the conformance README; in short:
 *
 *   1. split on the literal special tokens (they become their ids);
 *   2. clean each piece (src/tokenizer/clean.ts);
 *   3. find words with CLIP's regex;
 *   4. byte-encode each word, mark its end with `</w>`, apply merges by rank, look up the vocab;
 *   5. [bos] + tokens[:max-2] + [eos], padded with the pad token.
 *
 * Why not @huggingface/tokenizers: it only runs the *fast* tokenizer pipeline (normalizer =
 * NFC + whitespace collapse + lowercase). The slow tokenizer's cleanup (dropping C* characters such
 * as U+200B, spacing out CJK ideographs) has no equivalent there, so 3 of the 25 conformance vectors
 * differ; it also needs a tokenizer.json that our model folders do not have.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { bpe } from './bpe.ts';
import { byteEncode } from './bytes.ts';
import { clipClean } from './clean.ts';

export const DEFAULT_MODEL_MAX_LENGTH = 77;
/** CLIPTokenizer keeps merges.txt lines [1, 49152 - 256 - 2 + 1): at most 48894 merges. */
export const MAX_MERGES = 49152 - 256 - 2;

const START_OF_TEXT = '<|startoftext|>';
const END_OF_TEXT = '<|endoftext|>';
const END_OF_WORD = '</w>';
/** Words whose BPE result is cached; past this the cache starts over (bounded memory for live streams). */
const WORD_CACHE_LIMIT = 20_000;
/** Longer words (rare, and never repeated in practice) are not cached, to keep the cache small. */
const CACHED_WORD_MAX_LENGTH = 128;

/** CLIP's word pattern (case-insensitive, as the reference compiles it). */
const WORD_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

export interface ClipTokenizerData {
  vocab: Record<string, number>;
  /** Merge lines ("a b"), without the `#version` header line of merges.txt. */
  merges: string[];
  modelMaxLength?: number;
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  /** Defaults to `<|endoftext|>`. */
  unkToken?: string;
}

function badModel(message: string): DepthcastError {
  return new DepthcastError('BAD_MODEL', message);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** A special token in tokenizer_config.json / special_tokens_map.json: a string or a serialized AddedToken. */
function tokenString(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

export class ClipTokenizer {
  readonly modelMaxLength: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;

  private readonly vocab: Map<string, number>;
  /** "first second" → rank (symbols never contain spaces, so the key is unambiguous). */
  private readonly ranks: Map<string, number>;
  /** Literal special-token strings → id, and the pattern that splits text on them (null: none). */
  private readonly specialIds: Map<string, number>;
  private readonly specialSplit: RegExp | null;
  /** word (as matched by WORD_PATTERN) → its token ids. */
  private readonly cache = new Map<string, readonly number[]>();

  private constructor(data: ClipTokenizerData) {
    const { vocab, merges } = data;
    if (!vocab || typeof vocab !== 'object' || Array.isArray(vocab)) {
      throw badModel('tokenizer vocab must be a JSON object mapping token strings to integer ids');
    }
    if (!Array.isArray(merges)) throw badModel('tokenizer merges must be an array of "a b" lines');

    this.vocab = new Map();
    for (const [token, id] of Object.entries(vocab)) {
      if (!Number.isInteger(id) || id < 0) {
        throw badModel(`tokenizer vocab entry ${JSON.stringify(token)} has id ${JSON.stringify(id)}; ids must be non-negative integers`);
      }
      this.vocab.set(token, id);
    }

    // Like the reference: lines past MAX_MERGES are ignored, a line that is not exactly two symbols
    // still takes its rank, and a repeated pair keeps its last rank.
    this.ranks = new Map();
    const n = Math.min(merges.length, MAX_MERGES);
    for (let rank = 0; rank < n; rank++) {
      const line = merges[rank];
      if (typeof line !== 'string') throw badModel(`tokenizer merge ${rank} is not a string`);
      const parts = line.trim().split(/\s+/);
      if (parts.length === 2) this.ranks.set(`${parts[0]} ${parts[1]}`, rank);
    }

    const maxLength = data.modelMaxLength ?? DEFAULT_MODEL_MAX_LENGTH;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw badModel(`tokenizer model_max_length is ${maxLength}; it must be an integer of at least 2 (CLIP uses 77)`);
    }
    this.modelMaxLength = maxLength;

    const idOf = (role: string, token: string): number => {
      const id = this.vocab.get(token);
      if (id === undefined) {
        throw badModel(`tokenizer ${role} token ${JSON.stringify(token)} is not in vocab.json; the vocab must contain its special tokens`);
      }
      return id;
    };
    const bos = data.bosToken ?? START_OF_TEXT;
    const eos = data.eosToken ?? END_OF_TEXT;
    const pad = data.padToken ?? END_OF_TEXT;
    const unk = data.unkToken ?? END_OF_TEXT;
    this.bosId = idOf('bos', bos);
    this.eosId = idOf('eos', eos);
    this.padId = idOf('pad', pad);
    this.unkId = idOf('unk', unk);

    // Step 1 splits on every special token's literal text (longest first, as the reference's trie).
    this.specialIds = new Map([
      [bos, this.bosId],
      [eos, this.eosId],
      [unk, this.unkId],
      [pad, this.padId],
    ]);
    const literals = [...this.specialIds.keys()].filter((s) => s.length > 0).sort((a, b) => b.length - a.length);
    this.specialSplit = literals.length ? new RegExp(`(${literals.map(escapeRegExp).join('|')})`, 'u') : null;
  }

  static fromData(data: ClipTokenizerData): ClipTokenizer {
    return new ClipTokenizer(data);
  }

  /**
   * Reads vocab.json and merges.txt (required), tokenizer_config.json (model_max_length, special
   * tokens; optional) and special_tokens_map.json (optional; its names win, as in transformers).
   */
  static async fromFolder(dir: string): Promise<ClipTokenizer> {
    const vocabPath = join(dir, 'vocab.json');
    const mergesPath = join(dir, 'merges.txt');
    const configPath = join(dir, 'tokenizer_config.json');
    const mapPath = join(dir, 'special_tokens_map.json');

    const readRequired = async (path: string, what: string): Promise<string> => {
      try {
        return await readFile(path, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const why = code === 'ENOENT' ? 'is missing' : `cannot be read (${code ?? (err as Error).message})`;
        throw badModel(`${path} ${why}: a CLIP tokenizer folder needs vocab.json and merges.txt (${what}); re-download or re-export the model's tokenizer/ folder`);
      }
    };
    const readOptional = async (path: string): Promise<string | undefined> => {
      try {
        return await readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw badModel(`${path} cannot be read (${(err as Error).message}); fix its permissions or remove it`);
      }
    };
    const parseJson = (text: string, path: string): unknown => {
      try {
        return JSON.parse(text);
      } catch (err) {
        throw badModel(`${path} is not valid JSON (${(err as Error).message}); re-download or re-export the model's tokenizer/ folder`);
      }
    };
    const asObject = (value: unknown, path: string): Record<string, unknown> => {
      if (!value || typeof value !== 'object' || Array.isArray(value)) {
        throw badModel(`${path} must hold a JSON object; re-download or re-export the model's tokenizer/ folder`);
      }
      return value as Record<string, unknown>;
    };

    const [vocabText, mergesText, configText, mapText] = await Promise.all([
      readRequired(vocabPath, 'token → id map'),
      readRequired(mergesPath, 'BPE merge rules'),
      readOptional(configPath),
      readOptional(mapPath),
    ]);

    const vocab = asObject(parseJson(vocabText, vocabPath), vocabPath) as Record<string, number>;
    // As the reference: strip the file, drop the first (version header) line, keep the rest.
    const mergeLines = mergesText.trim().split('\n').slice(1);
    const config = configText === undefined ? {} : asObject(parseJson(configText, configPath), configPath);
    const map = mapText === undefined ? {} : asObject(parseJson(mapText, mapPath), mapPath);

    let modelMaxLength: number | undefined;
    const rawMax = config.model_max_length;
    if (rawMax !== undefined && rawMax !== null) {
      if (typeof rawMax !== 'number') {
        throw badModel(`${configPath}: model_max_length is ${JSON.stringify(rawMax)}; it must be an integer (CLIP uses 77)`);
      }
      // transformers writes int(1e30) when a tokenizer has no limit; that means "not set".
      if (rawMax < 1e20) modelMaxLength = rawMax;
    }
    const special = (key: string): string | undefined => tokenString(map[key]) ?? tokenString(config[key]);

    try {
      return new ClipTokenizer({
        vocab,
        merges: mergeLines,
        modelMaxLength,
        bosToken: special('bos_token'),
        eosToken: special('eos_token'),
        padToken: special('pad_token'),
        unkToken: special('unk_token'),
      });
    } catch (err) {
      if (err instanceof DepthcastError) throw badModel(`${dir}: ${err.message}`);
      throw err;
    }
  }

  /** Exactly modelMaxLength ids: [bos] + tokens[:max-2] + [eos], padded with padId. */
  encode(text: string): Int32Array {
    const out = new Int32Array(this.modelMaxLength).fill(this.padId);
    out[0] = this.bosId;
    const limit = this.modelMaxLength - 2;
    const tokens = this.tokenizeUpTo(text, limit);
    const n = Math.min(tokens.length, limit);
    for (let i = 0; i < n; i++) out[i + 1] = tokens[i]!;
    out[n + 1] = this.eosId;
    return out;
  }

  /** The BPE ids of `text` (special-token literals included), without bos/eos/padding or truncation. */
  tokenize(text: string): number[] {
    return this.tokenizeUpTo(text, Infinity);
  }

  /** Tokenizes until at least `limit` ids are produced (the rest would be truncated away anyway). */
  private tokenizeUpTo(text: string, limit: number): number[] {
    if (typeof text !== 'string') throw new DepthcastError('BAD_REQUEST', `prompt must be a string, got ${typeof text}`);
    const ids: number[] = [];
    // With a capturing group, split() puts the matched literals at the odd indices.
    const pieces = this.specialSplit ? text.split(this.specialSplit) : [text];
    for (let p = 0; p < pieces.length && ids.length < limit; p++) {
      const piece = pieces[p]!;
      if (p % 2 === 1) ids.push(this.specialIds.get(piece)!);
      else if (piece.length > 0) this.tokenizePiece(piece, ids, limit);
    }
    return ids;
  }

  private tokenizePiece(piece: string, ids: number[], limit: number): void {
    const cleaned = clipClean(piece);
    if (cleaned.length === 0) return;
    WORD_PATTERN.lastIndex = 0;
    let m: RegExpExecArray | null;
    while (ids.length < limit && (m = WORD_PATTERN.exec(cleaned)) !== null) {
      const wordIds = this.wordIds(m[0]);
      for (let i = 0; i < wordIds.length; i++) ids.push(wordIds[i]!);
    }
    WORD_PATTERN.lastIndex = 0;
  }

  private wordIds(word: string): readonly number[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let ids: number[];
    if (word === START_OF_TEXT || word === END_OF_TEXT) {
      // The reference's BPE cache is seeded with these two, so they bypass BPE (e.g. after
      // lowercasing `<|ENDOFTEXT|>`) and are looked up as whole tokens.
      ids = [this.vocab.get(word) ?? this.unkId];
    } else {
      // Byte-level symbols are all in the BMP, so code units are characters here.
      const symbols = byteEncode(word).split('');
      symbols[symbols.length - 1] += END_OF_WORD;
      ids = bpe(symbols, this.ranks).map((symbol) => this.vocab.get(symbol) ?? this.unkId);
    }
    if (word.length <= CACHED_WORD_MAX_LENGTH) {
      if (this.cache.size >= WORD_CACHE_LIMIT) this.cache.clear();
      this.cache.set(word, ids);
    }
    return ids;
  }
}
