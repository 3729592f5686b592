// Model output as Markdown, built as elements and text nodes — never as an HTML string.
// Whatever the model writes (`<img src=x onerror=…>`, `<script>`) stays text: no parser
// of ours or the browser's ever reads it as markup, so there is nothing to sanitise, and
// the page's Trusted Types policy would refuse any HTML sink anyway. Links are kept only
// for http(s) and mailto URLs; images are shown as their text (the console loads nothing
// from another host).
//
// Why not a Markdown library plus DOMPurify: they produce an HTML string and then clean
// it (about 60 KB more, and a sanitiser to keep current); this covers what chat answers
// use — paragraphs, headings, lists, quotes, code blocks and spans, emphasis, links, rules.
import { html } from './lib.js';

const SAFE_URL = /^(https?:\/\/|mailto:)/i;
const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=\S)([\s\S]*?\S)\*|\b_(?=\S)([\s\S]*?\S)_\b|(!?)\[([^\]\n]*)\]\(\s*([^)\s]*)\s*\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/;

export function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const m = INLINE.exec(rest);
    if (!m) {
      out.push(rest);
      break;
    }
    if (m.index) out.push(rest.slice(0, m.index));
    const [all, , code, strong1, strong2, em1, em2, bang, label, url, bare] = m;
    if (code !== undefined) out.push(html`<code>${code.trim() || code}</code>`);
    else if (strong1 !== undefined || strong2 !== undefined) out.push(html`<strong>${inline(strong1 ?? strong2)}</strong>`);
    else if (em1 !== undefined || em2 !== undefined) out.push(html`<em>${inline(em1 ?? em2)}</em>`);
    else if (bang) out.push(`[image: ${label || url}]`);
    else if (label !== undefined) out.push(SAFE_URL.test(url) ? link(url, inline(label)) : label);
    else if (bare !== undefined) out.push(link(bare, bare));
    else out.push(all);
    rest = rest.slice(m.index + all.length);
  }
  return out;
}

const link = (href, children) => html`<a href=${href} target="_blank" rel="noopener noreferrer nofollow">${children}</a>`;

const FENCE = /^\s{0,3}(```|~~~)\s*([\w+-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;

function lineParts(lines) {
  const parts = [];
  lines.forEach((line, i) => {
    if (i) parts.push(html`<br />`);
    parts.push(...inline(line));
  });
  return parts;
}

export function blocks(text) {
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const body = [];
      for (i++; i < lines.length && !lines[i].trimStart().startsWith(m[1]); i++) body.push(lines[i]);
      i++;
      out.push(html`<pre><code data-lang=${m[2] || undefined}>${body.join('\n')}</code></pre>`);
    } else if ((m = HEADING.exec(line))) {
      const level = Math.min(m[1].length + 2, 6); // below the page's own headings
      out.push(html`<${`h${level}`} class="md-h">${inline(m[2])}<//>`);
      i++;
    } else if (RULE.test(line)) {
      out.push(html`<hr />`);
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      for (; i < lines.length && (m = QUOTE.exec(lines[i])); i++) body.push(m[1]);
      out.push(html`<blockquote>${blocks(body.join('\n'))}</blockquote>`);
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const items = [];
      for (; i < lines.length; i++) {
        if ((m = pattern.exec(lines[i]))) items.push([ordered ? m[2] : m[1]]);
        else if (items.length && /^\s{2,}\S/.test(lines[i])) items[items.length - 1].push(lines[i].trim());
        else break;
      }
      const start = ordered ? Number(NUMBERED.exec(line)[1]) : undefined;
      const lis = items.map((item) => html`<li>${lineParts(item)}</li>`);
      out.push(ordered ? html`<ol start=${start !== 1 ? start : undefined}>${lis}</ol>` : html`<ul>${lis}</ul>`);
    } else {
      const body = [];
      for (; i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i]) && !QUOTE.test(lines[i]) && !(body.length && (BULLET.test(lines[i]) || NUMBERED.test(lines[i]))); i++) body.push(lines[i]);
      out.push(html`<p>${lineParts(body)}</p>`);
    }
  }
  return out;
}

export function Markdown({ text }) {
  return html`<div class="md">${blocks(text)}</div>`;
}
