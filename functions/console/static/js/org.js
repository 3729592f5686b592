// Organization screens: overview (usage over time), members and invites, admin keys,
// model providers, limits and budgets.
import { html, useState } from './lib.js';
import { api } from './api.js';
import { BarChart } from './chart.js';
import { Form, Paged, ErrorNote, Confirm, OneTimeSecret, Disclosure, useLoad, when, count, parseList } from './ui.js';
import { ModelRateLimits, FailurePolicy, RateLimitForm, TokenBudgetForm, TokenBudgets, SpendLimit, SpendAlerts, limitSummary, budgetSummary } from './limits.js';

const RANGES = {
  '24h': { seconds: 86400, width: '1h', limit: 24 },
  '7d': { seconds: 7 * 86400, width: '1d', limit: 7 },
  '30d': { seconds: 30 * 86400, width: '1d', limit: 31 },
};
const GROUPS = { project_id: 'Project', model: 'Model', api_key_id: 'API key' };

// Every bucket of the range: the usage and costs APIs page through buckets with `page`.
async function buckets(path, params) {
  const out = [];
  for (let page; ; ) {
    const res = await api.get(path, { ...params, page });
    out.push(...res.data);
    if (!res.has_more || !res.next_page) return out;
    page = res.next_page;
  }
}

function label(seconds, width) {
  const d = new Date(seconds * 1000);
  return width === '1h' ? `${String(d.getHours()).padStart(2, '0')}:00` : `${d.getMonth() + 1}/${d.getDate()}`;
}

// Series named by what a person reads: a project's name rather than its ID.
async function overview(range, group) {
  const r = RANGES[range];
  const now = Math.floor(Date.now() / 1000);
  const start = now - r.seconds;
  const days = Math.ceil(r.seconds / 86400) + 1;
  const [usage, costs, projects] = await Promise.all([
    buckets('/v1/organization/usage/completions', { start_time: start, end_time: now + 1, bucket_width: r.width, limit: r.limit, group_by: group }),
    buckets('/v1/organization/costs', { start_time: start, end_time: now + 1, bucket_width: '1d', limit: days, group_by: group === 'model' ? 'line_item' : group }),
    group === 'project_id' ? api.get('/v1/organization/projects', { include_archived: true, limit: 100 }) : null,
  ]);
  const names = Object.fromEntries((projects?.data || []).map((p) => [p.id, p.name]));
  return { usage, costs, names };
}

function chartData(data, width, value) {
  const series = new Set();
  const rows = data.map((b) => {
    const values = {};
    for (const r of b.results) {
      const [name, v] = value(r);
      if (v) series.add(name);
      values[name] = (values[name] || 0) + v;
    }
    return { label: label(b.start_time, width), values };
  });
  return { buckets: rows, series: [...series] };
}

const usd = (v) => `$${v.toFixed(v && v < 1 ? 4 : 2)}`;

export function Overview() {
  const [range, setRange] = useState('7d');
  const [group, setGroup] = useState('project_id');
  const [{ data, error, loading }, reload] = useLoad(() => overview(range, group), [range, group]);
  let charts = null;
  if (data) {
    const name = (r) => (group === 'model' ? r.model || (r.line_item || '').split(', ')[0] : data.names[r[group]] || r[group]) || '(none)';
    const tokens = chartData(data.usage, RANGES[range].width, (r) => [name(r), r.input_tokens + r.output_tokens]);
    const spend = chartData(data.costs, '1d', (r) => [name(r), Number(r.amount.value) || 0]);
    const requests = data.usage.reduce((n, b) => n + b.results.reduce((m, r) => m + r.num_model_requests, 0), 0);
    const total = data.costs.reduce((n, b) => n + b.results.reduce((m, r) => m + (Number(r.amount.value) || 0), 0), 0);
    charts = html`<p class="stats"><span><strong data-testid="usage-requests">${count(requests)}</strong> requests</span>
        <span><strong data-testid="cost-total">${usd(total)}</strong> spent</span></p>
      <div class="charts">
        <${BarChart} title=${`Tokens by ${GROUPS[group].toLowerCase()}`} unit="tokens" ...${tokens} />
        <${BarChart} title=${`Cost by ${GROUPS[group].toLowerCase()} (USD, per day)`} format=${usd} ...${spend} />
      </div>`;
  }
  return html`<section>
    <h2>Overview</h2>
    <div class="toolbar">
      <label>Period <select value=${range} onChange=${(e) => setRange(e.target.value)}>
        <option value="24h">Last 24 hours</option><option value="7d">Last 7 days</option><option value="30d">Last 30 days</option>
      </select></label>
      <label>Group by <select value=${group} onChange=${(e) => setGroup(e.target.value)}>
        ${Object.entries(GROUPS).map(([k, v]) => html`<option value=${k}>${v}</option>`)}
      </select></label>
      <button type="button" class="secondary" onClick=${reload}>Refresh</button>
    </div>
    <${ErrorNote} error=${error} />
    ${loading && !data ? html`<p class="muted">Loading…</p>` : charts}
  </section>`;
}

