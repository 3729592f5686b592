// The project's server-side tools (the MCP server's settings): which tool families are on,
// and the daily call quota.
import { html } from './lib.js';
import { api } from './api.js';
import { Form, ErrorNote, useLoad, count } from './ui.js';

const models = { models: true };

export function ToolSettings() {
  const [{ data, error }, reload] = useLoad(() => api.get('/v1/mcp/settings', undefined, models), []);
  return html`<section>
    <h2>Tools</h2>
    <p class="muted">Web search and page fetching, for the Responses API and MCP clients of this project.</p>
    <${ErrorNote} error=${error} />
    ${data && html`<p>Project <code>${data.project_id}</code>: ${count(data.calls_today)} calls today of ${data.effective_daily_call_quota ? count(data.effective_daily_call_quota) : 'unlimited'}.
        Tools: ${data.tools.map((t) => html`<code class="tag">${t}</code> `)}</p>
      <${Form} inline label="Save tool settings" fields=${[
        { name: 'web_search', label: 'Web search', type: 'checkbox', value: data.enabled_tools.includes('web_search') },
        { name: 'fetch', label: 'Fetch pages', type: 'checkbox', value: data.enabled_tools.includes('fetch') },
        { name: 'daily_call_quota', label: 'Daily call quota (empty: the organization’s)', type: 'number', min: 0, value: data.daily_call_quota ?? '' },
      ]} submit=${(v) => api.post('/v1/mcp/settings', {
        enabled_tools: ['web_search', 'fetch'].filter((t) => v[t]),
        daily_call_quota: v.daily_call_quota,
      }, models)} done=${reload} />`}
  </section>`;
}
