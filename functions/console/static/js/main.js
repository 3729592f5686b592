// The console shell: sign-in, navigation and the screens, routed by the address's hash
// (#/projects/proj_…/keys), so every screen is a link and the server serves one page.
import { html, render, useState, useEffect } from './lib.js';
import { api, ApiError, getSession, onSession, signInWithKey, signInAsGuest, startOidc, finishOidc, signOut, abilities } from './api.js';
import { Form, ErrorNote } from './ui.js';
import { Overview, Members, AdminKeys, Providers, OrgLimits, OrgBudgets } from './org.js';
import { Projects, Project } from './projects.js';
import { Playground } from './playground.js';
import { ToolSettings } from './tools.js';
import { AuditLog } from './audit.js';

// Screens by the first part of the route; `admin` ones need the Administration API,
// `models` ones a project credential. A new screen is one line here; one whose endpoint a
// server may not have yet names it as `probe`, and shows only where it exists.
const SCREENS = [
  { path: 'overview', label: 'Overview', admin: true, view: () => html`<${Overview} />` },
  { path: 'projects', label: 'Projects', admin: true, view: ([id, tab]) => (id ? html`<${Project} id=${id} tab=${tab} />` : html`<${Projects} />`) },
  { path: 'members', label: 'Members', admin: true, view: () => html`<${Members} />` },
  { path: 'admin-keys', label: 'Admin keys', admin: true, view: () => html`<${AdminKeys} />` },
  { path: 'providers', label: 'Providers', admin: true, view: () => html`<${Providers} />` },
  { path: 'limits', label: 'Limits', admin: true, view: () => html`<${OrgLimits} />` },
  { path: 'budgets', label: 'Budgets', admin: true, view: () => html`<${OrgBudgets} />` },
  { path: 'audit-log', label: 'Audit log', admin: true, probe: '/v1/organization/audit_logs', view: () => html`<${AuditLog} />` },
  { path: 'playground', label: 'Playground', playground: true, view: ([id]) => html`<${Playground} conversationId=${id} />` },
  { path: 'tools', label: 'Tools', models: true, view: () => html`<${ToolSettings} />` },
];

function route() {
  const parts = window.location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || '', rest: parts.slice(1) };
}

function allowed(screen, can) {
  if (screen.admin) return can.admin;
  if (screen.models) return can.models;
  return true;
}

function SignIn({ failed }) {
  const [error, setError] = useState(failed);
  const guarded = (f) => async () => {
    setError(null);
    try {
      await f();
    } catch (err) {
      setError(err);
    }
  };
  return html`<main id="main" class="signin">
    <h1>Jan Server console</h1>
    <section aria-labelledby="key-title">
      <h2 id="key-title">Sign in with an API key</h2>
      <p class="muted">An admin key (<code>sk-admin-…</code>) opens the administration; a project key (<code>sk-proj-…</code>) the playground. It is kept in this tab only.</p>
      <${Form} label="Sign in" fields=${[{ name: 'key', label: 'API key', type: 'password', required: true, validate: (v) => (/^sk-/.test(v) ? null : 'An API key starts with sk-.') }]}
        submit=${(v) => signInWithKey(v.key)} />
    </section>
    <section aria-labelledby="other-title">
      <h2 id="other-title">Or</h2>
      <div class="actions">
        <button type="button" class="secondary" onClick=${guarded(startOidc)}>Sign in with your identity provider</button>
        <button type="button" class="secondary" onClick=${guarded(signInAsGuest)}>Continue as a guest</button>
      </div>
      <${ErrorNote} error=${error} />
    </section>
  </main>`;
}

// Endpoints this server does not have (an unknown route answers 404 `unknown_url`; any
// other answer, a refusal included, means the endpoint exists).
function useMissing(can) {
  const [missing, setMissing] = useState(new Set());
  useEffect(() => {
    const probes = SCREENS.filter((s) => s.probe && allowed(s, can)).map((s) => s.probe);
    Promise.all(probes.map((path) => api.get(path, { limit: 1 }).then(() => null, (err) => (err instanceof ApiError && err.code === 'unknown_url' ? path : null))))
      .then((found) => setMissing(new Set(found.filter(Boolean))));
  }, [can.admin]);
  return missing;
}

function Shell({ session }) {
  const [where, setWhere] = useState(route());
  useEffect(() => {
    const changed = () => setWhere(route());
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  const can = abilities(session);
  const missing = useMissing(can);
  const screens = SCREENS.filter((s) => allowed(s, can) && !missing.has(s.probe));
  const screen = screens.find((s) => s.path === where.name) || screens[0];
  useEffect(() => {
    document.title = `${screen.label} · Jan Server console`;
    document.getElementById('main')?.focus();
  }, [screen.path]);
  const who = session.kind === 'user' ? session.user?.email || (session.user?.is_guest ? 'Guest' : 'User') : session.kind === 'admin_key' ? 'Admin key' : 'Project key';
  return html`<div class="shell">
    <header>
      <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById('main').focus(); }}>Skip to content</a>
      <span class="brand">Jan Server</span>
      <nav aria-label="Console">
        <ul>${screens.map((s) => html`<li><a href=${`#/${s.path}`} aria-current=${s === screen ? 'page' : undefined}>${s.label}</a></li>`)}</ul>
      </nav>
      <span class="who">${who} <button type="button" class="secondary" onClick=${signOut}>Sign out</button></span>
    </header>
    <main id="main" tabindex="-1">
      <h1 class="sr-only">Jan Server console</h1>
      ${screen.view(where.name === screen.path ? where.rest : [])}
    </main>
  </div>`;
}

function App() {
  const [session, setSession] = useState(getSession());
  const [error, setError] = useState(null);
  useEffect(() => onSession(setSession), []);
  useEffect(() => {
    finishOidc().catch(setError);
  }, []);
  if (session) return html`<${Shell} session=${session} />`;
  return html`<${SignIn} key=${error ? 'failed' : 'fresh'} failed=${error} />`;
}

render(html`<${App} />`, document.getElementById('app'));