const ROLES = ['owner', 'reader'];

export function Members() {
  const [version, setVersion] = useState(0);
  const [code, setCode] = useState(null);
  const [roleError, setRoleError] = useState(null);
  const bump = () => setVersion((v) => v + 1);
  const users = [
    { label: 'Name', render: (u) => u.name || '—' },
    { label: 'E-mail', render: (u) => u.email || '—' },
    {
      label: 'Role',
      render: (u) => html`<label class="sr-only" for=${`role-${u.id}`}>Role of ${u.email || u.id}</label>
        <select id=${`role-${u.id}`} value=${u.role} onChange=${(e) => { setRoleError(null); api.post(`/v1/organization/users/${u.id}`, { role: e.target.value }).then(bump, (err) => { setRoleError(err); bump(); }); }}>
          ${ROLES.map((r) => html`<option value=${r}>${r}</option>`)}
        </select>`,
    },
    { label: 'Limits', render: (u) => html`${limitSummary(u.rate_limits)}; ${budgetSummary(u.token_budgets)}
      <${Disclosure} label="Limits">${(close) => html`<${RateLimitForm} path=${`/v1/organization/users/${u.id}/rate_limits`} current=${u.rate_limits} cancel=${close} done=${() => { close(); bump(); }} />
        <${TokenBudgetForm} path=${`/v1/organization/users/${u.id}/token_budgets`} current=${u.token_budgets} done=${() => { close(); bump(); }} />`}<//>` },
    { label: 'Added', render: (u) => when(u.added_at) },
    { label: 'Remove', render: (u) => html`<${Confirm} label="Remove" question=${`Remove ${u.email || u.id}?`} action=${() => api.del(`/v1/organization/users/${u.id}`)} done=${bump} />` },
  ];
  const invites = [
    { label: 'E-mail', key: 'email' },
    { label: 'Role', key: 'role' },
    { label: 'Status', key: 'status' },
    { label: 'Expires', render: (i) => when(i.expires_at) },
    { label: 'Delete', render: (i) => html`<${Confirm} label="Delete" action=${() => api.del(`/v1/organization/invites/${i.id}`)} done=${bump} />` },
  ];
  return html`<section>
    <h2>Members</h2>
    <${ErrorNote} error=${roleError} />
    <${Paged} caption="Users of the organization" load=${(p) => api.get('/v1/organization/users', p)} columns=${users} version=${version} />
    <h3>Invites</h3>
    ${code && html`<${OneTimeSecret} title="Invite code" value=${code} onClose=${() => setCode(null)} />`}
    <${Form} label="Invite" fields=${[
      { name: 'email', label: 'E-mail', type: 'email', required: true },
      { name: 'role', label: 'Role', type: 'select', options: ROLES.slice().reverse() },
    ]} submit=${(v) => api.post('/v1/organization/invites', v)} done=${(inv) => { setCode(inv.code || null); bump(); }} />
    <${Paged} caption="Pending and past invites" load=${(p) => api.get('/v1/organization/invites', p)} columns=${invites} version=${version} empty="No invites." />
  </section>`;
}

export function AdminKeys() {
  const [version, setVersion] = useState(0);
  const [created, setCreated] = useState(null);
  const columns = [
    { label: 'Name', key: 'name' },
    { label: 'Key', render: (k) => html`<code>${k.redacted_value}</code>` },
    { label: 'Owner', render: (k) => k.owner?.email || k.owner?.name || 'operator' },
    { label: 'Last used', render: (k) => when(k.last_used_at) },
    { label: 'Delete', render: (k) => html`<${Confirm} label="Delete" action=${() => api.del(`/v1/organization/admin_api_keys/${k.id}`)} done=${() => setVersion((v) => v + 1)} />` },
  ];
  return html`<section>
    <h2>Admin keys</h2>
    ${created && html`<${OneTimeSecret} title=${`Admin key “${created.name}”`} value=${created.value} onClose=${() => setCreated(null)} />`}
    <${Form} label="Create admin key" fields=${[{ name: 'name', label: 'Name', required: true }]}
      submit=${(v) => api.post('/v1/organization/admin_api_keys', v)} done=${(k) => { setCreated(k); setVersion((n) => n + 1); }} />
    <${Paged} caption="Admin keys" load=${(p) => api.get('/v1/organization/admin_api_keys', p)} columns=${columns} version=${version} />
  </section>`;
}

