// The other views: agents, the configuration (viewed and edited, the API's refusal shown under the
// definition), and the dashboard (queue figures, backlog by queue, the Data Mart's entered / completed and
// service level per 15 minutes as SVG charts, and the open work per category).
import { api } from './api.js';
import { confirmAction } from './confirm.js';
import { el, formatNumber } from './format.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

// Pages of assigned tasks read for the agents' load: 20 of 1,000, beyond which the load shows a "+".
const LOAD_PAGES = 20;
const LOAD_PAGE_SIZE = 1000;

// The tasks assigned to each agent, by media type: Map agent -> Map mediaType -> count; complete is false
// when there were more than LOAD_PAGES pages.
async function assignedLoad() {
    const load = new Map();
    let cursor;
    for (let n = 0; n < LOAD_PAGES; n++) {
        const page = await api.tasks({ status: 'assigned', limit: LOAD_PAGE_SIZE, cursor });
        for (const task of page.tasks) {
            const mine = load.get(task.assignedTo) ?? new Map();
            mine.set(task.mediaType, (mine.get(task.mediaType) ?? 0) + 1);
            load.set(task.assignedTo, mine);
        }
        cursor = page.nextCursor;
        if (!cursor) return { load, complete: true };
    }
    return { load, complete: false };
}

// "workitem 1 of 2, email 0 of 3": each media type of the agent's capacity, and any it holds beyond it.
function loadText(agent, load, complete) {
    const held = load.get(agent.id) ?? new Map();
    const types = new Set([...Object.keys(agent.capacity ?? {}), ...held.keys()]);
    return [...types].map((mediaType) => `${mediaType} ${formatNumber(held.get(mediaType) ?? 0)}${complete ? '' : '+'}`
        + ` of ${formatNumber(agent.capacity?.[mediaType] ?? 0)}`).join(', ');
}

export async function loadAgents() {
    $('agents-error').textContent = '';
    try {
        const [agents, { load, complete }] = await Promise.all([api.agents(), assignedLoad()]);
        $('agent-table').tBodies[0].replaceChildren(...(agents ?? []).map((agent) => el('tr', {},
            el('td', {}, agent.id), el('td', {}, agent.name ?? ''), el('td', {}, agent.state ?? ''),
            el('td', {}, Object.entries(agent.skills ?? {}).map(([skill, level]) => `${skill} ${level}`).join(', ')),
            el('td', {}, loadText(agent, load, complete)))));
    } catch (error) {
        $('agents-error').textContent = error.message;
    }
}

// Each configuration resource: its path, title, and the name of one of its items.
const CONFIGURATION = [['departments', 'Departments', 'department'], ['processes', 'Processes', 'process'],
    ['categories', 'Categories', 'category'], ['rules', 'Rules', 'rule'], ['calendars', 'Calendars', 'calendar']];

const editing = { resource: null, original: null };

// The item's path parameters: a rule's kind and name, the name otherwise.
function itemKey(resource, kind, name) {
    return resource === 'rules' ? { kind, name } : { name };
}

function openEditor(resource, singular, item) {
    const isRule = resource === 'rules';
    const definition = { ...(item ?? {}) };
    delete definition.name;
    if (isRule) delete definition.kind;
    editing.resource = resource;
    editing.original = item;
    $('config-editor').hidden = false;
    $('config-editor-title').textContent = item ? `Edit ${singular} ${item.name}` : `New ${singular}`;
    $('config-kind').hidden = !isRule;
    $('config-kind-label').hidden = !isRule;
    $('config-kind').value = item?.kind ?? '';
    $('config-name').value = item?.name ?? '';
    $('config-name').readOnly = Boolean(item);
    $('config-kind').readOnly = Boolean(item);
    $('config-definition').value = JSON.stringify(definition, null, 2);
    $('config-delete').hidden = !item;
    showEditorError('');
    (item ? $('config-definition') : isRule ? $('config-kind') : $('config-name')).focus();
}

function showEditorError(message) {
    $('config-editor-error').textContent = message;
    $('config-definition').setAttribute('aria-invalid', String(message !== ''));
}

