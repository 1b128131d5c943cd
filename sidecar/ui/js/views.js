// The read views: agents, the configuration, and the dashboard (queue figures and backlog by queue as
// an SVG bar chart).
import { api } from './api.js';
import { el, formatNumber } from './format.js';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';

export async function loadAgents() {
    $('agents-error').textContent = '';
    try {
        const agents = await api.agents();
        $('agent-table').tBodies[0].replaceChildren(...(agents ?? []).map((agent) => el('tr', {},
            el('td', {}, agent.id), el('td', {}, agent.name ?? ''), el('td', {}, agent.state ?? ''),
            el('td', {}, Object.entries(agent.skills ?? {}).map(([skill, level]) => `${skill} ${level}`).join(', ')),
            el('td', { class: 'num' }, formatNumber(agent.capacity)))));
    } catch (error) {
        $('agents-error').textContent = error.message;
    }
}

const CONFIGURATION = [['departments', 'Departments'], ['processes', 'Processes'], ['categories', 'Categories'],
    ['rules', 'Rules'], ['calendars', 'Calendars']];

export async function loadConfiguration() {
    $('configuration-error').textContent = '';
    const groups = [];
    for (const [resource, title] of CONFIGURATION) {
        try {
            const items = await api.list(resource);
            const list = Array.isArray(items) ? items : Object.values(items ?? {}).flat();
            groups.push(el('section', { class: 'config-group', 'aria-label': title },
                el('h3', {}, `${title} (${formatNumber(list.length)})`),
                el('pre', { tabindex: '0' }, JSON.stringify(list, null, 2))));
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

export async function loadDashboard() {
    $('dashboard-error').textContent = '';
    try {
        const stats = await api.queueStats();
        const byQueue = new Map();
        let oldest = 0, queued = 0, assigned = 0, held = 0;
        for (const q of stats.queues ?? []) {
            const name = q.queue ?? '(none)';
            byQueue.set(name, (byQueue.get(name) ?? 0) + q.queued);
            queued += q.queued; assigned += q.assigned; held += q.held;
            oldest = Math.max(oldest, q.oldestQueuedSeconds ?? 0);
        }
        const figure = (title, value) => el('div', { class: 'figure' }, el('span', {}, title), el('strong', {}, value));
        $('dashboard-figures').replaceChildren(figure('Queued', formatNumber(queued)),
            figure('Assigned', formatNumber(assigned)), figure('Held', formatNumber(held)),
            figure('Oldest queued (minutes)', formatNumber(Math.floor(oldest / 60))),
            figure('Claims', formatNumber(stats.claims)),
            figure('Reservation timeouts', formatNumber(stats.reservationTimeouts)));
        const rows = [...byQueue].map(([queue, value]) => ({ label: queue, value })).sort((a, b) => b.value - a.value);
        $('backlog-chart').replaceChildren(barChart(rows));
    } catch (error) {
        $('dashboard-error').textContent = error.message;
    }
}
