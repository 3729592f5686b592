// Building blocks shared by the screens: loading, errors, paged tables, validated forms,
// the one-time display of a new secret, and two-step confirmations.
import { html, useState, useEffect, useCallback, useRef } from './lib.js';

export const when = (seconds) => (seconds ? new Date(seconds * 1000).toLocaleString() : '—');
export const count = (n) => (n ?? 0).toLocaleString();

// The API's own message, as it sent it (OpenAI's envelope), or a network failure's.
export function ErrorNote({ error }) {
  if (!error) return null;
  const code = error.code ? html` <span class="muted">(${error.code})</span>` : null;
  return html`<p class="error" role="alert">${error.message}${code}</p>`;
}

export function useLoad(load, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return [state, useCallback(() => setTick((t) => t + 1), [])];
}

// A table over one of the API's lists, paged with its cursors (`after` = the last ID
// seen, `has_more`): the cursors of the pages already seen give "Previous".
export function Paged({ load, columns, caption, empty = 'Nothing yet.', version = 0, limit = 20 }) {
  const [cursors, setCursors] = useState([undefined]);
  const after = cursors[cursors.length - 1];
  const [{ data, error, loading }, reload] = useLoad(() => load({ after, limit }), [after, version]);
  useEffect(() => setCursors([undefined]), [version]);
  return html`<div class="paged">
    <${ErrorNote} error=${error} />
    ${data && html`<${Table} caption=${caption} columns=${columns} rows=${data.data} empty=${empty} reload=${reload} />`}
    ${loading && !data && html`<p class="muted">Loading…</p>`}
    ${(cursors.length > 1 || data?.has_more) && html`<div class="pager">
      <button type="button" class="secondary" disabled=${cursors.length < 2} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous</button>
      <button type="button" class="secondary" disabled=${!data?.has_more} onClick=${() => setCursors([...cursors, data.last_id])}>Next</button>
    </div>`}
  </div>`;
}