async function saveItem(event) {
    event.preventDefault();
    let definition;
    try {
        definition = JSON.parse($('config-definition').value || '{}');
    } catch (error) {
        showEditorError(`The definition is not valid JSON: ${error.message}`);
        return;
    }
    if (definition === null || typeof definition !== 'object' || Array.isArray(definition)) {
        showEditorError('The definition must be a JSON object.');
        return;
    }
    const name = $('config-name').value.trim();
    try {
        await api.save(editing.resource, itemKey(editing.resource, $('config-kind').value.trim(), name), definition);
    } catch (error) {
        showEditorError(error.message);
        return;
    }
    $('config-editor').hidden = true;
    $('configuration-message').textContent = `Saved ${name}.`;
    await loadConfiguration();
}

async function deleteItem() {
    const item = editing.original;
    if (await confirmAction(`Delete ${item.name}`, `Delete ${item.name}? Tasks keep what it gave them.`) === null) {
        return;
    }
    try {
        await api.remove(editing.resource, itemKey(editing.resource, item.kind, item.name));
    } catch (error) {
        showEditorError(error.message);
        return;
    }
    $('config-editor').hidden = true;
    $('configuration-message').textContent = `Deleted ${item.name}.`;
    await loadConfiguration();
}

export function setupConfiguration() {
    $('config-editor').addEventListener('submit', saveItem);
    $('config-delete').addEventListener('click', deleteItem);
    $('config-close').addEventListener('click', () => { $('config-editor').hidden = true; });
}

function summary(item) {
    const rest = { ...item };
    delete rest.name;
    delete rest.kind;
    const text = JSON.stringify(rest);
    return text.length > 80 ? `${text.slice(0, 79)}…` : text;
}

const th = (content) => el('th', { scope: 'col' }, content);

export async function loadConfiguration() {
    $('configuration-error').textContent = '';
    const groups = [];
    for (const [resource, title, singular] of CONFIGURATION) {
        try {
            const items = await api.list(resource);
            const list = items ?? [];
            const rows = list.map((item) => {
                const edit = el('button', { type: 'button', class: 'write' }, 'Edit');
                edit.setAttribute('aria-label', `Edit ${singular} ${item.kind ? `${item.kind} ` : ''}${item.name}`);
                edit.addEventListener('click', () => openEditor(resource, singular, item));
                return el('tr', {}, resource === 'rules' ? el('td', {}, item.kind) : null, el('td', {}, item.name),
                    el('td', {}, summary(item)), el('td', {}, edit));
            });
            const add = el('button', { type: 'button', class: 'write' }, `New ${singular}`);
            add.addEventListener('click', () => openEditor(resource, singular, null));
            groups.push(el('section', { class: 'config-group', 'aria-label': title },
                el('h3', {}, `${title} (${formatNumber(list.length)})`),
                el('table', {}, el('thead', {}, el('tr', {}, resource === 'rules' ? th('Kind') : null, th('Name'),
                    th('Definition'), th(el('span', { class: 'visually-hidden' }, 'Edit')))),
                el('tbody', {}, ...rows)), add));
        } catch (error) {
            $('configuration-error').textContent = `${title}: ${error.message}`;
        }
    }
    $('configuration').replaceChildren(...groups);
}

function svg(tag, attributes, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    node.append(...children);
    return node;
}

// Horizontal bars, one per queue: plain SVG, as simple bars need no charting library's weight.
function barChart(rows) {
    const width = 640, bar = 22, gap = 6, label = 160, max = Math.max(1, ...rows.map((r) => r.value));
    const height = Math.max(1, rows.length) * (bar + gap) + gap;
    const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
        'aria-label': 'Backlog by queue' });
    rows.forEach((r, i) => {
        const y = gap + i * (bar + gap);
        const w = Math.round((width - label - 80) * r.value / max);
        chart.append(svg('text', { x: 4, y: y + bar * 0.7 }, r.label),
            svg('rect', { class: 'bar', x: label, y, width: Math.max(w, 1), height: bar }, svg('title', {}, r.label)),
            svg('text', { x: label + w + 6, y: y + bar * 0.7 }, formatNumber(r.value)));
    });
    return chart;
}

// An interval's start in the browser's zone, as precise as its level (the charts' axis and titles).
const clocks = {
    '15min': new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' }),
    hour: new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' }),
    day: new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' }),
};
const percent = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

