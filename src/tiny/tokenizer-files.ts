/**
 * A tiny CLIP-style byte-level BPE tokenizer for the tiny models. Same file formats and the same
 * vocab construction order as the CLIP tokenizer (256 byte symbols, the same with `</w>`, one
 * entry per merge, then the two special tokens), but only 48 merges, so V = 562 and the text
 * encoder's embedding table stays small. Every UTF-8 string still tokenizes (it falls back to
 * byte symbols); the merges just make common English prompt words a little shorter.
 */

export const START_TOKEN = '<|startoftext|>';
export const END_TOKEN = '<|endoftext|>';

/**
 * Learned once by plain BPE (most frequent pair first, ties by pair text) on a handful of
 * made-up prompts ("a photo of the house in the forest with a red roof", ...). Rank = index.
 */
export const TINY_MERGES: readonly string[] = [
  'h e</w>', 't he</w>', 'i t', 'a n', 'it h</w>', 'o f</w>', 'w ith</w>', 'an d</w>',
  'i n', 'r e', 'd e', 'i n</w>', 'o u', 's t', 'a n</w>', 'c a',
  'e r', 't a', 'a r', 'e r</w>', 'e t</w>', 'g h', 'h ou', 'hou s',
  'hous e</w>', 'i gh', 'l e</w>', 'o w', 'r o', 'u n', 'a l', 'a t</w>',
  'an d', 'c e', 'c it', 'c o', 'ca st', 'cast le</w>', 'cit y</w>', 'de n</w>',
  'e d</w>', 'e n</w>', 'er i', 'h o', 'ho t', 'hot o</w>', 'i e', 'i l',
];

/** GPT-2's reversible byte → printable-unicode-symbol table, in CLIP's vocab order (index = byte rank). */
export function byteSymbols(): { byte: number; symbol: string }[] {
  const printable: number[] = [];
  const range = (a: number, b: number) => {
    for (let c = a; c <= b; c++) printable.push(c);
  };
  range(0x21, 0x7e);
  range(0xa1, 0xac);
  range(0xae, 0xff);
  const set = new Set(printable);
  const out = printable.map((b) => ({ byte: b, symbol: String.fromCodePoint(b) }));
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!set.has(b)) out.push({ byte: b, symbol: String.fromCodePoint(256 + n++) });
  }
  return out;
}

/** token → id, in id order: bytes, bytes + `</w>`, merges, `<|startoftext|>`, `<|endoftext|>`. */
export function tinyVocab(): Map<string, number> {
  const tokens: string[] = [];
  const symbols = byteSymbols().map((s) => s.symbol);
  tokens.push(...symbols, ...symbols.map((s) => `${s}</w>`));
  for (const merge of TINY_MERGES) tokens.push(merge.replace(' ', ''));
  tokens.push(START_TOKEN, END_TOKEN);
  const vocab = new Map<string, number>();
  for (const t of tokens) {
    if (vocab.has(t)) throw new Error(`tiny vocab: duplicate token ${t}`);
    vocab.set(t, vocab.size);
  }
  return vocab;
}

const TOKENIZER_CONFIG = {
  bos_token: START_TOKEN,
  eos_token: END_TOKEN,
  unk_token: END_TOKEN,
  pad_token: END_TOKEN,
  tokenizer_class: 'CLIPTokenizer',
  model_max_length: 77,
  do_lower_case: true,
  errors: 'replace',
  add_prefix_space: false,
  clean_up_tokenization_spaces: true,
};

const SPECIAL_TOKENS_MAP = {
  bos_token: START_TOKEN,
  eos_token: END_TOKEN,
  unk_token: END_TOKEN,
  pad_token: END_TOKEN,
};

/** The four files of `tokenizer/`, by name. */
export function tinyTokenizerFiles(): Record<string, string> {
  // Written by hand rather than via an object: JS objects enumerate digit keys ("0".."9") first,
  // and we want the file in id order like CLIP's.
  const entries = [...tinyVocab()].map(([token, id]) => `${JSON.stringify(token)}: ${id}`);
  return {
    'vocab.json': `{${entries.join(', ')}}\n`,
    'merges.txt': `#version: 0.2\n${TINY_MERGES.join('\n')}\n`,
    'tokenizer_config.json': `${JSON.stringify(TOKENIZER_CONFIG, null, 2)}\n`,
    'special_tokens_map.json': `${JSON.stringify(SPECIAL_TOKENS_MAP, null, 2)}\n`,
  };
}
