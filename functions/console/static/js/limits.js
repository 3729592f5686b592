// Governance: rate limits (per model, key, service account, user), the failure policy,
// spend limits, token budgets and spend alerts — the same forms wherever they apply.
import { html, useState } from './lib.js';
import { api, ApiError } from './api.js';
import { Form, Paged, ErrorNote, Confirm, Disclosure, useLoad, count, when, parseList } from './ui.js';

export const RATE_FIELDS = [
  ['max_requests_per_1_minute', 'Requests per minute'],
  ['max_tokens_per_1_minute', 'Tokens per minute'],
  ['max_requests_per_1_day', 'Requests per day'],
  ['max_tokens_per_1_day', 'Tokens per day'],
  ['max_concurrent_requests', 'Concurrent requests'],
];
const SHORT = {
  max_requests_per_1_minute: 'RPM',
  max_tokens_per_1_minute: 'TPM',
  max_requests_per_1_day: 'RPD',
  max_tokens_per_1_day: 'TPD',
  max_concurrent_requests: 'concurrent',
};

export function limitSummary(limits) {
  const set = RATE_FIELDS.filter(([k]) => limits?.[k]).map(([k]) => `${count(limits[k])} ${SHORT[k]}`);
  return set.length ? set.join(' · ') : 'no limit';
}

const numberField = (name, label, value, hint) => ({ name, label, type: 'number', min: 0, max: 2147483647, value: value ? String(value) : '', hint });

// An empty field is sent as null: the value is unset (a project follows the default again).
export function RateLimitForm({ path, current, done, cancel }) {
  return html`<${Form} inline label="Save limits" cancel=${cancel}
    fields=${RATE_FIELDS.map(([k, label]) => numberField(k, label, current?.[k]))}
    submit=${(values) => api.post(path, values)} done=${done} />`;
}

// Per-model limits: a project's (OpenAI's project.rate_limit) or the organization's defaults.
export function ModelRateLimits({ listPath, caption }) {
  const [version, setVersion] = useState(0);
  const columns = [
    { label: 'Model', render: (r) => html`<code>${r.model}</code>` },
    { label: 'Limits', render: (r) => limitSummary(r) },
    {
      label: 'Change',
      render: (r) => html`<${Disclosure} label=${`Edit ${r.model}`}>${(close) => html`<${RateLimitForm} path=${`${listPath}/${encodeURIComponent(r.id)}`} current=${r} cancel=${close} done=${() => { close(); setVersion((v) => v + 1); }} />`}<//>`,
    },
  ];
  return html`<${Paged} caption=${caption} load=${(p) => api.get(listPath, p)} columns=${columns} version=${version} empty="No models are served to this scope yet." />`;
}

export function FailurePolicy() {
  const [{ data, error }, reload] = useLoad(() => api.get('/v1/organization/rate_limit_policy'), []);
  return html`<section><h3>When the shared counters cannot be reached</h3>
    <${ErrorNote} error=${error} />
    ${data && html`<p>Now: <strong>${data.failure_mode}</strong> <span class="muted">(${data.source})</span></p>
      <${Form} inline label="Save policy" fields=${[{ name: 'failure_mode', label: 'Failure mode', type: 'select', value: data.failure_mode, options: [{ value: 'open', label: 'open — each instance enforces alone' }, { value: 'closed', label: 'closed — refuse with 503' }] }]}
        submit=${(v) => api.post('/v1/organization/rate_limit_policy', v)} done=${reload} />`}
  </section>`;
}

export function TokenBudgetForm({ path, current, done, cancel }) {
  return html`<${Form} inline label="Save budgets" cancel=${cancel}
    fields=${[numberField('tokens_per_day', 'Tokens per day (UTC)', current?.tokens_per_day), numberField('tokens_per_month', 'Tokens per month (UTC)', current?.tokens_per_month)]}
    submit=${(v) => api.post(path, { tokens_per_day: v.tokens_per_day ?? 0, tokens_per_month: v.tokens_per_month ?? 0 })} done=${done} />`;
}

export const budgetSummary = (b) =>
  [b?.tokens_per_day && `${count(b.tokens_per_day)}/day`, b?.tokens_per_month && `${count(b.tokens_per_month)}/month`].filter(Boolean).join(' · ') || 'no budget';

