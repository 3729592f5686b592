// Projects: the list (create, rename, archive) and one project's keys, service accounts,
// members, rate limits, model permissions, providers and budgets.
import { html, useState } from './lib.js';
import { api, updateSession, getSession } from './api.js';
import { Form, Paged, ErrorNote, Confirm, OneTimeSecret, Disclosure, Tabs, useLoad, when, parseList } from './ui.js';
import { ModelRateLimits, RateLimitForm, TokenBudgetForm, TokenBudgets, SpendLimit, SpendAlerts, limitSummary, budgetSummary } from './limits.js';
import { Providers, ModelPrices } from './org.js';

export function Projects() {
  const [version, setVersion] = useState(0);
  const [archived, setArchived] = useState(false);
  const bump = () => setVersion((v) => v + 1);
  const columns = [
    { label: 'Name', render: (p) => html`<a href=${`#/projects/${p.id}`}>${p.name}</a>` },
    { label: 'ID', render: (p) => html`<code>${p.id}</code>` },
    { label: 'Status', key: 'status' },
    { label: 'Created', render: (p) => when(p.created_at) },
    {
      label: 'Change',
      render: (p) =>
        p.status === 'archived'
          ? '—'
          : html`<${Disclosure} label=${`Rename ${p.name}`}>${(close) => html`<${Form} inline label="Rename" cancel=${close}
                fields=${[{ name: 'name', label: 'New name', required: true, value: p.name }]}
                submit=${(v) => api.post(`/v1/organization/projects/${p.id}`, v)} done=${() => { close(); bump(); }} />`}<//>
              <${Confirm} label="Archive" question=${`Archive ${p.name}? Its keys stop working.`} action=${() => api.post(`/v1/organization/projects/${p.id}/archive`)} done=${bump} />`,
    },
  ];
  return html`<section>
    <h2>Projects</h2>
    <${Form} label="Create project" fields=${[{ name: 'name', label: 'Project name', required: true, validate: (v) => (v.length > 200 ? 'At most 200 characters.' : null) }]}
      submit=${(v) => api.post('/v1/organization/projects', v)} done=${bump} />
    <label class="check"><input type="checkbox" checked=${archived} onChange=${(e) => { setArchived(e.target.checked); bump(); }} /> Show archived projects</label>
    <${Paged} caption="Projects" load=${(p) => api.get('/v1/organization/projects', { ...p, include_archived: archived })} columns=${columns} version=${version} />
  </section>`;
}

const TABS = [
  ['keys', 'API keys'],
  ['service-accounts', 'Service accounts'],
  ['members', 'Members'],
  ['rate-limits', 'Rate limits'],
  ['models', 'Model permissions'],
  ['providers', 'Providers'],
  ['budgets', 'Budgets'],
];

export function Project({ id, tab = 'keys' }) {
  const base = `/v1/organization/projects/${id}`;
  const [{ data, error }] = useLoad(() => api.get(base), [id]);
  const screens = {
    keys: () => html`<${ProjectKeys} base=${base} />`,
    'service-accounts': () => html`<${ServiceAccounts} base=${base} />`,
    members: () => html`<${ProjectMembers} base=${base} />`,
    'rate-limits': () => html`<${ModelRateLimits} caption="Limits per model" listPath=${`${base}/rate_limits`} />`,
    models: () => html`<${ModelPermissions} base=${base} />`,
    providers: () => html`<${Providers} base=${`${base}/models/providers`} scope=${base} title="Project providers" />`,
    budgets: () => html`<${ModelPrices} base=${`${base}/model_prices`} title="Project prices" /><${SpendLimit} path=${`${base}/spend_limit`} /><${TokenBudgets} path=${`${base}/token_budgets`} /><${SpendAlerts} path=${`${base}/spend_alerts`} />`,
  };
  return html`<section>
    <p><a href="#/projects">← Projects</a></p>
    <h2>${data ? data.name : 'Project'} <code class="muted">${id}</code>${data?.status === 'archived' ? ' (archived)' : ''}</h2>
    <${ErrorNote} error=${error} />
    <${Tabs} tabs=${TABS} current=${tab} base=${`#/projects/${id}`} />
    ${(screens[tab] || screens.keys)()}
  </section>`;
}

// A new project key can go straight to the playground (kept with the session, not shown).
function UseInPlayground({ value }) {
  if (getSession()?.kind !== 'admin_key') return null;
  return html`<button type="button" class="secondary" onClick=${() => { updateSession({ modelKey: value }); window.location.hash = '#/playground'; }}>Use in playground</button>`;
}

function ProjectKeys({ base }) {
  const [version, setVersion] = useState(0);
  const [created, setCreated] = useState(null);
  const bump = () => setVersion((v) => v + 1);
  const columns = [
    { label: 'Name', key: 'name' },
    { label: 'Key', render: (k) => html`<code>${k.redacted_value}</code>` },
    { label: 'Models', render: (k) => (k.allowed_models ? k.allowed_models.join(', ') : 'all') },
    { label: 'Limits', render: (k) => `${limitSummary(k.rate_limits)}; ${budgetSummary(k.token_budgets)}` },
    { label: 'Last used', render: (k) => when(k.last_used_at) },
    { label: 'Expires', render: (k) => when(k.expires_at) },
    {
      label: 'Change',
      render: (k) => html`<${Disclosure} label=${`Limits of ${k.name}`}>${(close) => html`
          <${RateLimitForm} path=${`${base}/api_keys/${k.id}/rate_limits`} current=${k.rate_limits} cancel=${close} done=${() => { close(); bump(); }} />
          <${TokenBudgetForm} path=${`${base}/api_keys/${k.id}/token_budgets`} current=${k.token_budgets} done=${() => { close(); bump(); }} />`}<//>
        <${Confirm} label="Delete" question=${`Delete ${k.name}? It stops working at once.`} action=${() => api.del(`${base}/api_keys/${k.id}`)} done=${bump} />`,
    },
  ];
  const fields = [
    { name: 'name', label: 'Key name', required: true },
    { name: 'allowed_models', label: 'Only these models (optional)', hint: 'Model IDs separated by commas; empty: every model the project may use.' },
    { name: 'days', label: 'Expires after (days, optional)', type: 'number', min: 1, max: 3650 },
  ];
  const create = (v) => {
    const body = { name: v.name };
    const models = parseList(v.allowed_models);
    if (models.length) body.allowed_models = models;
    if (v.days) body.expires_at = Math.floor(Date.now() / 1000) + v.days * 86400;
    return api.post(`${base}/api_keys`, body);
  };
  return html`<div>
    ${created && html`<${OneTimeSecret} title=${`API key “${created.name}”`} value=${created.value} onClose=${() => setCreated(null)} extra=${html`<${UseInPlayground} value=${created.value} />`} />`}
    <${Form} label="Create API key" fields=${fields} submit=${create} done=${(k) => { setCreated(k); bump(); }} />
    <${Paged} caption="API keys" load=${(p) => api.get(`${base}/api_keys`, p)} columns=${columns} version=${version} />
  </div>`;
}

function ServiceAccounts({ base }) {
  const [version, setVersion] = useState(0);
  const [created, setCreated] = useState(null);
  const bump = () => setVersion((v) => v + 1);
  const columns = [
    { label: 'Name', key: 'name' },
    { label: 'Role', key: 'role' },
    { label: 'Limits', render: (s) => limitSummary(s.rate_limits) },
    { label: 'Created', render: (s) => when(s.created_at) },
    {
      label: 'Change',
      render: (s) => html`<${Disclosure} label=${`Limits of ${s.name}`}>${(close) => html`<${RateLimitForm} path=${`${base}/service_accounts/${s.id}/rate_limits`} current=${s.rate_limits} cancel=${close} done=${() => { close(); bump(); }} />`}<//>
        <${Confirm} label="Delete" action=${() => api.del(`${base}/service_accounts/${s.id}`)} done=${bump} />`,
    },
  ];
  return html`<div>
    ${created && html`<${OneTimeSecret} title=${`Key of service account “${created.name}”`} value=${created.api_key.value} onClose=${() => setCreated(null)} extra=${html`<${UseInPlayground} value=${created.api_key.value} />`} />`}
    <${Form} label="Create service account" fields=${[{ name: 'name', label: 'Service account name', required: true }]}
      submit=${(v) => api.post(`${base}/service_accounts`, v)} done=${(s) => { setCreated(s); bump(); }} />
    <${Paged} caption="Service accounts" load=${(p) => api.get(`${base}/service_accounts`, p)} columns=${columns} version=${version} />
  </div>`;
}

function ProjectMembers({ base }) {
  const [version, setVersion] = useState(0);
  const bump = () => setVersion((v) => v + 1);
  const [{ data: people }] = useLoad(() => api.get('/v1/organization/users', { limit: 100 }), []);
  const columns = [
    { label: 'Name', render: (u) => u.name || '—' },
    { label: 'E-mail', render: (u) => u.email || '—' },
    { label: 'Role', key: 'role' },
    {
      label: 'Change',
      render: (u) => html`<${Disclosure} label=${`Role of ${u.email || u.id}`}>${(close) => html`<${Form} inline label="Save role" cancel=${close}
          fields=${[{ name: 'role', label: 'Project role', type: 'select', options: ['member', 'owner'], value: u.role }]}
          submit=${(v) => api.post(`${base}/users/${u.id}`, v)} done=${() => { close(); bump(); }} />`}<//>
        <${Confirm} label="Remove" action=${() => api.del(`${base}/users/${u.id}`)} done=${bump} />`,
    },
  ];
  const options = (people?.data || []).map((u) => ({ value: u.id, label: u.email || u.name || u.id }));
  return html`<div>
    <${Paged} caption="Project members" load=${(p) => api.get(`${base}/users`, p)} columns=${columns} version=${version} />
    ${people && html`<${Form} label="Add member" fields=${[
      { name: 'user_id', label: 'User', type: 'select', options: [{ value: '', label: 'Choose a member of the organization' }, ...options], required: true },
      { name: 'role', label: 'Project role', type: 'select', options: ['member', 'owner'] },
    ]} submit=${(v) => api.post(`${base}/users`, v)} done=${bump} />`}
  </div>`;
}

function ModelPermissions({ base }) {
  const path = `${base}/model_permissions`;
  const [{ data, error }, reload] = useLoad(() => api.get(path), [path]);
  return html`<div>
    <${ErrorNote} error=${error} />
    ${data && html`<p>${data.mode === 'allow_list' ? 'Only these models: ' : data.model_ids.length ? 'Every model but: ' : 'Every model its providers serve.'}
        ${data.model_ids.map((m) => html`<code class="tag">${m}</code> `)}</p>
      <${Form} inline label="Save permissions" fields=${[
        { name: 'mode', label: 'Mode', type: 'select', value: data.mode, options: [{ value: 'deny_list', label: 'Deny list (every model but these)' }, { value: 'allow_list', label: 'Allow list (only these)' }] },
        { name: 'model_ids', label: 'Model IDs (one per line)', type: 'textarea', value: data.model_ids.join('\n') },
      ]} submit=${(v) => api.post(path, { mode: v.mode, model_ids: parseList(v.model_ids) })} done=${reload} />
      <${Confirm} label="Reset" question="Remove the list (every model allowed)?" action=${() => api.del(path)} done=${reload} />`}
  </div>`;
}
