// A stacked bar chart in SVG (no library): one bar per time bucket, one colour per
// series, with a text summary for screen readers and the numbers in a table below.
import { html } from './lib.js';

const COLORS = ['#1d4ed8', '#b45309', '#047857', '#9d174d', '#6d28d9', '#0e7490', '#4d7c0f', '#b91c1c'];

// buckets: [{label, values: {series: number}}]; series: names in legend order.
export function BarChart({ title, buckets, series, unit = '', format = (v) => v.toLocaleString() }) {
  const W = 720;
  const H = 220;
  const pad = { left: 56, right: 8, top: 12, bottom: 28 };
  const totals = buckets.map((b) => series.reduce((sum, s) => sum + (b.values[s] || 0), 0));
  const max = Math.max(0, ...totals) || 1;
  const step = (W - pad.left - pad.right) / Math.max(1, buckets.length);
  const bar = Math.max(2, step * 0.7);
  const y = (v) => pad.top + (H - pad.top - pad.bottom) * (1 - v / max);
  const grand = totals.reduce((a, b) => a + b, 0);
  const label = `${title}: ${format(grand)} ${unit} in ${buckets.length} periods, at most ${format(max)} in one.`;
  const every = Math.ceil(buckets.length / 8);
  return html`<figure class="chart">
    <figcaption>${title}</figcaption>
    <svg viewBox=${`0 0 ${W} ${H}`} role="img" aria-label=${label} data-total=${grand}>
      <line x1=${pad.left} x2=${W - pad.right} y1=${y(0)} y2=${y(0)} stroke="#6b7280" />
      <text x=${pad.left - 6} y=${y(max) + 4} text-anchor="end" class="axis">${format(max)}</text>
      <text x=${pad.left - 6} y=${y(0) + 4} text-anchor="end" class="axis">0</text>
      ${buckets.map((b, i) => {
        let base = 0;
        const x = pad.left + i * step + (step - bar) / 2;
        return html`<g key=${i}>
          ${series.map((s, n) => {
            const v = b.values[s] || 0;
            if (!v) return null;
            const top = y(base + v);
            const r = html`<rect x=${x} y=${top} width=${bar} height=${y(base) - top} fill=${COLORS[n % COLORS.length]}><title>${`${b.label} · ${s}: ${format(v)} ${unit}`}</title></rect>`;
            base += v;
            return r;
          })}
          ${i % every === 0 && html`<text x=${x + bar / 2} y=${H - 8} text-anchor="middle" class="axis">${b.label}</text>`}
        </g>`;
      })}
    </svg>
    <ul class="legend">
      ${series.map((s, n) => html`<li><span class="swatch" data-color=${n % COLORS.length}></span>${s}</li>`)}
    </ul>
    <details><summary>Numbers</summary>
      <table><thead><tr><th scope="col">Period</th>${series.map((s) => html`<th scope="col">${s}</th>`)}<th scope="col">Total</th></tr></thead>
        <tbody>${buckets.map((b, i) => html`<tr><td>${b.label}</td>${series.map((s) => html`<td>${format(b.values[s] || 0)}</td>`)}<td>${format(totals[i])}</td></tr>`)}</tbody>
      </table>
    </details>
  </figure>`;
}
