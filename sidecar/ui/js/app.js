// The Workload Manager's entry: sign-in (the key and the user's name kept in session storage), the views and
// live updates.
import { api, session, userNameProblem } from './api.js';
import { setupDesk } from './desk.js';
import { startLive } from './live.js';
import { loadTasks, refreshPanel, setupTasks } from './tasks.js';
import { loadAgents, loadConfiguration, loadDashboard, setupConfiguration, setupDashboard } from './views.js';

const $ = (id) => document.getElementById(id);
const LOADERS = { tasks: loadTasks, agents: loadAgents, configuration: loadConfiguration, dashboard: loadDashboard };
let current = 'tasks';
let stopLive = null;

function showView(name) {
    current = name;
    for (const button of $('nav').querySelectorAll('[data-view]')) {
        button.setAttribute('aria-pressed', String(button.dataset.view === name));
    }
    for (const view of document.querySelectorAll('.view')) view.hidden = view.id !== `view-${name}`;
    LOADERS[name]?.();
}

async function onEvents() {
    if (current === 'tasks') await Promise.all([loadTasks(), refreshPanel()]);
    else await LOADERS[current]?.();
}

// What the key may do decides which actions show (a read-only key's are hidden: body[data-access]).
function showAccess(key) {
    document.body.dataset.access = key.access;
    $('read-only').hidden = key.access !== 'read-only';
    $('signed-in-as').textContent = session.user ? `Signed in as ${session.user} (tenant ${key.tenant})`
        : `Signed in to tenant ${key.tenant}`;
    $('signed-in-as').hidden = false;
}

function signedIn(key) {
    showAccess(key);
    $('sign-in').hidden = true;
    $('nav').hidden = false;
    showView('tasks');
    stopLive = startLive(onEvents, (text) => { $('live').textContent = text; });
}

function signOut() {
    stopLive?.();
    session.key = null;
    session.user = null;
    location.reload();
}

async function signIn(event) {
    event.preventDefault();
    $('sign-in-error').textContent = '';
    const user = $('user-name').value.trim();
    const problem = userNameProblem(user);
    $('user-name').setAttribute('aria-invalid', String(problem !== null));
    if (problem) {
        $('sign-in-error').textContent = problem;
        $('user-name').focus();
        return;
    }
    session.key = $('api-key').value.trim();
    session.user = user;
    let key;
    try {
        key = await api.key();
    } catch (error) {
        session.key = null;
        session.user = null;
        $('sign-in-error').textContent = error.message;
        return;
    }
    $('api-key').value = '';
    $('user-name').value = '';
    signedIn(key);
}

// A key kept from before a reload: signed in again when the API still knows it.
async function resume() {
    try {
        signedIn(await api.key());
    } catch (error) {
        if (error.status === 401) {
            session.key = null;
            session.user = null;
        }
        $('sign-in-error').textContent = error.message;
        $('api-key').focus();
    }
}

setupTasks();
setupDesk();
setupConfiguration();
setupDashboard();
$('sign-in-form').addEventListener('submit', signIn);
$('sign-out').addEventListener('click', signOut);
for (const button of $('nav').querySelectorAll('[data-view]')) {
    button.addEventListener('click', () => showView(button.dataset.view));
}
if (session.key) resume(); else $('api-key').focus();
