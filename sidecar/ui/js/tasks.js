// The supervisor's Global Task List: filters, text search, paging by cursor, the task panel (fields,
// attributes, history) and its actions, each confirmed first and refused with the API's own message.
import { api } from './api.js';
import { confirmAction } from './confirm.js';
import { el, fillFields, formatNumber, formatTime } from './format.js';

const PAGE_SIZE = 50;
const $ = (id) => document.getElementById(id);

const state = { filters: {}, cursors: [null], page: 0, selected: null, checked: new Set() };

const ACTIONS = {
    hold: { text: 'Hold this task? It leaves the queue until it is resumed.', reason: true },
    resume: { text: 'Resume this task? It goes back to the queue.' },
    cancel: { text: 'Cancel this task? It is closed for everyone.', reason: true },
    complete: { text: 'Complete this task?' },
    restart: { text: 'Restart this task? It is classified and queued again.' },
    reprioritize: { text: 'Set the priority and business value of this task.', priority: true },
};

function filtersFromForm() {
    const form = new FormData($('filters'));
    const filters = { limit: PAGE_SIZE };
    for (const [name, value] of form.entries()) {
        if (String(value).trim() !== '') filters[name] = String(value).trim();
    }
    return filters;
}

function row(task) {
    const box = el('input', { type: 'checkbox', 'aria-label': `Select task ${task.id}` });
    box.checked = state.checked.has(task.id);
    box.addEventListener('click', (event) => event.stopPropagation());
    box.addEventListener('keydown', (event) => event.stopPropagation());
    box.addEventListener('change', () => {
        if (box.checked) state.checked.add(task.id); else state.checked.delete(task.id);
        showBatch();
    });
    const tr = el('tr', { tabindex: '0', 'data-id': task.id, 'aria-selected': String(task.id === state.selected) },
        el('td', {}, box), el('td', { class: 'num' }, task.id), el('td', {}, task.externalId ?? ''),
        el('td', {}, task.category ?? ''),
        el('td', {}, task.queue ?? ''), el('td', {}, task.status),
        el('td', { class: 'num' }, formatNumber(task.priority)),
        el('td', { class: 'num' }, formatNumber(task.businessValue)),
        el('td', {}, el('time', { datetime: task.dueAt }, formatTime(task.dueAt))),
        el('td', {}, task.assignedTo ?? ''));
    tr.addEventListener('click', () => openTask(task.id));
    tr.addEventListener('keydown', (event) => {
        if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); openTask(task.id); }
    });
    return tr;
}

// The current page again (after a filter change, an action or an event).
export async function loadTasks() {
    $('tasks-error').textContent = '';
    try {
        const page = await api.tasks({ ...state.filters, cursor: state.cursors[state.page] ?? undefined });
        const tasks = page.tasks ?? [];
        $('task-table').tBodies[0].replaceChildren(...tasks.map(row));
        state.pageIds = tasks.map((task) => task.id);
        showBatch();
        $('tasks-empty').hidden = tasks.length > 0;
        state.cursors[state.page + 1] = page.nextCursor ?? null;
        $('next-page').disabled = !page.nextCursor;
        $('first-page').disabled = state.page === 0;
        $('page-info').textContent = `Page ${formatNumber(state.page + 1)}, ${formatNumber(tasks.length)} tasks`;
    } catch (error) {
        $('tasks-error').textContent = error.message;
    }
}

async function openTask(id) {
    state.selected = id;
    for (const tr of $('task-table').tBodies[0].rows) {
        tr.setAttribute('aria-selected', String(tr.dataset.id === String(id)));
    }
    $('task-panel').hidden = false;
    $('panel-error').textContent = '';
    await refreshPanel();
    [...$('task-panel').querySelectorAll('button')].find((button) => button.offsetParent !== null)?.focus();
}

// The open task's panel again.
export async function refreshPanel() {
    const id = state.selected;
    if (id === null) return;
    try {
        const [task, history] = await Promise.all([api.task(id), api.history(id)]);
        if (id !== state.selected) return;
        $('panel-title').textContent = `Task ${id}${task.subject ? `: ${task.subject}` : ''}`;
        fillFields($('panel-fields'), [
            ['Status', task.status], ['External ID', task.externalId], ['Capture point', task.capturePoint],
            ['Department', task.department], ['Process', task.process], ['Category', task.category],
            ['Queue', task.queue], ['Media type', task.mediaType], ['Customer segment', task.customerSegment],
            ['Priority', formatNumber(task.priority)], ['Business value', formatNumber(task.businessValue)],
            ['Due', formatTime(task.dueAt)], ['Assigned to', task.assignedTo],
            ['Reserved until', formatTime(task.reservedUntil)], ['Hold reason', task.holdReason],
            ['Created', formatTime(task.createdAt)], ['Updated', formatTime(task.updatedAt)],
            ['Description', task.description],
        ]);
        $('panel-attributes').textContent = JSON.stringify(task.attributes ?? {}, null, 2);
        $('panel-history').replaceChildren(...(history ?? []).map((entry) => el('li', {},
            el('time', { datetime: entry.at }, formatTime(entry.at)), el('strong', {}, entry.event ?? ''),
            entry.actor ? ` by ${entry.actor}` : '', entry.detail?.reason ? ` (${entry.detail.reason})` : '',
            entry.detail?.batch ? ' (batch)' : '')));
    } catch (error) {
        $('panel-error').textContent = error.message;
    }
}