// Columns over time on a fixed axis: the range [from, to) in slots of step milliseconds (times shown by clock),
// each interval's
// columns at its slot (one per series [{key, label, className}]), the axis labelled every few slots, a
// dashed line at target when given; max is the top of the scale (the largest value when absent). Each
// column has its title (time, series, value) for a pointer or a screen reader; the chart's label says
// what it shows.
function columnChart(intervals, series, label, { from, to, step, clock, max, target, format = formatNumber }) {
    const width = 720, height = 200, left = 44, right = 8, bottom = 22, top = 20;
    const plot = { w: width - left - right, h: height - bottom - top };
    const first = Math.floor(from.getTime() / step) * step;
    const slots = Math.max(1, Math.ceil((to.getTime() - first) / step));
    const scale = max ?? Math.max(1, ...intervals.flatMap((bucket) => series.map((s) => bucket[s.key] ?? 0)));
    const slot = plot.w / slots, bar = Math.max(1, (slot - 1) / series.length);
    const y = (value) => top + plot.h - plot.h * value / scale;
    const chart = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': label });
    chart.append(svg('line', { class: 'axis', x1: left, x2: width - right, y1: y(0), y2: y(0) }),
        svg('text', { x: 2, y: top + 4 }, format(scale)), svg('text', { x: 2, y: y(0) }, format(0)));
    const every = Math.ceil(slots / 6);
    for (let i = 0; i < slots; i += every) {
        chart.append(svg('text', { x: left + i * slot, y: height - 6 }, clock.format(new Date(first + i * step))));
    }
    for (const bucket of intervals) {
        const at = new Date(bucket.intervalStart);
        const i = Math.floor((at.getTime() - first) / step);
        if (i < 0 || i >= slots) continue;
        series.forEach((s, k) => {
            const value = bucket[s.key];
            if (value === null || value === undefined) return;
            chart.append(svg('rect', { class: `bar ${s.className}`, x: left + i * slot + k * bar, y: y(value),
                width: bar, height: Math.max(y(0) - y(value), value > 0 ? 1 : 0) },
            svg('title', {}, `${clock.format(at)} ${s.label}: ${format(value)}`)));
        });
    }
    if (target !== undefined) {
        chart.append(svg('line', { class: 'target', x1: left, x2: width - right, y1: y(target), y2: y(target) }));
    }
    series.forEach((s, k) => {
        const x = width - right - (series.length - k) * 110;
        chart.append(svg('rect', { class: `bar ${s.className}`, x, y: 4, width: 10, height: 10 }),
            svg('text', { class: 'legend', x: x + 14, y: 13 }, s.label));
    });
    return chart;
}

const FLOWS = [{ key: 'entered', label: 'Entered', className: 'entered' },
    { key: 'completed', label: 'Completed', className: 'completed' }];
const SERVICE_LEVEL = [{ key: 'serviceLevelPct', label: 'Service level %', className: 'service-level' }];
// the service level's usual target in contact centres, drawn for reference
const SERVICE_LEVEL_TARGET = 80;
const HOUR_MS = 60 * 60 * 1000;
// The dashboard's periods: how far back, at which level of the report, the level's length.
const PERIODS = {
    day: { hours: 24, level: '15min', step: HOUR_MS / 4, per: '15 minutes' },
    week: { hours: 7 * 24, level: 'hour', step: HOUR_MS, per: 'hour' },
    month: { hours: 30 * 24, level: 'day', step: 24 * HOUR_MS, per: 'day' },
};

