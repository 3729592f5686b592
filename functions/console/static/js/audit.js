// The audit log (OpenAI's /v1/organization/audit_logs): who did what, filtered as the API
// filters, paged with its cursors; each event's details as the API sent them.
import { html, useState } from './lib.js';
import { api } from './api.js';
import { Form, Paged, when, parseList } from './ui.js';

function actor(event) {
  const a = event.actor || {};
  if (a.type === 'session') {
    const s = a.session || {};
    return html`${s.user?.email || s.user?.id || 'session'}<br /><small class="muted">${[s.ip_address, s.user_agent].filter(Boolean).join(' · ')}</small>`;
  }
  if (a.type === 'api_key') {
    const k = a.api_key || {};
    const owner = k.user?.email || k.user?.id || k.service_account?.id;
    return html`key <code>${k.id}</code>${owner ? html`<br /><small class="muted">${owner}</small>` : null}`;
  }
  return a.type || '—';
}

const DETAIL_SKIP = new Set(['object', 'id', 'type', 'effective_at', 'project', 'actor']);

function details(event) {
  const rest = Object.fromEntries(Object.entries(event).filter(([k]) => !DETAIL_SKIP.has(k)));
  if (!Object.keys(rest).length) return '—';
  return html`<details><summary>Details</summary><pre>${JSON.stringify(rest, null, 2)}</pre></details>`;
}

const day = (text, end) => (text ? Math.floor(new Date(`${text}T${end ? '23:59:59' : '00:00:00'}`).getTime() / 1000) : undefined);

export function AuditLog() {
  const [filters, setFilters] = useState({});
  const [version, setVersion] = useState(0);
  const columns = [
    { label: 'When', render: (e) => when(e.effective_at) },
    { label: 'Event', render: (e) => html`<code>${e.type}</code>` },
    { label: 'Actor', render: actor },
    { label: 'Project', render: (e) => e.project?.name || e.project?.id || '—' },
    { label: 'Details', render: details },
  ];
  const isDate = (v) => (!v || /^\d{4}-\d{2}-\d{2}$/.test(v) ? null : 'Use a date such as 2026-01-31.');
  const apply = async (v) => {
    setFilters({
      'event_types[]': parseList(v.event_types),
      'actor_ids[]': parseList(v.actor_ids),
      'actor_emails[]': parseList(v.actor_emails),
      'project_ids[]': parseList(v.project_ids),
      'resource_ids[]': parseList(v.resource_ids),
      'effective_at[gte]': day(v.since, false),
      'effective_at[lte]': day(v.until, true),
    });
    setVersion((n) => n + 1);
  };
  return html`<section>
    <h2>Audit log</h2>
    <${Form} inline label="Filter" submit=${apply} fields=${[
      { name: 'event_types', label: 'Event types', hint: 'Such as api_key.created, separated by commas.' },
      { name: 'actor_ids', label: 'Actor IDs', hint: 'A user, key or service account.' },
      { name: 'actor_emails', label: 'Actor e-mails' },
      { name: 'project_ids', label: 'Project IDs' },
      { name: 'resource_ids', label: 'Resource IDs' },
      { name: 'since', label: 'From (YYYY-MM-DD)', validate: isDate },
      { name: 'until', label: 'To (YYYY-MM-DD)', validate: isDate },
    ]} />
    <${Paged} caption="Events, newest first" load=${(p) => api.get('/v1/organization/audit_logs', { ...filters, ...p })} columns=${columns} version=${version} empty="No events match." />
  </section>`;
}