async function act(action) {
    const id = state.selected;
    const spec = ACTIONS[action];
    const answer = await confirmAction(`${action[0].toUpperCase()}${action.slice(1)} task ${id}`, spec.text, spec);
    if (answer === null) return;
    $('panel-error').textContent = '';
    try {
        await api.act(id, action, answer);
    } catch (error) {
        $('panel-error').textContent = error.message;
        return;
    }
    await Promise.all([loadTasks(), refreshPanel()]);
}

// The batch bar: how many tasks an action would take, and whether it may run.
function showBatch() {
    const all = $('batch-all').checked;
    $('batch-count').textContent = all ? `Every task matching the filter${state.filters.q ? ' and the search' : ''}`
        : `${formatNumber(state.checked.size)} selected`;
    for (const button of $('batch').querySelectorAll('[data-batch]')) {
        button.disabled = !all && state.checked.size === 0;
    }
    const ids = state.pageIds ?? [];
    $('select-page').checked = ids.length > 0 && ids.every((id) => state.checked.has(id));
}

// The filter of a batch by filter: the list's filters as the SQL filter document (lists as arrays); the
// text search goes beside it (q).
function batchFilter() {
    const filter = {};
    for (const [name, value] of Object.entries(state.filters)) {
        if (name === 'limit' || name === 'q') continue;
        if (name === 'overdue') filter.overdue = value === 'true';
        else filter[name] = value.includes(',') ? value.split(',').map((v) => v.trim()) : value;
    }
    return filter;
}

const PAST = { hold: 'held', resume: 'resumed', cancel: 'canceled', reprioritize: 'reprioritized' };

// A batch action: its arguments asked for, the count it would change confirmed (a dry run), then done in
// one call.
async function batch(action) {
    const target = !$('batch-all').checked ? { ids: [...state.checked] }
        : state.filters.q ? { filter: batchFilter(), q: state.filters.q } : { filter: batchFilter() };
    const label = `${action[0].toUpperCase()}${action.slice(1)}`;
    const spec = ACTIONS[action];
    let args = {};
    $('batch-result').textContent = '';
    $('tasks-error').textContent = '';
    if (spec.reason || spec.priority) {
        args = await confirmAction(`${label} tasks`, spec.priority ? 'The new priority and business value.'
            : 'The reason recorded in each task\'s history (optional).', spec);
        if (args === null) return;
    }
    try {
        const dry = await api.batch({ action, ...target, args, dryRun: true });
        const skipped = dry.matched - dry.wouldChange;
        const more = dry.remaining ? ` (${formatNumber(dry.remaining)} more match beyond this batch)` : '';
        const ok = await confirmAction(`${label} ${formatNumber(dry.wouldChange)} tasks`,
            `${formatNumber(dry.wouldChange)} of ${formatNumber(dry.matched)} tasks will be ${PAST[action]}`
            + `${skipped > 0 ? `; ${formatNumber(skipped)} are skipped (this action does not apply to them)` : ''}`
            + `${more}.`);
        if (ok === null) return;
        const done = await api.batch({ action, ...target, args });
        $('batch-result').textContent = `${formatNumber(done.changed)} tasks ${PAST[action]}`
            + `${done.skipped?.length ? `, ${formatNumber(done.matched - done.changed)} skipped` : ''}.`;
        state.checked.clear();
        $('batch-all').checked = false;
    } catch (error) {
        $('tasks-error').textContent = error.message;
        return;
    }
    await Promise.all([loadTasks(), refreshPanel()]);
}

export function setupTasks() {
    for (const button of $('batch').querySelectorAll('[data-batch]')) {
        button.addEventListener('click', () => batch(button.dataset.batch));
    }
    $('batch-all').addEventListener('change', showBatch);
    $('select-page').addEventListener('change', () => {
        for (const id of state.pageIds ?? []) {
            if ($('select-page').checked) state.checked.add(id); else state.checked.delete(id);
        }
        for (const box of $('task-table').tBodies[0].querySelectorAll('input[type=checkbox]')) {
            box.checked = $('select-page').checked;
        }
        showBatch();
    });
    $('filters').addEventListener('submit', (event) => {
        event.preventDefault();
        state.filters = filtersFromForm();
        state.checked.clear();
        state.cursors = [null];
        state.page = 0;
        loadTasks();
    });
    $('filters').addEventListener('reset', () => {
        state.filters = { limit: PAGE_SIZE };
        state.checked.clear();
        state.cursors = [null];
        state.page = 0;
        setTimeout(loadTasks);
    });
    $('next-page').addEventListener('click', () => { state.page += 1; loadTasks(); });
    $('first-page').addEventListener('click', () => { state.page = 0; loadTasks(); });
    $('panel-close').addEventListener('click', () => { state.selected = null; $('task-panel').hidden = true; });
    for (const button of $('task-panel').querySelectorAll('[data-action]')) {
        button.addEventListener('click', () => act(button.dataset.action));
    }
    state.filters = { limit: PAGE_SIZE };
}
