// The playground: chat completions streamed token by token, or the Responses API with the
// server-side tools (each tool call shown as it runs), kept as conversations that can be
// listed and reopened. Model output is rendered by markdown.js (text nodes only).
import { html, useState, useEffect, useRef } from './lib.js';
import { api, call, events, getSession, updateSession, abilities, ApiError } from './api.js';
import { Markdown } from './markdown.js';
import { ErrorNote, Form, Paged, useLoad, when } from './ui.js';

const models = { models: true }; // calls made with the playground's project credential

export function Playground({ conversationId }) {
  const session = getSession();
  if (session.kind === 'admin_key' && !session.modelKey) return html`<${NeedsProjectKey} />`;
  // A user picks the project to act in (OpenAI-Project); a new project starts a new chat.
  return html`<${Chat} key=${`${session.project || ''}/${conversationId || 'new'}`} conversationId=${conversationId} />`;
}

function NeedsProjectKey() {
  return html`<section>
    <h2>Playground</h2>
    <p>Admin keys work only on the Administration API. Give the playground a project key (create one under a project's API keys and choose “Use in playground”, or paste one):</p>
    <${Form} label="Use this key" fields=${[{ name: 'key', label: 'Project API key', type: 'password', required: true, validate: (v) => (v.startsWith('sk-admin-') ? 'That is an admin key; a project key starts with sk-proj- or sk-svcacct-.' : null) }]}
      submit=${async (v) => {
        updateSession({ modelKey: v.key });
        try {
          await api.get('/v1/models', undefined, models);
        } catch (err) {
          updateSession({ modelKey: undefined });
          throw err;
        }
      }} done=${() => window.dispatchEvent(new HashChangeEvent('hashchange'))} />
  </section>`;
}

function textOf(content) {
  if (typeof content === 'string') return content;
  return (content || []).map((part) => part.text || part.refusal || '').join('');
}

// A stored conversation's items as the transcript shows them: tool calls go with the
// assistant message that follows them.
function transcript(items) {
  const out = [];
  let tools = [];
  for (const item of items) {
    if (item.type === 'message') {
      const message = { role: item.role, content: textOf(item.content) };
      if (item.role === 'assistant') {
        message.tools = tools;
        tools = [];
      }
      out.push(message);
    } else if (item.type.endsWith('_call')) {
      tools.push(item);
    }
  }
  if (tools.length) out.push({ role: 'assistant', content: '', tools });
  return out;
}

