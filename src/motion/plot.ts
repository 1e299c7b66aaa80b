/**
 * The score plot of a batch report: warp error per frame pair, one line per series (a batch has
 * one; a comparison of modes has two), rasterised from SVG to PNG by sharp.
 */
import sharp from 'sharp';

const W = 480;
const H = 220;
const PAD = 40;
/** Room above the axes for the title and one legend line per series. */
const TOP = 66;
const COLOURS = ['#c0392b', '#2c7fb8', '#27ae60', '#8e44ad'];

/** What a plot reads of a sequence's score (a SequenceScore, or a summary sent to the service). */
export interface PlottedScore {
  pairs: readonly { frame: number; error: number }[];
  meanError: number;
  worst?: { frame: number; error: number };
}

export interface PlotSeries {
  label: string;
  score: PlottedScore;
}

/** The mean and worst pair of a series of pairs (meanError 0 for none). */
export function plottedScore(pairs: readonly { frame: number; error: number }[]): PlottedScore {
  const meanError = pairs.length ? pairs.reduce((t, p) => t + p.error, 0) / pairs.length : 0;
  const worst = pairs.reduce<{ frame: number; error: number } | undefined>((w, p) => (!w || p.error > w.error ? p : w), undefined);
  return { pairs, meanError, ...(worst ? { worst } : {}) };
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

/** SVG of warp error over frames, y axis from 0 to the largest error. */
export function scorePlotSvg(series: PlotSeries[], title: string): string {
  const all = series.flatMap((s) => s.score.pairs);
  const maxErr = Math.max(1e-3, ...all.map((p) => p.error));
  const first = Math.min(...all.map((p) => p.frame), 1);
  const last = Math.max(...all.map((p) => p.frame), first + 1);
  const x = (f: number) => PAD + ((f - first) / (last - first)) * (W - 2 * PAD);
  const y = (v: number) => H - PAD - (v / maxErr) * (H - PAD - TOP);
  const paths = series.map((s, k) => {
    const d = s.score.pairs.map((p, i) => `${i ? 'L' : 'M'}${x(p.frame).toFixed(1)},${y(p.error).toFixed(1)}`).join(' ');
    const colour = COLOURS[k % COLOURS.length]!;
    return `<path d="${d}" fill="none" stroke="${colour}" stroke-width="2"/>
<text x="${PAD}" y="${22 + 14 * (k + 1)}" font-family="sans-serif" font-size="11" fill="${colour}">${escapeXml(s.label)}: mean ${s.score.meanError.toFixed(4)}, worst ${s.score.worst ? `${s.score.worst.error.toFixed(4)} (frame ${s.score.worst.frame})` : '-'}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">
<rect width="100%" height="100%" fill="white"/>
<text x="${PAD}" y="20" font-family="sans-serif" font-size="13">${escapeXml(title)}</text>
<line x1="${PAD}" y1="${H - PAD}" x2="${W - PAD}" y2="${H - PAD}" stroke="black"/>
<line x1="${PAD}" y1="${TOP}" x2="${PAD}" y2="${H - PAD}" stroke="black"/>
<text x="4" y="${TOP + 4}" font-family="sans-serif" font-size="10">${maxErr.toFixed(3)}</text>
<text x="${PAD - 12}" y="${H - PAD + 4}" font-family="sans-serif" font-size="10">0</text>
<text x="${PAD}" y="${H - PAD + 14}" font-family="sans-serif" font-size="10">frame ${first}</text>
<text x="${W - PAD - 40}" y="${H - PAD + 14}" font-family="sans-serif" font-size="10">frame ${last}</text>
<text x="${W / 2 - 60}" y="${H - 8}" font-family="sans-serif" font-size="10">warp error (mean |I_t − warp(I_t−1)|)</text>
${paths.join('\n')}
</svg>`;
}

export function renderScorePlot(series: PlotSeries[], title: string): Promise<Buffer> {
  return sharp(Buffer.from(scorePlotSvg(series, title))).png().toBuffer();
}
