/**
 * The merge loop of CLIP's BPE. The reference repeats: take the adjacent pair of lowest rank,
 * merge every occurrence of it left to right (non-overlapping), until no pair has a rank.
 *
 * Two exact implementations of that loop: a direct one for ordinary words (fastest when short),
 * and a heap-based one for long words, where the direct loop is quadratic (a 4000-letter word
 * without spaces would otherwise stall a live stream for a quarter of a second).
 */

/** "first second" → rank; a lower rank merges first. */
export type MergeRanks = ReadonlyMap<string, number>;

/** Words longer than this (in symbols) use the heap. */
export const HEAP_THRESHOLD = 48;

export function bpe(symbols: string[], ranks: MergeRanks): string[] {
  return symbols.length > HEAP_THRESHOLD ? bpeHeap(symbols, ranks) : bpeDirect(symbols, ranks);
}

/** The reference loop as written. */
export function bpeDirect(symbols: string[], ranks: MergeRanks): string[] {
  let word = symbols;
  while (word.length > 1) {
    let bestRank = Infinity;
    let first = '';
    let second = '';
    for (let i = 0; i < word.length - 1; i++) {
      const rank = ranks.get(`${word[i]} ${word[i + 1]}`);
      if (rank !== undefined && rank < bestRank) {
        bestRank = rank;
        first = word[i]!;
        second = word[i + 1]!;
      }
    }
    if (bestRank === Infinity) break;
    const merged: string[] = [];
    for (let i = 0; i < word.length; ) {
      if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
        merged.push(first + second);
        i += 2;
      } else {
        merged.push(word[i]!);
        i += 1;
      }
    }
    word = merged;
  }
  return word;
}

const POS = 2 ** 32;

/**
 * Same result as bpeDirect in O(n log n): symbols form a linked list; a min-heap holds
 * (rank, left position) of every pair that had a rank when it formed, checked again when popped.
 * All entries of the lowest rank are taken out before any is merged, so pairs formed by those
 * merges wait for the next round, exactly as in the reference's one pass per rank. A merge never
 * forms the pair it merged (the new symbol is longer than both halves), so a pass cannot grow.
 */
export function bpeHeap(symbols: string[], ranks: MergeRanks): string[] {
  const n = symbols.length;
  if (n < 2) return symbols.slice();
  const sym = symbols.slice();
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  const alive = new Uint8Array(n).fill(1);
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  const rankAt = (i: number): number | undefined => {
    const j = next[i]!;
    return j < 0 ? undefined : ranks.get(`${sym[i]} ${sym[j]}`);
  };

  const heap: number[] = [];
  const push = (key: number): void => {
    let k = heap.length;
    heap.push(key);
    while (k > 0) {
      const parent = (k - 1) >> 1;
      if (heap[parent]! <= key) break;
      heap[k] = heap[parent]!;
      k = parent;
    }
    heap[k] = key;
  };
  const pop = (): number => {
    const top = heap[0]!;
    const last = heap.pop()!;
    const size = heap.length;
    if (size > 0) {
      let k = 0;
      for (;;) {
        const l = 2 * k + 1;
        if (l >= size) break;
        const r = l + 1;
        const c = r < size && heap[r]! < heap[l]! ? r : l;
        if (heap[c]! >= last) break;
        heap[k] = heap[c]!;
        k = c;
      }
      heap[k] = last;
    }
    return top;
  };
  const pushPair = (i: number): void => {
    const rank = rankAt(i);
    if (rank !== undefined) push(rank * POS + i);
  };

  for (let i = 0; i < n - 1; i++) pushPair(i);
  const batch: number[] = [];
  while (heap.length > 0) {
    const rank = Math.floor(heap[0]! / POS);
    batch.length = 0;
    while (heap.length > 0 && Math.floor(heap[0]! / POS) === rank) batch.push(pop() % POS);
    // Positions come out ascending, which is list order: left to right, as the reference.
    for (const i of batch) {
      if (!alive[i] || rankAt(i) !== rank) continue; // stale, or consumed by the merge on its left
      const j = next[i]!;
      sym[i] = sym[i]! + sym[j]!;
      alive[j] = 0;
      const k = next[j]!;
      next[i] = k;
      if (k >= 0) prev[k] = i;
      if (prev[i]! >= 0) pushPair(prev[i]!);
      pushPair(i);
    }
  }

  const out: string[] = [];
  for (let i = 0; i >= 0; i = next[i]!) out.push(sym[i]!); // position 0 is never removed
  return out;
}