function Chat({ conversationId }) {
  const [{ data: modelList, error: modelError }] = useLoad(() => api.get('/v1/models', undefined, models), []);
  const [mode, setMode] = useState(conversationId ? 'responses' : 'chat');
  const [model, setModel] = useState('');
  const [system, setSystem] = useState('');
  const [temperature, setTemperature] = useState('');
  const [maxTokens, setMaxTokens] = useState('');
  const [tools, setTools] = useState({ web_search: false, fetch: false });
  const [messages, setMessages] = useState([]);
  const [conversation, setConversation] = useState(conversationId || null);
  const [draft, setDraft] = useState('');
  const [running, setRunning] = useState(null);
  const [error, setError] = useState(null);
  const [listVersion, setListVersion] = useState(0);
  const end = useRef(null);

  useEffect(() => {
    if (!model && modelList?.data?.length) setModel(modelList.data[0].id);
  }, [modelList]);
  useEffect(() => {
    if (!conversationId) return;
    api.get(`/v1/conversations/${conversationId}/items`, { order: 'asc', limit: 100 }, models).then((res) => setMessages(transcript(res.data)), setError);
  }, [conversationId]);
  useEffect(() => end.current?.scrollIntoView?.({ block: 'end' }), [messages]);

  const patchLast = (f) => setMessages((all) => [...all.slice(0, -1), f(all[all.length - 1])]);

  const send = async (event) => {
    event.preventDefault();
    const text = draft.trim();
    if (!text || !model || running) return;
    const problem = checkNumbers(temperature, maxTokens);
    if (problem) {
      setError({ message: problem });
      return;
    }
    setError(null);
    setDraft('');
    const history = [...messages, { role: 'user', content: text }];
    setMessages([...history, { role: 'assistant', content: '', tools: [], streaming: true }]);
    const controller = new AbortController();
    setRunning(controller);
    const started = performance.now();
    const stats = { ttft: null, usage: null };
    const first = () => {
      if (stats.ttft === null) stats.ttft = performance.now() - started;
    };
    try {
      if (mode === 'chat') await streamChat(history, controller.signal, first, stats);
      else await streamResponse(text, controller.signal, first, stats);
      patchLast((m) => ({ ...m, streaming: false, stats: { ...stats, ms: performance.now() - started } }));
    } catch (err) {
      const stopped = err.name === 'AbortError';
      patchLast((m) => ({ ...m, streaming: false, stopped, error: stopped ? null : err, stats: { ...stats, ms: performance.now() - started } }));
    } finally {
      setRunning(null);
    }
  };

  const streamChat = async (history, signal, first, stats) => {
    const body = {
      model,
      messages: [...(system.trim() ? [{ role: 'system', content: system.trim() }] : []), ...history.map(({ role, content }) => ({ role, content }))],
      stream: true,
      stream_options: { include_usage: true },
    };
    if (temperature !== '') body.temperature = Number(temperature);
    if (maxTokens !== '') body.max_tokens = Number(maxTokens);
    const res = await call('POST', '/v1/chat/completions', { body, signal, raw: true, ...models });
    for await (const event of events(res)) {
      if (event.error) throw new ApiError(502, event);
      const delta = event.choices?.[0]?.delta?.content;
      if (delta) {
        first();
        patchLast((m) => ({ ...m, content: m.content + delta }));
      }
      if (event.usage) stats.usage = { input: event.usage.prompt_tokens, output: event.usage.completion_tokens };
    }
  };

  const streamResponse = async (text, signal, first, stats) => {
    let id = conversation;
    if (!id) {
      id = (await api.post('/v1/conversations', {}, models)).id;
      setConversation(id);
      window.history.replaceState(null, '', `#/playground/${id}`);
    }
    const body = { model, input: text, conversation: id, stream: true, store: true };
    if (system.trim()) body.instructions = system.trim();
    if (temperature !== '') body.temperature = Number(temperature);
    if (maxTokens !== '') body.max_output_tokens = Number(maxTokens);
    const chosen = Object.keys(tools).filter((t) => tools[t]);
    if (chosen.length) body.tools = chosen.map((type) => ({ type }));
    const res = await call('POST', '/v1/responses', { body, signal, raw: true, ...models });
    const setTool = (itemId, f) => patchLast((m) => ({ ...m, tools: m.tools.map((t) => (t.id === itemId ? f(t) : t)) }));
    for await (const event of events(res)) {
      const type = event.type || '';
      if (type === 'response.output_text.delta') {
        first();
        patchLast((m) => ({ ...m, content: m.content + event.delta }));
      } else if (type === 'response.output_item.added' && event.item.type !== 'message') {
        first();
        patchLast((m) => ({ ...m, tools: [...m.tools, event.item] }));
      } else if (type === 'response.output_item.done' && event.item.type !== 'message') {
        setTool(event.item.id, () => event.item);
      } else if (/^response\.(web_search_call|mcp_call)\.(\w+)$/.test(type) && event.item_id) {
        const status = type.split('.').pop();
        setTool(event.item_id, (t) => ({ ...t, status: status === 'searching' ? 'searching' : t.status }));
      } else if (type === 'response.completed' || type === 'response.incomplete') {
        const u = event.response.usage;
        if (u) stats.usage = { input: u.input_tokens, output: u.output_tokens };
      } else if (type === 'response.failed') {
        throw new ApiError(502, { error: event.response.error || { message: 'The response failed.' } });
      } else if (type === 'error') {
        throw new ApiError(502, { error: event.error || event });
      }
    }
    setListVersion((v) => v + 1);
  };

  const models_ = modelList?.data || [];
  const session = getSession();
  const [{ data: projects }] = useLoad(
    () => (session.kind === 'user' && abilities(session).admin ? api.get('/v1/organization/projects', { limit: 100 }) : Promise.resolve(null)),
    [],
  );
  const pickProject = (id) => {
    window.history.replaceState(null, '', '#/playground');
    updateSession({ project: id });
  };
  return html`<section class="playground">
    <h2>Playground</h2>
    <div class="play-grid">
      <aside aria-label="Conversations">
        <h3>Conversations</h3>
        <p><a href="#/playground" onClick=${() => { setMessages([]); setConversation(null); }}>New chat</a></p>
        <${Paged} limit=${10} version=${listVersion} load=${(p) => api.get('/v1/conversations', p, models)} empty="None yet: Responses mode keeps each chat."
          columns=${[{ label: 'Conversation', render: (c) => html`<a href=${`#/playground/${c.id}`}>${c.title || c.id}</a><br /><small class="muted">${when(c.created_at)}</small>` }]} />
      </aside>
      <div class="play-main">
        <${ErrorNote} error=${modelError} />
        <fieldset class="settings">
          <legend>Settings</legend>
          <label>Mode <select value=${mode} disabled=${Boolean(conversation)} onChange=${(e) => setMode(e.target.value)}>
            <option value="chat">Chat completions</option><option value="responses">Responses (tools, kept as a conversation)</option>
          </select></label>
          ${projects?.data?.length > 1 && html`<label>Project <select value=${session.project} onChange=${(e) => pickProject(e.target.value)}>
            ${projects.data.map((p) => html`<option value=${p.id}>${p.name}</option>`)}
          </select></label>`}
          <label>Model <select value=${model} onChange=${(e) => setModel(e.target.value)}>
            ${models_.map((m) => html`<option value=${m.id}>${m.jan_alias_of ? `${m.id} (${m.jan_alias_of})` : m.id}</option>`)}
          </select></label>
          <label>Temperature <input inputmode="decimal" placeholder="default" value=${temperature} onInput=${(e) => setTemperature(e.target.value)} /></label>
          <label>Max tokens <input inputmode="numeric" placeholder="default" value=${maxTokens} onInput=${(e) => setMaxTokens(e.target.value)} /></label>
          <label class="wide">System prompt <textarea rows="2" value=${system} onInput=${(e) => setSystem(e.target.value)}></textarea></label>
          ${mode === 'responses' && html`<div class="wide tools">Server-side tools:
            <label class="check"><input type="checkbox" checked=${tools.web_search} onChange=${(e) => setTools({ ...tools, web_search: e.target.checked })} /> Web search</label>
            <label class="check"><input type="checkbox" checked=${tools.fetch} onChange=${(e) => setTools({ ...tools, fetch: e.target.checked })} /> Fetch pages</label>
          </div>`}
        </fieldset>
        <ol class="transcript" aria-live="polite" aria-label="Transcript">
          ${messages.map((m, i) => html`<${Message} key=${i} message=${m} />`)}
          <li ref=${end} class="end" aria-hidden="true"></li>
        </ol>
        <${ErrorNote} error=${error} />
        <form class="composer" onSubmit=${send}>
          <label for="prompt" class="sr-only">Message</label>
          <textarea id="prompt" rows="3" placeholder="Message the model" value=${draft} onInput=${(e) => setDraft(e.target.value)}
            onKeyDown=${(e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) send(e); }}></textarea>
          <div class="actions">
            <button type="submit" disabled=${Boolean(running) || !model}>Send</button>
            ${running && html`<button type="button" class="danger" onClick=${() => running.abort()}>Stop</button>`}
          </div>
        </form>
      </div>
    </div>
  </section>`;
}