const KINDS = ['vllm', 'kserve', 'llamacpp', 'ollama', 'sglang', 'openai'];

// Providers of the organization or of one project (base is the list's path).
export function Providers({ base = '/v1/organization/models/providers', title = 'Model providers', scope = '/v1/organization' }) {
  const [version, setVersion] = useState(0);
  const bump = () => setVersion((v) => v + 1);
  const health = (p) => p.endpoints.map((e) => html`<div><code>${e.base_url}</code> — ${e.models.length ? html`<span class="ok">${e.models.length} model${e.models.length === 1 ? '' : 's'}</span>` : html`<span class="warn">nothing discovered</span>`}</div>`);
  const columns = [
    { label: 'Name', render: (p) => html`<strong>${p.name}</strong> <span class="muted">${p.kind}${p.active ? '' : ', inactive'}</span>` },
    { label: 'Endpoints', render: health },
    { label: 'Models', render: (p) => (p.models.length ? p.models.map((m) => html`<code class="tag">${m}</code> `) : '—') },
    { label: 'Key', render: (p) => (p.has_api_key ? 'set' : 'none') },
    {
      label: 'Change',
      render: (p) => html`<${Disclosure} label=${`Edit ${p.name}`}>${(close) => html`<${Form} inline label="Save" cancel=${close} fields=${providerFields(p)}
          submit=${(v) => api.post(`${base}/${p.id}`, providerBody(v))} done=${() => { close(); bump(); }} />`}<//>
        <${Confirm} label="Delete" action=${() => api.del(`${base}/${p.id}`)} done=${bump} />`,
    },
  ];
  return html`<section>
    <h2>${title}</h2>
    <p class="muted">OpenAI-compatible servers this scope routes models to. A model appears once an endpoint lists it.</p>
    <${Paged} caption=${title} load=${(p) => api.get(base, p)} columns=${columns} version=${version} empty="No providers: models come from the built-in one." />
    <h3>Add a provider</h3>
    <${Form} label="Add provider" fields=${providerFields()} submit=${(v) => api.post(base, providerBody(v))} done=${bump} />
    <${ModelRouting} base=${scope} />
  </section>`;
}

// Aliases (a name callers use for a model) and fallbacks (models tried in order when one
// fails) of the organization, or of one project (base: '/v1/organization/projects/…').
export function ModelRouting({ base = '/v1/organization' }) {
  const [version, setVersion] = useState(0);
  const bump = () => setVersion((v) => v + 1);
  const name = (field, label) => ({ name: field, label, required: true, validate: (v) => (v.length > 256 ? 'At most 256 characters.' : null) });
  const remove = (path, what) => ({ label: 'Delete', render: (r) => html`<${Confirm} label="Delete" question=${`Delete ${what} ${r.id}?`} action=${() => api.del(`${base}/${path}/${encodeURIComponent(r.id)}`)} done=${bump} />` });
  return html`<section>
    <h3>Model aliases</h3>
    <${Paged} load=${(p) => api.get(`${base}/model_aliases`, p)} version=${version} empty="No aliases."
      columns=${[{ label: 'Alias', render: (a) => html`<code>${a.alias}</code>` }, { label: 'Model', render: (a) => html`<code>${a.model}</code>` }, remove('model_aliases', 'the alias')]} />
    <${Form} label="Set alias" fields=${[name('alias', 'Alias'), name('model', 'Model it names')]} submit=${(v) => api.post(`${base}/model_aliases`, v)} done=${bump} />
    <h3>Model fallbacks</h3>
    <${Paged} load=${(p) => api.get(`${base}/model_fallbacks`, p)} version=${version} empty="No fallbacks."
      columns=${[{ label: 'Model', render: (f) => html`<code>${f.model}</code>` }, { label: 'Then, in order', render: (f) => f.fallbacks.map((m) => html`<code class="tag">${m}</code> `) }, remove('model_fallbacks', 'the fallbacks of')]} />
    <${Form} label="Set fallbacks" fields=${[name('model', 'Model that may fail'), { name: 'fallbacks', label: 'Fallback models, in order', required: true, hint: 'Separated by commas.' }]}
      submit=${(v) => api.post(`${base}/model_fallbacks`, { model: v.model, fallbacks: parseList(v.fallbacks) })} done=${bump} />
  </section>`;
}