export function TokenBudgets({ path }) {
  const [{ data, error }, reload] = useLoad(() => api.get(path), [path]);
  return html`<section><h3>Token budgets</h3>
    <${ErrorNote} error=${error} />
    ${data && html`<p>${budgetSummary(data)} · <span class="muted">${data.enforcement?.status}</span></p>
      <${TokenBudgetForm} path=${path} current=${data} done=${reload} />`}
  </section>`;
}

const dollars = (cents) => `$${(cents / 100).toFixed(2)}`;
const centsField = (label, value) => ({
  name: 'dollars',
  label,
  required: true,
  value: value ? (value / 100).toFixed(2) : '',
  validate: (v) => (/^\d+(\.\d{1,2})?$/.test(v) && Number(v) > 0 ? null : `${label} must be an amount in dollars, such as 100 or 12.50.`),
});
const toCents = (v) => Math.round(Number(v) * 100);

// OpenAI's hard spend limit: GET answers 404 while none is set.
export function SpendLimit({ path }) {
  const [{ data, error }, reload] = useLoad(
    () => api.get(path).catch((err) => (err instanceof ApiError && err.status === 404 ? null : Promise.reject(err))),
    [path],
  );
  return html`<section><h3>Spend limit (this calendar month, UTC)</h3>
    <${ErrorNote} error=${error} />
    ${!error && html`<p>${data ? html`<strong>${dollars(data.threshold_amount)}</strong> · <span class="muted">${data.enforcement?.status}</span>` : 'None set.'}</p>
      <${Form} inline label="Set spend limit" fields=${[centsField('Limit (USD)', data?.threshold_amount)]}
        submit=${(v) => api.post(path, { threshold_amount: toCents(v.dollars), currency: 'USD', interval: 'month' })} done=${reload} />
      ${data && html`<${Confirm} label="Remove" question="Remove the spend limit?" action=${() => api.del(path)} done=${reload} />`}`}
  </section>`;
}

export function SpendAlerts({ path }) {
  const [version, setVersion] = useState(0);
  const [secret, setSecret] = useState(null);
  const bump = () => setVersion((v) => v + 1);
  const channel = (c) => (c.type === 'webhook' ? `webhook ${c.url}` : `e-mail ${(c.recipients || []).join(', ')}`);
  const columns = [
    { label: 'Threshold', render: (a) => dollars(a.threshold_amount) },
    { label: 'Channel', render: (a) => channel(a.notification_channel) },
    { label: 'Last triggered', render: (a) => when(a.last_triggered_at) },
    { label: 'Remove', render: (a) => html`<${Confirm} label="Delete" action=${() => api.del(`${path}/${a.id}`)} done=${bump} />` },
  ];
  const fields = [
    centsField('Threshold (USD)'),
    { name: 'type', label: 'Notify by', type: 'select', options: [{ value: 'email', label: 'e-mail (recorded; Jan sends no mail)' }, { value: 'webhook', label: 'webhook (signed POST)' }] },
    {
      name: 'target',
      label: 'E-mail recipients or webhook URL',
      required: true,
      validate: (v, all) => (all.type === 'webhook' ? (/^https?:\/\/\S+$/.test(v) ? null : 'A webhook needs an http(s) URL.') : parseList(v).every((e) => /^[^\s@]+@[^\s@]+$/.test(e)) ? null : 'List e-mail addresses, separated by commas.'),
    },
  ];
  const create = (v) =>
    api.post(path, {
      threshold_amount: toCents(v.dollars),
      currency: 'USD',
      interval: 'month',
      notification_channel: v.type === 'webhook' ? { type: 'webhook', url: v.target } : { type: 'email', recipients: parseList(v.target) },
    });
  return html`<section><h3>Spend alerts</h3>
    <${Paged} load=${(p) => api.get(path, p)} columns=${columns} version=${version} empty="No spend alerts." />
    ${secret && html`<p class="secret">Webhook signing secret (shown once): <code data-secret>${secret}</code> <button type="button" class="secondary" onClick=${() => setSecret(null)}>Done</button></p>`}
    <${Form} label="Add alert" fields=${fields} submit=${create} done=${(a) => { setSecret(a.notification_channel?.secret || null); bump(); }} />
  </section>`;
}