function checkNumbers(temperature, maxTokens) {
  if (temperature !== '' && !(Number(temperature) >= 0 && Number(temperature) <= 2)) return 'Temperature must be a number from 0 to 2.';
  if (maxTokens !== '' && !(Number.isInteger(Number(maxTokens)) && Number(maxTokens) > 0)) return 'Max tokens must be a positive whole number.';
  return null;
}

function Message({ message: m }) {
  return html`<li class=${`msg ${m.role}`}>
    <div class="who">${m.role === 'user' ? 'You' : 'Model'}</div>
    ${(m.tools || []).map((t) => html`<${ToolCall} key=${t.id} item=${t} />`)}
    ${m.role === 'user' ? html`<p class="plain">${m.content}</p>` : html`<${Markdown} text=${m.content} />`}
    ${m.streaming && html`<p class="muted">Streaming…</p>`}
    ${m.stopped && html`<p class="muted">Stopped.</p>`}
    <${ErrorNote} error=${m.error} />
    ${m.stats && html`<p class="stats" data-testid="stats">
      ${m.stats.ttft !== null && html`<span>First token after <strong>${Math.round(m.stats.ttft)} ms</strong></span>`}
      ${m.stats.usage && html`<span><strong>${m.stats.usage.input}</strong> input · <strong>${m.stats.usage.output}</strong> output tokens</span>`}
      <span>${(m.stats.ms / 1000).toFixed(1)} s</span>
    </p>`}
  </li>`;
}

function ToolCall({ item }) {
  const a = item.action || {};
  let what = item.type.replace(/_call$/, '').replace('_', ' ');
  if (item.type === 'web_search_call') what = a.type === 'open_page' ? `Fetch ${a.url || ''}` : `Web search “${a.query || ''}”`;
  if (item.type === 'mcp_call') what = `${item.name} ${item.arguments || ''}`;
  const output = item.output || item.error;
  return html`<details class="tool" data-testid="tool-call">
    <summary><span class="badge">${item.type}</span> ${what} <span class="muted">${item.status || ''}</span></summary>
    ${output ? html`<pre>${typeof output === 'string' ? output.slice(0, 4000) : JSON.stringify(output, null, 2)}</pre>` : html`<p class="muted">No output yet.</p>`}
  </details>`;
}
