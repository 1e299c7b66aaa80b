/**
 * Text cleanup of transformers' slow CLIPTokenizer when ftfy is not installed (its BasicTokenizer
 * with strip_accents=False and no punctuation split), conformance README section 5 step 2:
 *
 *   drop U+0000, U+FFFD and every C* character except \t \n \r; map \t \n \r and Zs to a space;
 *   put spaces around CJK ideographs; NFC; split on whitespace; lowercase; join with one space.
 *
 * Every pattern is compiled once here.
 */

/** C* (Cc Cf Cs Co Cn) except \t \n \r, plus U+FFFD. U+0000 is Cc. */
const DROPPED = /(?![\t\n\r])\p{C}|\uFFFD/gu;
/** \t \n \r and the space separators (Zs, which includes U+0020 and U+00A0). */
const TO_SPACE = /[\t\n\r\p{Zs}]/gu;
/** CJK ideograph blocks of BasicTokenizer._is_chinese_char. */
const CJK =
  /[\u4E00-\u9FFF\u3400-\u4DBF\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B820}-\u{2CEAF}\uF900-\uFAFF\u{2F800}-\u{2FA1F}]/gu;
/**
 * What Python's str.split() treats as whitespace (bidi WS/B/S or Zs). After the steps above only
 * U+0020, U+2028 and U+2029 can remain, but the full set keeps this faithful on its own.
 */
const PY_WHITESPACE = /[\t\n\x0B\f\r\x1C-\x1F \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+/;

/** Text that needs none of the Unicode steps: printable ASCII plus \t \n \r. */
const PLAIN_ASCII = /^[\x20-\x7E\t\n\r]*$/;
const ASCII_WHITESPACE = /[ \t\n\r]+/;

function joinWords(text: string, separator: RegExp): string {
  const words = text.split(separator);
  let out = '';
  for (const w of words) {
    if (w.length === 0) continue;
    out = out.length === 0 ? w : `${out} ${w}`;
  }
  // Lowercasing the joined text equals lowercasing each word: a space ends every casing context
  // (final sigma included), and lowercasing never produces whitespace.
  return out.toLowerCase();
}

/** Returns the cleaned, lowercased words joined by single spaces (possibly ''). */
export function clipClean(text: string): string {
  if (PLAIN_ASCII.test(text)) return joinWords(text, ASCII_WHITESPACE);
  let t = text.replace(DROPPED, '');
  t = t.replace(TO_SPACE, ' ');
  t = t.replace(CJK, ' $& ');
  t = t.normalize('NFC');
  return joinWords(t, PY_WHITESPACE);
}