function providerFields(p) {
  return [
    { name: 'name', label: 'Name', required: !p, value: p?.name },
    { name: 'kind', label: 'Kind', type: 'select', options: KINDS, value: p?.kind || 'vllm' },
    { name: 'base_urls', label: 'Base URLs (one per line)', type: 'textarea', required: !p, value: p ? '' : undefined, hint: p ? 'Leave empty to keep the current ones.' : undefined,
      validate: (v) => (parseList(v).every((u) => /^https?:\/\/\S+$/.test(u)) ? null : 'Each base URL must start with http:// or https://.') },
    { name: 'api_key', label: 'API key', type: 'password', hint: p ? 'Leave empty to keep the stored key.' : 'Stored encrypted; never shown again.' },
    { name: 'models', label: 'Models served even if not listed (optional)', type: 'textarea', value: p?.static_models?.join('\n') },
    { name: 'active', label: 'Active', type: 'checkbox', value: p ? p.active : true },
  ];
}

function providerBody(v) {
  const body = { kind: v.kind, active: v.active, models: parseList(v.models) };
  if (v.name) body.name = v.name;
  const urls = parseList(v.base_urls);
  if (urls.length) body.base_urls = urls;
  if (v.api_key) body.api_key = v.api_key;
  return body;
}

export function OrgLimits() {
  return html`<section>
    <h2>Limits</h2>
    <p class="muted">Defaults per model: every project on a model has these unless it sets its own.</p>
    <${ModelRateLimits} caption="Organization defaults per model" listPath="/v1/organization/rate_limits" />
    <${FailurePolicy} />
  </section>`;
}

// Prices per model (USD per million tokens), the organization's or a project's overrides:
// what costs and spend limits count.
export function ModelPrices({ base = '/v1/organization/model_prices', title = 'Model prices' }) {
  const [version, setVersion] = useState(0);
  const bump = () => setVersion((v) => v + 1);
  const per = (v) => (v === null || v === undefined ? '—' : `$${v}`);
  const price = (name, label, required) => ({
    name,
    label,
    required,
    validate: (v) => (v === '' || /^\d+(\.\d{1,6})?$/.test(v) ? null : `${label} must be a number of dollars (6 decimals at most).`),
  });
  const columns = [
    { label: 'Model', render: (p) => html`<code>${p.model}</code>` },
    { label: 'Input', render: (p) => per(p.input) },
    { label: 'Cached input', render: (p) => (p.cached_input === null ? 'as input' : per(p.cached_input)) },
    { label: 'Output', render: (p) => per(p.output) },
    { label: 'Updated', render: (p) => when(p.updated_at) },
    { label: 'Delete', render: (p) => html`<${Confirm} label="Delete" question=${`Delete the price of ${p.model}?`} action=${() => api.del(`${base}/${encodeURIComponent(p.model)}`)} done=${bump} />` },
  ];
  return html`<section>
    <h3>${title} (USD per million tokens)</h3>
    <${Paged} load=${(p) => api.get(base, p)} columns=${columns} version=${version} empty="No prices: calls cost nothing." />
    <${Form} label="Set price" fields=${[
      { name: 'model', label: 'Model', required: true },
      price('input', 'Input', true),
      price('cached_input', 'Cached input (optional)', false),
      price('output', 'Output', true),
    ]} submit=${(v) => api.post(base, { model: v.model, input: Number(v.input), output: Number(v.output), ...(v.cached_input ? { cached_input: Number(v.cached_input) } : {}) })} done=${bump} />
  </section>`;
}

export function OrgBudgets() {
  return html`<section>
    <h2>Budgets</h2>
    <${ModelPrices} />
    <${SpendLimit} path="/v1/organization/spend_limit" />
    <${TokenBudgets} path="/v1/organization/token_budgets" />
    <${SpendAlerts} path="/v1/organization/spend_alerts" />
  </section>`;
}

export { ErrorNote };
