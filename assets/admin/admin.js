// The tenant administrator's "Microsoft 365 Integration" page. It talks to the same-origin
// admin API (docs/admin-api.md). No framework, no build step; every piece of server text is
// put in the page with textContent, never parsed as HTML.
'use strict';

(function () {
  const TOKEN_KEY = 'ms365.adminToken';
  const POLL_MS = 1000;
  const RUNS_LIMIT = 10;

  const params = new URLSearchParams(window.location.search);
  let tenant = (params.get('tenant') || '').trim();
  let token = readToken();
  /** The last settings document the server answered. */
  let doc = null;
  /** The last status document. */
  let status = null;
  let pollTimer = null;
  let polls = 0;
  /** After "Sync now"/"Approve": keep polling until the run shows up and ends. */
  let waiting = null;

  const $ = (id) => document.getElementById(id);

  const CLOUDS = {
    GLOBAL: 'Global (Microsoft Azure)',
    CHINA: 'China (Microsoft Azure operated by 21Vianet)',
    USGOV: 'US Government (GCC High, L4)',
    USGOV_DOD: 'US Government DoD (L5)',
  };
  const TRIGGERS = { schedule: 'Schedule', manual: 'Manual', cli: 'Command line', api: 'Sync now (API)' };
  const STATUSES = {
    running: 'Running',
    succeeded: 'Succeeded',
    failed: 'Failed',
    awaiting_approval: 'Awaiting approval',
    cancelled: 'Cancelled',
  };
  const CHECKS = {
    token: 'Sign in to Microsoft with the key pair (app-only token)',
    users: 'Read users (User.Read.All)',
    photo: 'Read user photos',
    contacts: 'Read contacts (Contacts.Read)',
  };

  // ---------------------------------------------------------------------------------------
  // Storage, messages, small helpers

  function readToken() {
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function writeToken(value) {
    token = value || '';
    try {
      if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
      else window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage refused (private mode): the token lives as long as the page.
    }
    $('forget-token').hidden = !token;
  }

  /** Says something in the live region; kind is '', 'ok' or 'bad'. */
  function say(text, kind) {
    const box = $('message');
    box.className = 'message' + (kind ? ' ' + kind : '');
    // Clear first so that the same text said twice is announced twice.
    box.textContent = '';
    window.setTimeout(() => {
      box.textContent = text;
    }, 30);
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function formatTime(value) {
    if (!value) return '';
    const date = new Date(typeof value === 'number' ? value * 1000 : value);
    if (Number.isNaN(date.getTime())) return String(value);
    try {
      return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
    } catch (_) {
      return date.toLocaleString();
    }
  }

  function num(v) {
    return typeof v === 'number' && Number.isFinite(v) ? v : 0;
  }

  const PHASES = {
    fetch: 'Reading users from Microsoft 365',
    apply: 'Updating extensions',
    photos: 'Syncing photos',
    contacts: 'Syncing contacts',
  };

  function phaseLabel(phase) {
    if (!phase) return 'Starting';
    if (PHASES[phase]) return PHASES[phase];
    const words = String(phase).replace(/[_-]+/g, ' ').trim();
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  /** Runs `action` with `button` marked busy; ignores clicks while it is. */
  async function busy(button, action) {
    if (button.getAttribute('aria-disabled') === 'true') return;
    button.setAttribute('aria-disabled', 'true');
    button.setAttribute('aria-busy', 'true');
    try {
      await action();
    } finally {
      button.removeAttribute('aria-disabled');
      button.removeAttribute('aria-busy');
    }
  }

  // ---------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(httpStatus, message, error, retryAfter) {
      super(message);
      this.status = httpStatus;
      this.code = (error && error.code) || '';
      const detail = (error && error.detail) || {};
      this.field = detail.field || '';
      this.hint = detail.hint || (error && error.hint) || '';
      this.aadsts = detail.aadsts || '';
      this.retryAfter = retryAfter;
      this.hadToken = Boolean(token);
    }
  }

  async function api(method, path, body, accept) {
    const headers = { Accept: accept || 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
    if (tenant) headers['X-Tenant'] = tenant;
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await window.fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'The gateway could not be reached (' + e.message + ').', null);
    }
    if (response.ok) return response;
    let error = null;
    try {
      const json = await response.json();
      error = json && Array.isArray(json.errors) ? json.errors[0] : null;
    } catch (_) {
      // Not JSON: keep the status line.
    }
    const message =
      (error && error.message) || response.statusText || 'HTTP ' + response.status;
    throw new ApiError(response.status, message, error, response.headers.get('Retry-After'));
  }

  async function apiJson(method, path, body) {
    const response = await api(method, path, body);
    if (response.status === 204) return null;
    return response.json();
  }

  /** Shows an error where it belongs; returns nothing. */
  function fail(error, what) {
    if (!(error instanceof ApiError)) {
      say((what ? what + ': ' : '') + String(error && error.message ? error.message : error), 'bad');
      return;
    }
    if (error.status === 401) {
      showAuth(
        error.hadToken
          ? 'The administrator token was not accepted.'
          : 'Sign in to continue.',
        error.hadToken,
      );
      return;
    }
    if (error.status === 429) {
      const wait = error.retryAfter ? ' Try again in ' + error.retryAfter + ' s.' : '';
      say('Too many attempts.' + wait, 'bad');
      return;
    }
    if (error.status === 400 && error.code === 'VALIDATE_FAILED' && error.field) {
      const prefix = error.field + ': ';
      const text = error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
      if (showFieldError(error.field, text)) {
        say('Not saved: ' + text, 'bad');
        return;
      }
    }
    let text = (what ? what + ': ' : '') + error.message;
    if (error.aadsts) text += ' (AADSTS' + String(error.aadsts).replace(/^AADSTS/, '') + ')';
    if (error.hint) text += ' ' + error.hint;
    say(text, 'bad');
  }

  // ---------------------------------------------------------------------------------------
  // Sign-in (401)

  function showAuth(text, tokenRefused, focusTenant) {
    stopPolling();
    if (tokenRefused) writeToken('');
    $('loading').hidden = true;
    $('auth').hidden = false;
    $('tenant').value = tenant;
    if (!doc) $('app').hidden = true;
    if (text) say(text, tokenRefused ? 'bad' : '');
    $(focusTenant ? 'tenant' : 'token').focus();
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    const value = $('token').value.trim();
    if (!value && !token) {
      say('Enter the administrator token.', 'bad');
      $('token').focus();
      return;
    }
    if (value) writeToken(value);
    $('token').value = '';
    const named = $('tenant').value.trim();
    if (named !== tenant) {
      tenant = named;
      const url = new URL(window.location.href);
      if (tenant) url.searchParams.set('tenant', tenant);
      else url.searchParams.delete('tenant');
      window.history.replaceState(null, '', url.pathname + url.search + url.hash);
      showScope();
    }
    $('auth').hidden = true;
    say('Signing in…', '');
    start(true);
  }

  function showScope() {
    const scope = $('scope');
    scope.hidden = !tenant;
    scope.textContent = tenant ? 'Acting in the scope of tenant ' + tenant + '.' : '';
  }

  // ---------------------------------------------------------------------------------------
  // The settings form

  function fields() {
    return Array.from(document.querySelectorAll('[data-field]'));
  }

  function getPath(object, path) {
    return path.split('.').reduce((o, k) => (o && typeof o === 'object' ? o[k] : undefined), object);
  }

  function readControl(control) {
    if (control.type === 'checkbox') return control.checked;
    // A number field left unreadable is sent as text, so the server names the field.
    if (control.dataset.kind === 'number') {
      const text = control.value.trim();
      return /^\d+$/.test(text) ? Number(text) : text;
    }
    if (control.dataset.kind === 'lines') {
      return control.value
        .split(/\r?\n/)
        .map((line) => line.trim())
        .filter((line) => line.length > 0);
    }
    return control.value.trim();
  }

  function writeControl(control, value) {
    if (control.type === 'checkbox') {
      control.checked = Boolean(value);
    } else if (control.dataset.kind === 'lines') {
      control.value = Array.isArray(value) ? value.join('\n') : '';
    } else if (control.tagName === 'SELECT') {
      const wanted = value === undefined || value === null ? '' : String(value);
      if (wanted && !Array.from(control.options).some((o) => o.value === wanted)) {
        control.append(el('option', { value: wanted, text: CLOUDS[wanted] || wanted }));
      }
      if (wanted) control.value = wanted;
    } else {
      control.value = value === undefined || value === null ? '' : String(value);
    }
  }

  function fill(settings) {
    setUri('redirect_uri', settings.redirect_uri || '');
    setUri('sbc_redirect_uri', settings.sbc_redirect_uri || '');
    $('sbc-none').hidden = Boolean(settings.sbc_redirect_uri);
    $('sbc_redirect_uri').parentElement.hidden = !settings.sbc_redirect_uri;
    for (const control of fields()) writeControl(control, getPath(settings, control.dataset.field));
    updateScopes();
    clearFieldErrors();
  }

  function setUri(id, value) {
    $(id).textContent = value;
  }

  /** The document to POST: every section on the form, merged over what the server sent, so
   * that fields this page does not show keep their values. */
  function collect() {
    const out = {};
    for (const control of fields()) {
      const path = control.dataset.field.split('.');
      const value = readControl(control);
      if (path.length === 1) {
        out[path[0]] = value;
        continue;
      }
      const [section, key] = path;
      if (!out[section]) {
        const base = doc && doc[section] && typeof doc[section] === 'object' ? doc[section] : {};
        out[section] = JSON.parse(JSON.stringify(base));
      }
      out[section][key] = value;
    }
    return out;
  }

  function updateScopes() {
    for (const select of document.querySelectorAll('select[data-scope]')) {
      const box = $(select.dataset.scope);
      if (box) box.hidden = select.value === 'ALL';
    }
  }

  function clearFieldErrors() {
    for (const p of document.querySelectorAll('.field-error')) p.remove();
    for (const control of document.querySelectorAll('[aria-invalid="true"]')) {
      clearFieldError(control);
    }
  }

  function clearFieldError(control) {
    control.removeAttribute('aria-invalid');
    const errorId = control.id + '-error';
    const p = $(errorId);
    if (p) p.remove();
    const described = (control.getAttribute('aria-describedby') || '')
      .split(/\s+/)
      .filter((id) => id && id !== errorId);
    if (described.length) control.setAttribute('aria-describedby', described.join(' '));
    else control.removeAttribute('aria-describedby');
  }

  /** Puts the server's message next to the field it names and focuses it. */
  function showFieldError(field, message) {
    const all = fields();
    // `users.selected_users[3]` names an item of a list: its textarea.
    const path = field.replace(/\[\d+\]/g, '');
    let control = all.find((c) => c.dataset.field === path);
    if (!control) {
      // A field the page has no control for: its section's first control.
      const section = field.split(/[.[]/)[0];
      control = all.find((c) => c.dataset.field.split('.')[0] === section);
    }
    if (!control) return false;
    clearFieldError(control);
    // Reveal it if it sits in a hidden scope box.
    for (let node = control.parentElement; node; node = node.parentElement) {
      if (node.hidden) node.hidden = false;
    }
    const errorId = control.id + '-error';
    const p = el('p', { class: 'field-error', id: errorId, text: message });
    const anchor = control.type === 'checkbox' ? control.closest('.check') || control : control;
    anchor.insertAdjacentElement('afterend', p);
    control.setAttribute('aria-invalid', 'true');
    const described = (control.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
    described.unshift(errorId);
    control.setAttribute('aria-describedby', described.join(' '));
    control.focus();
    if (typeof control.scrollIntoView === 'function') {
      control.scrollIntoView({ block: 'center' });
    }
    return true;
  }

  async function save(event) {
    if (event) event.preventDefault();
    await busy($('save'), async () => {
      clearFieldErrors();
      try {
        const body = collect();
        doc = await apiJson('POST', '/api/ms365', body);
        fill(doc);
        say('Settings saved.', 'ok');
        refreshStatus();
      } catch (e) {
        fail(e, 'Not saved');
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // Copy buttons

  function selectText(node) {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  async function copy(button) {
    const source = $(button.dataset.copy);
    const text = source.textContent;
    if (!text) return;
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (_) {
        copied = false;
      }
    }
    if (!copied) {
      selectText(source);
      try {
        copied = document.execCommand('copy');
      } catch (_) {
        copied = false;
      }
    }
    if (copied) {
      say('Copied ' + text, 'ok');
      button.textContent = 'Copied';
      window.setTimeout(() => {
        button.textContent = 'Copy';
      }, 2000);
    } else {
      selectText(source);
      say('The text is selected: press Ctrl+C (or ⌘C) to copy it.', '');
    }
  }

  // ---------------------------------------------------------------------------------------
  // Key pair

  function saveFile(text, name) {
    const blob = new Blob([text], { type: 'application/x-pem-file' });
    const url = URL.createObjectURL(blob);
    const link = el('a', { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    window.setTimeout(() => {
      URL.revokeObjectURL(url);
      link.remove();
    }, 1000);
  }

  function fileName(response) {
    const disposition = response.headers.get('Content-Disposition') || '';
    const match = /filename="?([A-Za-z0-9._-]+)"?/.exec(disposition);
    return match ? match[1] : 'public_key.pem';
  }

  async function generateKey() {
    await busy($('generate-key'), async () => {
      try {
        const response = await api('POST', '/api/ms365/certificate', undefined, 'application/x-pem-file');
        saveFile(await response.text(), fileName(response));
        say(
          'A new key pair was generated and public_key.pem downloaded. Upload it in Microsoft Entra ID ' +
            '(Certificates & secrets › Certificates › Upload certificate).',
          'ok',
        );
        refreshStatus();
      } catch (e) {
        fail(e, 'No key pair generated');
      }
    });
  }

  async function downloadKey() {
    await busy($('download-key'), async () => {
      try {
        const response = await api('GET', '/api/ms365/certificate', undefined, 'application/x-pem-file');
        saveFile(await response.text(), fileName(response));
        say('public_key.pem downloaded.', 'ok');
      } catch (e) {
        if (e instanceof ApiError && e.status === 404) {
          say('There is no key pair yet: choose "Generate New Key Pair" first.', 'bad');
        } else {
          fail(e, 'Download failed');
        }
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // Status, progress

  async function refreshStatus() {
    try {
      status = await apiJson('GET', '/api/ms365/status');
    } catch (e) {
      fail(e, 'Status unavailable');
      return null;
    }
    renderStatus(status);
    return status;
  }

  function renderStatus(s) {
    $('overview-sign-in').textContent = s.sign_in_enabled ? 'On' : 'Off';
    $('overview-configured').textContent = s.configured ? 'Yes' : 'No';
    const sync = s.sync || {};
    $('overview-next-run').textContent =
      sync.mode === 'MANUAL' ? 'Manual only' : formatTime(sync.next_run) || '–';
    renderPbx(s.pbx || {});
    renderRealtime(s.realtime || {});

    const cert = s.certificate;
    $('cert-thumbprint').textContent = cert ? cert.thumbprint || '–' : '–';
    $('cert-not-after').textContent = cert ? formatTime(cert.not_after) : '–';
    const days = $('cert-days-left');
    days.textContent = cert && typeof cert.days_left === 'number' ? String(cert.days_left) : '–';
    days.className = cert && cert.days_left <= 30 ? 'soon' : '';
    $('cert-state').textContent = !cert ? 'No key pair yet' : cert.state === 'pending' ? 'Pending' : 'Active';
    $('cert-pending').hidden = !(cert && cert.state === 'pending');

    const warning = $('cert-warning');
    const warnings = Array.isArray(s.warnings) ? s.warnings : [];
    warning.textContent = '';
    if (warnings.length) {
      const list = el('ul');
      for (const w of warnings) {
        const text = typeof w === 'string' ? w : (w && (w.message || w.code)) || JSON.stringify(w);
        list.append(el('li', { text }));
      }
      warning.append(list);
    }
    warning.hidden = warnings.length === 0;

    renderProgress(sync);
  }

  /** The PBX connection: where the sync writes, and how the last conversation went. */
  function renderPbx(pbx) {
    const out = $('overview-pbx');
    if (pbx.kind !== 'portsip') {
      out.textContent = 'Embedded (nothing is pushed)';
      out.title = '';
      return;
    }
    const state = pbx.state === 'signed_in' ? 'Connected'
      : pbx.state === 'error' ? 'Error: ' + (pbx.message || 'unknown')
      : 'Not contacted yet';
    out.textContent = 'PortSIP ' + (pbx.api_url || '') + ' · ' + state;
    out.title = pbx.checked_at ? 'Checked ' + formatTime(pbx.checked_at) : '';
    out.className = pbx.state === 'error' ? 'soon' : '';
    renderPbxSessions((pbx.sign_in && pbx.sign_in.sessions) || []);
  }

  /** Real-time updates (Graph change notifications): on or off, and why, as the server words it. */
  function renderRealtime(rt) {
    const out = $('overview-realtime');
    out.textContent = rt.summary || '–';
    out.title = rt.last_renewal ? 'Last renewal ' + formatTime(rt.last_renewal) : '';
    out.className = rt.state === 'off' && rt.enabled ? 'soon' : '';
  }

  /** Live sessions by PBX state: how many users the PBX knows, and why it does not know the rest. */
  function renderPbxSessions(sessions) {
    const list = $('pbx-sessions');
    list.replaceChildren();
    $('overview-pbx-sessions').hidden = sessions.length === 0;
    for (const s of sessions) {
      const li = el('li', { 'data-state': s.state });
      li.append(el('strong', { text: s.count + ' ' + (s.state === 'active' ? 'with a PBX session' : s.state.replace(/_/g, ' ')) }));
      if (s.state !== 'active') li.append(' — ' + s.message);
      list.append(li);
    }
  }

  function renderProgress(sync) {
    const bar = $('sync-progress');
    const phase = $('sync-phase');
    const run = sync.last_run;
    if (sync.running) {
      const live = run && run.status === 'running' ? run : null;
      const total = live ? num(live.total) : 0;
      const done = live ? Math.min(num(live.done), total) : 0;
      if (total > 0) {
        bar.max = total;
        bar.value = done;
        bar.textContent = Math.round((done / total) * 100) + '%';
        phase.textContent = phaseLabel(live.phase) + ': ' + done + ' of ' + total;
      } else {
        // Total not known yet (while reading from Microsoft 365): count what was read.
        const seen = live ? num(live.done) : 0;
        bar.removeAttribute('value');
        bar.textContent = '';
        phase.textContent = !live
          ? 'Sync running…'
          : phaseLabel(live.phase) + (seen > 0 ? ': ' + seen + ' so far' : '…');
      }
      bar.parentElement.setAttribute('aria-busy', 'true');
    } else {
      bar.max = 1;
      bar.value = 0;
      bar.textContent = '0%';
      bar.parentElement.removeAttribute('aria-busy');
      phase.textContent = 'No sync running.';
    }
  }

  function stopPolling() {
    if (pollTimer) window.clearTimeout(pollTimer);
    pollTimer = null;
  }

  function schedulePoll(delay) {
    stopPolling();
    pollTimer = window.setTimeout(poll, delay === undefined ? POLL_MS : delay);
  }

  async function poll() {
    pollTimer = null;
    polls += 1;
    const s = await refreshStatus();
    if (!s) return;
    const sync = s.sync || {};
    const lastId = sync.last_run ? sync.last_run.id : null;
    if (sync.running) {
      if (waiting) waiting.seen = true;
      if (polls % 5 === 1) refreshRuns();
      schedulePoll();
      return;
    }
    if (waiting) {
      const ended = waiting.seen || (lastId && lastId !== waiting.before);
      if (!ended && Date.now() < waiting.until) {
        schedulePoll();
        return;
      }
      waiting = null;
      if (ended && sync.last_run) announceEnd(sync.last_run);
    }
    refreshRuns();
  }

  function announceEnd(run) {
    const label = STATUSES[run.status] || run.status;
    if (run.status === 'succeeded') say('Sync finished: ' + label + '.', 'ok');
    else if (run.status === 'awaiting_approval') say('The sync is waiting for your approval (see below).', 'bad');
    else say('Sync finished: ' + label + (run.message ? ' — ' + run.message : ''), 'bad');
  }

  function expectRun() {
    const before = status && status.sync && status.sync.last_run ? status.sync.last_run.id : null;
    waiting = { before, seen: false, until: Date.now() + 20000 };
    polls = 0;
    schedulePoll(250);
  }

  // ---------------------------------------------------------------------------------------
  // Test connection, sync now, runs, approval

  async function testConnection() {
    const out = $('test-result');
    await busy($('test-connection'), async () => {
      out.textContent = '';
      out.append(el('p', { class: 'muted', text: 'Testing the connection to Microsoft 365…' }));
      let result;
      try {
        result = await apiJson('POST', '/api/ms365/test');
      } catch (e) {
        out.textContent = '';
        fail(e, 'Test failed');
        return;
      }
      out.textContent = '';
      out.append(
        el('p', {
          class: result.ok ? 'notice ok' : 'notice bad',
          text: result.ok ? 'Connection works.' : 'Some checks failed.',
        }),
      );
      const list = el('ul');
      for (const check of Array.isArray(result.checks) ? result.checks : []) {
        const item = el(
          'li',
          { class: check.ok ? 'ok' : 'failed', 'data-check': check.name },
          el('span', { class: 'check-name', text: CHECKS[check.name] || check.name }),
          el('span', { class: 'verdict', text: check.ok ? 'ok' : 'failed' }),
        );
        if (check.message) item.append(el('p', { text: check.message }));
        if (check.aadsts) {
          item.append(el('p', { class: 'muted', text: 'Microsoft error AADSTS' + String(check.aadsts).replace(/^AADSTS/, '') }));
        }
        if (check.hint) item.append(el('p', { class: 'hint-text', text: check.hint }));
        list.append(item);
      }
      out.append(list);
      say(result.ok ? 'Test connection: all checks passed.' : 'Test connection: some checks failed.', result.ok ? 'ok' : 'bad');
    });
  }

  async function syncNow() {
    await busy($('sync-now'), async () => {
      let answer;
      try {
        answer = await apiJson('POST', '/api/ms365/sync');
      } catch (e) {
        fail(e, 'Sync not started');
        return;
      }
      const outcome = answer && answer.outcome;
      say(
        outcome === 'coalesced_into_running'
          ? 'A sync is already running; your request joins it.'
          : outcome === 'coalesced_into_queued'
            ? 'A sync is already queued; your request joins it.'
            : 'Sync started.',
        'ok',
      );
      expectRun();
    });
  }

  async function refreshRuns() {
    let answer;
    try {
      answer = await apiJson('GET', '/api/ms365/sync/runs?limit=' + RUNS_LIMIT);
    } catch (e) {
      fail(e, 'Runs unavailable');
      return;
    }
    renderRuns(answer && Array.isArray(answer.items) ? answer.items : []);
  }

  function countsOf(run, entity) {
    const c = (run.counts && run.counts[entity]) || {};
    return {
      created: num(c.created),
      updated: num(c.updated),
      disabled: num(c.disabled),
      deleted: num(c.deleted),
      skipped: num(c.skipped),
      failed: num(c.failed),
    };
  }

  function cell(label, content, cls) {
    return el('td', { 'data-label': label, class: cls }, content);
  }

  function runDetails(run) {
    const errors = Array.isArray(run.errors) ? run.errors : [];
    const total = Math.max(num(run.errors_total), errors.length);
    const details = el('details', null, el('summary', { text: total ? 'Errors (' + total + ')' : 'Details' }));
    if (run.message) details.append(el('p', { text: run.message }));
    const facts = [];
    if (run.mode) facts.push(run.mode === 'delta' ? 'Delta (changes only)' : 'Full');
    if (run.finished_at) facts.push('finished ' + formatTime(run.finished_at));
    facts.push(num(run.graph_requests) + ' Graph requests');
    if (num(run.throttled)) facts.push(num(run.throttled) + ' throttled');
    details.append(el('p', { class: 'muted', text: facts.join(' · ') }));
    const entities = Object.keys(run.counts || {});
    if (entities.length) {
      const list = el('ul');
      for (const entity of entities) {
        const c = countsOf(run, entity);
        list.append(
          el('li', {
            text:
              entity + ': ' + c.created + ' created, ' + c.updated + ' updated, ' + c.disabled + ' disabled, ' +
              c.deleted + ' deleted, ' + c.skipped + ' skipped, ' + c.failed + ' failed',
          }),
        );
      }
      details.append(list);
    }
    if (errors.length) {
      const list = el('ul', { class: 'errors' });
      for (const item of errors) {
        const who = item.name || item.key || '';
        list.append(
          el('li', {
            text: (item.entity ? item.entity + ' ' : '') + who + ' — ' + (item.outcome || 'failed') + ': ' + (item.reason || ''),
          }),
        );
      }
      details.append(list);
      if (total > errors.length) details.append(el('p', { class: 'muted', text: '…and ' + (total - errors.length) + ' more.' }));
    }
    return details;
  }

  function renderRuns(items) {
    const body = $('runs');
    body.textContent = '';
    for (const run of items) {
      const c = countsOf(run, 'users');
      const started = el('time', { datetime: run.started_at, text: formatTime(run.started_at) });
      const statusText = STATUSES[run.status] || run.status || '';
      const row = el(
        'tr',
        { class: 'run', 'data-status': run.status || '', 'data-id': run.id || '' },
        cell('Started', started),
        cell('Trigger', TRIGGERS[run.trigger] || run.trigger || ''),
        cell('Status', el('span', { class: 'status status-' + (run.status || ''), text: statusText })),
        cell('Created', String(c.created), 'num'),
        cell('Updated', String(c.updated), 'num'),
        cell('Disabled', String(c.disabled + c.deleted), 'num'),
        cell('Skipped', String(c.skipped), 'num'),
        cell('Failed', String(c.failed), 'num'),
      );
      const more = el(
        'tr',
        { class: 'run-details', 'data-id': run.id || '' },
        el('td', { colspan: 8 }, runDetails(run)),
      );
      body.append(row, more);
    }
    $('runs-empty').hidden = items.length > 0;
    renderApproval(items.find((r) => r.status === 'awaiting_approval') || null);
  }

  function renderApproval(run) {
    const box = $('approval');
    if (!run) {
      box.hidden = true;
      box.dataset.runId = '';
      return;
    }
    const c = countsOf(run, 'users');
    let text = 'This run would disable ' + c.disabled + (c.disabled === 1 ? ' user' : ' users');
    if (c.deleted) text += ' and delete ' + c.deleted;
    text +=
      ', more than the deletion threshold allows, so nothing was applied (started ' +
      formatTime(run.started_at) +
      '). Check the users in Microsoft 365; if the change is intended, approve it.';
    $('approval-text').textContent = text;
    box.dataset.runId = run.id;
    box.hidden = false;
  }

  async function approve() {
    const id = $('approval').dataset.runId;
    if (!id) return;
    await busy($('approve-run'), async () => {
      try {
        await api('POST', '/api/ms365/sync/runs/' + encodeURIComponent(id) + '/approve');
        say('Approved: the run is being applied.', 'ok');
        $('approval').hidden = true;
        expectRun();
      } catch (e) {
        if (e instanceof ApiError && e.status === 409) {
          say('This run is no longer awaiting approval.', 'bad');
          refreshRuns();
        } else {
          fail(e, 'Not approved');
        }
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // Administrator tokens

  async function refreshTokens() {
    let list;
    try {
      list = await apiJson('GET', '/api/ms365/tokens');
    } catch (e) {
      fail(e, 'The tokens could not be loaded');
      return;
    }
    const body = $('tokens');
    body.replaceChildren();
    const items = (list && list.items) || [];
    $('tokens-empty').hidden = items.length > 0;
    for (const t of items) {
      const revoke = el('button', { type: 'button', class: 'secondary', 'data-token': t.id, text: 'Revoke' });
      revoke.setAttribute('aria-label', 'Revoke ' + t.label);
      revoke.addEventListener('click', () => revokeToken(t));
      body.append(
        el('tr', null,
          el('td', { text: t.label }),
          el('td', { text: formatTime(t.created_at) }),
          el('td', { text: t.last_used_at ? formatTime(t.last_used_at) : 'never' }),
          el('td', { text: t.expires_at ? formatTime(t.expires_at) : 'never' }),
          el('td', null, revoke)),
      );
    }
  }

  async function revokeToken(t) {
    if (!window.confirm('Revoke the token "' + t.label + '"? It stops working at once.')) return;
    try {
      await apiJson('DELETE', '/api/ms365/tokens/' + encodeURIComponent(t.id));
      say('Token "' + t.label + '" revoked.', 'ok');
    } catch (e) {
      fail(e, 'The token could not be revoked');
    }
    refreshTokens();
  }

  // Start

  function fillTimeZones() {
    const list = $('time-zones');
    let zones = ['UTC'];
    try {
      if (typeof Intl.supportedValuesOf === 'function') zones = zones.concat(Intl.supportedValuesOf('timeZone'));
    } catch (_) {
      // Older browsers: free text only.
    }
    for (const zone of new Set(zones)) list.append(el('option', { value: zone }));
  }

  async function start(afterSignIn) {
    $('loading').hidden = false;
    let settings;
    try {
      settings = await apiJson('GET', '/api/ms365');
    } catch (e) {
      $('loading').hidden = true;
      if (e instanceof ApiError && e.status === 403) {
        fail(e);
        showAuth('', false);
      } else if (e instanceof ApiError && e.status === 400 && token) {
        // The system administrator's token without a tenant: ask which tenant.
        say(e.message, 'bad');
        showAuth('', false, true);
      } else {
        fail(e, 'The settings could not be loaded');
      }
      return;
    }
    $('loading').hidden = true;
    $('auth').hidden = true;
    $('app').hidden = false;
    if (!doc || !afterSignIn) {
      doc = settings;
      fill(doc);
    } else {
      doc = settings;
    }
    if (afterSignIn) say('Signed in.', 'ok');
    const s = await refreshStatus();
    await refreshRuns();
    await refreshTokens();
    if (s && s.sync && s.sync.running) {
      polls = 0;
      schedulePoll();
    }
  }

  function wire() {
    $('token-form').addEventListener('submit', onTokenSubmit);
    $('forget-token').addEventListener('click', () => {
      writeToken('');
      window.location.reload();
    });
    $('settings').addEventListener('submit', save);
    $('settings').addEventListener('input', (event) => {
      if (event.target.getAttribute && event.target.getAttribute('aria-invalid') === 'true') {
        clearFieldError(event.target);
      }
    });
    $('settings').addEventListener('change', (event) => {
      if (event.target.matches && event.target.matches('select[data-scope]')) updateScopes();
    });
    for (const button of document.querySelectorAll('button[data-copy]')) {
      button.addEventListener('click', () => copy(button));
    }
    $('generate-key').addEventListener('click', generateKey);
    $('download-key').addEventListener('click', downloadKey);
    $('test-connection').addEventListener('click', testConnection);
    $('sync-now').addEventListener('click', syncNow);
    $('refresh-runs').addEventListener('click', () => {
      refreshStatus();
      refreshRuns();
    });
    $('approve-run').addEventListener('click', approve);
  }

  function init() {
    wire();
    fillTimeZones();
    showScope();
    $('forget-token').hidden = !token;
    start(false);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
