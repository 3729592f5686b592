// The console's only way to the server: the public API on this origin, exactly as any
// client calls it, with the credential the user gave. The session lives in this tab's
// sessionStorage (gone when the tab closes), never in localStorage or a cookie.

const STORE = 'jan.console.session';
const listeners = new Set();
let session = load();

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) || null;
  } catch {
    return null;
  }
}

export function getSession() {
  return session;
}

// kind: 'admin_key' | 'project_key' | 'user' (a session from /v1/auth: token is its JWT).
// modelKey: a project key the playground uses while signed in with an admin key.
export function setSession(next) {
  session = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
  for (const f of listeners) f(next);
}

export function updateSession(changes) {
  setSession({ ...session, ...changes });
}

export function onSession(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `The server answered ${status}.`);
    this.status = status;
    this.type = e.type || null;
    this.code = e.code || null;
    this.param = e.param || null;
  }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// The credential for a call: model calls (the playground) use the project key given to it
// when the session is an admin key's, which the model endpoints refuse.
function headers(forModels, json) {
  const out = {};
  if (json) out['Content-Type'] = 'application/json';
  const token = forModels && session?.modelKey ? session.modelKey : session?.token;
  if (token) out.Authorization = `Bearer ${token}`;
  if (session?.kind === 'user' && session.project) out['OpenAI-Project'] = session.project;
  return out;
}

// A user's access token lives 15 minutes; the refresh cookie (the auth area's, HttpOnly)
// gets a new one.
async function refresh() {
  const res = await fetch('/v1/auth/refresh-token', { method: 'POST', credentials: 'same-origin' });
  if (!res.ok) return false;
  const s = await res.json();
  updateSession({ token: s.access_token });
  return true;
}

export async function call(method, path, { body, params, signal, raw = false, models = false } = {}) {
  const json = body !== undefined;
  const send = () =>
    fetch(path + query(params), {
      method,
      headers: headers(models, json),
      body: json ? JSON.stringify(body) : undefined,
      signal,
      credentials: 'same-origin',
      cache: 'no-store',
    });
  let res = await send();
  // A user's expired access token is renewed once (a key given to the playground is not a session).
  const renewable = session?.kind === 'user' && !(models && session.modelKey);
  if (res.status === 401 && renewable && (await refresh())) res = await send();
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
  return raw ? res : res.json();
}

export const api = {
  get: (path, params, opts) => call('GET', path, { params, ...opts }),
  post: (path, body, opts) => call('POST', path, { body: body ?? {}, ...opts }),
  del: (path, opts) => call('DELETE', path, opts),
};

// Server-sent events of a streamed answer, parsed, until [DONE] or the end of the body.
export async function* events(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = /\r?\n\r?\n/.exec(buffer))) {
      const block = buffer.slice(0, end.index);
      buffer = buffer.slice(end.index + end[0].length);
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (!data) continue;
      if (data === '[DONE]') return;
      yield JSON.parse(data);
    }
  }
}

// Signing in, as the auth area offers it.
export async function signInWithKey(key) {
  const token = key.trim();
  const kind = token.startsWith('sk-admin-') ? 'admin_key' : 'project_key';
  setSession({ kind, token });
  try {
    // Prove the key before showing anything: each kind has an endpoint it may read.
    if (kind === 'admin_key') await api.get('/v1/organization/projects', { limit: 1 });
    else await api.get('/v1/models', undefined, { models: true });
  } catch (err) {
    setSession(null);
    throw err;
  }
}

export async function signInAsGuest() {
  const res = await call('POST', '/v1/auth/guest-login', { body: {} });
  await startUserSession(res);
}

async function startUserSession(res) {
  setSession({ kind: 'user', token: res.access_token, user: res.user, project: res.user.default_project_id });
}

export async function startOidc() {
  const res = await call('GET', '/v1/auth/google/login');
  window.location.assign(res.url);
}

// The identity provider sends the browser back here with ?code&state: finish the sign-in
// (the login cookie proves it is this browser) and drop them from the address bar.
export async function finishOidc() {
  const params = new URLSearchParams(window.location.search);
  const code = params.get('code');
  const state = params.get('state');
  if (!code && !params.get('error')) return false;
  window.history.replaceState(null, '', window.location.pathname + window.location.hash);
  const res = await call('POST', '/v1/auth/google/callback', { body: { code, state, error: params.get('error') || undefined } });
  await startUserSession(res);
  return true;
}

export async function signOut() {
  const s = session;
  setSession(null);
  if (s?.kind === 'user') {
    await fetch('/v1/auth/logout', { method: 'POST', credentials: 'same-origin' }).catch(() => null);
  }
}

// What the signed-in caller may see: the organization role of a user, or the key's kind.
export function abilities(s = session) {
  if (!s) return { admin: false, write: false, models: false };
  if (s.kind === 'admin_key') return { admin: true, write: true, models: Boolean(s.modelKey) };
  if (s.kind === 'project_key') return { admin: false, write: false, models: true };
  const role = s.user?.organizations?.[0]?.role;
  return { admin: role === 'owner' || role === 'reader', write: role === 'owner', models: true };
}