// The Data Mart's intervals of the chosen period for the chosen queue (a named one: tasks without a queue
// are not a filter of the report), drawn as the flow and service-level charts.
async function loadIntervals(chosen) {
    const queue = chosen === '' ? null : JSON.parse(chosen);
    if (chosen !== '' && queue === null) {
        const hint = () => el('p', { class: 'hint' }, 'The Data Mart\'s charts are by named queue or all queues.');
        $('flow-chart').replaceChildren(hint());
        $('service-level-chart').replaceChildren(hint());
        return;
    }
    const period = PERIODS[$('dashboard-period').value] ?? PERIODS.day;
    const now = Date.now();
    const report = await api.reportIntervals({ level: period.level, queue: queue ?? undefined,
        from: new Date(now - period.hours * HOUR_MS).toISOString(), to: new Date(now).toISOString() });
    const intervals = report.intervals ?? [];
    const axis = { from: new Date(report.from), to: new Date(report.to), step: period.step,
        clock: clocks[period.level] };
    $('flow-chart').replaceChildren(intervals.length === 0 ? el('p', { class: 'hint' }, 'No interval yet.')
        : columnChart(intervals, FLOWS, `Entered and completed tasks per ${period.per}`, axis));
    const offered = intervals.filter((bucket) => bucket.offered > 0);
    $('service-level-chart').replaceChildren(offered.length === 0 ? el('p', { class: 'hint' }, 'No task offered yet.')
        : columnChart(offered, SERVICE_LEVEL, `Service level per ${period.per}, in percent`,
            { ...axis, max: 100, target: SERVICE_LEVEL_TARGET, format: (v) => `${percent.format(v)} %` }));
}

// The open work per category, with today's service level against each category's threshold.
async function loadCategories() {
    const byCategory = await api.categoryStats();
    const num = (value) => el('td', { class: 'num' }, value);
    $('category-table').tBodies[0].replaceChildren(...(byCategory.categories ?? []).map((categoryWork) => el('tr', {},
        el('td', {}, categoryWork.category ?? '(none)'), num(formatNumber(categoryWork.queued)),
        num(formatNumber(categoryWork.assigned)), num(formatNumber(categoryWork.held)),
        num(formatNumber(categoryWork.overdue)), num(formatNumber(Math.floor(categoryWork.oldestQueuedSeconds / 60))),
        num(formatNumber(categoryWork.serviceLevelSeconds)),
        num(categoryWork.serviceLevelPct === null ? '–' : `${percent.format(categoryWork.serviceLevelPct)} %`
            + ` of ${formatNumber(categoryWork.offered)}`))));
}

// The dashboard's queue choice: every queue of the statistics, the choice kept (a queue's value is its
// name in JSON, so that tasks without a queue, null, are one choice too).
function showQueueChoice(queues) {
    const select = $('dashboard-queue');
    const chosen = select.value;
    const values = [...new Set(queues.map((queue) => JSON.stringify(queue.queue)))].sort();
    select.replaceChildren(el('option', { value: '' }, 'All queues'),
        ...values.map((value) => el('option', { value }, JSON.parse(value) ?? '(none)')));
    select.value = values.includes(chosen) ? chosen : '';
}

export function setupDashboard() {
    $('dashboard-queue').addEventListener('change', loadDashboard);
    $('dashboard-period').addEventListener('change', loadDashboard);
    $('dashboard-filter').addEventListener('submit', (event) => event.preventDefault());
}

export async function loadDashboard() {
    $('dashboard-error').textContent = '';
    try {
        const stats = await api.queueStats();
        showQueueChoice(stats.queues ?? []);
        const chosen = $('dashboard-queue').value;
        const byQueue = new Map();
        let oldest = 0, queued = 0, assigned = 0, held = 0;
        for (const queue of stats.queues ?? []) {
            if (chosen !== '' && JSON.stringify(queue.queue) !== chosen) continue;
            const name = queue.queue ?? '(none)';
            byQueue.set(name, (byQueue.get(name) ?? 0) + queue.queued);
            queued += queue.queued; assigned += queue.assigned; held += queue.held;
            oldest = Math.max(oldest, queue.oldestQueuedSeconds ?? 0);
        }
        const figure = (title, value) => el('div', { class: 'figure' }, el('span', {}, title), el('strong', {}, value));
        $('dashboard-figures').replaceChildren(figure('Queued', formatNumber(queued)),
            figure('Assigned', formatNumber(assigned)), figure('Held', formatNumber(held)),
            figure('Oldest queued (minutes)', formatNumber(Math.floor(oldest / 60))),
            figure('Claims', formatNumber(stats.claims)),
            figure('Reservation timeouts', formatNumber(stats.reservationTimeouts)));
        const rows = [...byQueue].map(([queue, value]) => ({ label: queue, value })).sort((a, b) => b.value - a.value);
        $('backlog-chart').replaceChildren(barChart(rows));
        await Promise.all([loadIntervals(chosen), loadCategories()]);
    } catch (error) {
        $('dashboard-error').textContent = error.message;
    }
}