export function Table({ caption, columns, rows, empty = 'Nothing yet.', reload }) {
  if (!rows.length) return html`<p class="muted">${empty}</p>`;
  return html`<div class="table-wrap"><table>
    ${caption && html`<caption>${caption}</caption>`}
    <thead><tr>${columns.map((c) => html`<th scope="col">${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((row) => html`<tr key=${row.id}>${columns.map((c) => html`<td>${c.render ? c.render(row, reload) : row[c.key] ?? '—'}</td>`)}</tr>`)}</tbody>
  </table></div>`;
}

// A form that checks its fields before sending and shows the API's error when the
// server refuses. fields: {name, label, type (text|email|number|select|checkbox|textarea|
// password), required, min, max, options, hint, value, validate(value) -> message}.
let formIds = 0;
export function Form({ fields, submit, label, done, inline = false, cancel }) {
  const id = useRef(`f${++formIds}`).current;
  const start = (f) => f.value ?? (f.type === 'checkbox' ? false : f.type === 'select' ? f.options[0]?.value ?? f.options[0] : '');
  const initial = () => Object.fromEntries(fields.map((f) => [f.name, start(f)]));
  const [values, setValues] = useState(initial);
  const [problems, setProblems] = useState({});
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const set = (name, value) => setValues((v) => ({ ...v, [name]: value }));

  const check = () => {
    const found = {};
    for (const f of fields) {
      const v = values[f.name];
      const text = typeof v === 'string' ? v.trim() : v;
      if (f.required && (text === '' || text === false)) found[f.name] = `${f.label} is required.`;
      else if (f.type === 'number' && text !== '') {
        const n = Number(text);
        if (!Number.isInteger(n)) found[f.name] = `${f.label} must be a whole number.`;
        else if (f.min !== undefined && n < f.min) found[f.name] = `${f.label} must be at least ${f.min}.`;
        else if (f.max !== undefined && n > f.max) found[f.name] = `${f.label} must be at most ${f.max}.`;
      } else if (f.type === 'email' && text && !/^[^\s@]+@[^\s@]+$/.test(text)) found[f.name] = `${f.label} must be an e-mail address.`;
      if (!found[f.name] && f.validate) {
        const message = f.validate(text, values);
        if (message) found[f.name] = message;
      }
    }
    return found;
  };

  const onSubmit = async (event) => {
    event.preventDefault();
    const found = check();
    setProblems(found);
    setError(null);
    if (Object.keys(found).length) return;
    const out = {};
    for (const f of fields) {
      const v = values[f.name];
      out[f.name] = f.type === 'number' ? (String(v).trim() === '' ? null : Number(v)) : typeof v === 'string' ? v.trim() : v;
    }
    setBusy(true);
    try {
      const result = await submit(out);
      if (!inline) setValues(initial());
      done?.(result);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return html`<form class=${inline ? 'form inline' : 'form'} onSubmit=${onSubmit} noValidate>
    ${fields.map((f) => html`<${Field} key=${f.name} id=${`${id}-${f.name}`} field=${f} value=${values[f.name]} problem=${problems[f.name]} set=${set} />`)}
    <div class="actions">
      <button type="submit" disabled=${busy}>${busy ? 'Working…' : label}</button>
      ${cancel && html`<button type="button" class="secondary" onClick=${cancel}>Cancel</button>`}
    </div>
    <${ErrorNote} error=${error} />
  </form>`;
}

function Field({ id, field: f, value, problem, set }) {
  const note = problem || f.hint;
  const described = note ? `${id}-note` : undefined;
  const common = { id, name: f.name, 'aria-invalid': problem ? 'true' : undefined, 'aria-describedby': described };
  let input;
  if (f.type === 'select') {
    input = html`<select ...${common} value=${value} onChange=${(e) => set(f.name, e.target.value)}>
      ${f.options.map((o) => html`<option value=${o.value ?? o}>${o.label ?? o}</option>`)}
    </select>`;
  } else if (f.type === 'checkbox') {
    input = html`<input type="checkbox" ...${common} checked=${value} onChange=${(e) => set(f.name, e.target.checked)} />`;
  } else if (f.type === 'textarea') {
    input = html`<textarea ...${common} rows=${f.rows || 3} value=${value} onInput=${(e) => set(f.name, e.target.value)}></textarea>`;
  } else {
    const type = f.type === 'number' ? 'text' : f.type || 'text';
    input = html`<input type=${type} inputmode=${f.type === 'number' ? 'numeric' : undefined} autocomplete="off" spellcheck=${false} ...${common} value=${value} onInput=${(e) => set(f.name, e.target.value)} />`;
  }
  return html`<div class=${f.type === 'checkbox' ? 'field check' : 'field'}>
    <label for=${id}>${f.label}</label>${input}
    ${note && html`<small id=${described} class=${problem ? 'problem' : 'muted'}>${note}</small>`}
  </div>`;
}

// A secret the API returns once (a new key): shown here and nowhere else, with a copy
// button; gone from the page when dismissed.
export function OneTimeSecret({ title, value, onClose, extra }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    await navigator.clipboard.writeText(value);
    setCopied(true);
  };
  return html`<section class="secret" aria-labelledby="secret-title">
    <h3 id="secret-title">${title}</h3>
    <p>Copy it now: it is shown once and cannot be retrieved again.</p>
    <p><code class="secret-value" data-secret>${value}</code></p>
    <div class="actions">
      <button type="button" onClick=${copy}>${copied ? 'Copied' : 'Copy'}</button>
      ${extra}
      <button type="button" class="secondary" onClick=${onClose}>Done</button>
    </div>
  </section>`;
}

// A destructive action in two steps (no browser dialog).
export function Confirm({ label, question, action, done }) {
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState(null);
  if (!asking) return html`<button type="button" class="danger" onClick=${() => setAsking(true)}>${label}</button>`;
  const go = async () => {
    try {
      await action();
      setAsking(false);
      done?.();
    } catch (err) {
      setError(err);
    }
  };
  return html`<span class="confirm">${question || `${label}?`}
    <button type="button" class="danger" onClick=${go}>Yes, ${label.toLowerCase()}</button>
    <button type="button" class="secondary" onClick=${() => setAsking(false)}>No</button>
    <${ErrorNote} error=${error} /></span>`;
}

// A button that opens a panel (a form) in place.
export function Disclosure({ label, children }) {
  const [open, setOpen] = useState(false);
  return html`<span class="disclosure">
    <button type="button" class="secondary" aria-expanded=${open} onClick=${() => setOpen(!open)}>${label}</button>
    ${open && html`<div class="panel">${children(() => setOpen(false))}</div>`}
  </span>`;
}

export function Tabs({ tabs, current, base }) {
  return html`<nav class="tabs" aria-label="Sections">
    ${tabs.map(([key, label]) => html`<a href=${`${base}/${key}`} aria-current=${key === current ? 'page' : undefined}>${label}</a>`)}
  </nav>`;
}

export const parseList = (text) => (text || '').split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
