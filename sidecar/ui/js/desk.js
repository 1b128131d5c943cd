// The agent desktop: get the next task, accept it before its reservation ends (a live countdown),
// complete it, decline it (back to the queue, not offered to this agent again for a while) or reject it
// (closed for everyone), with a reason.
import { api } from './api.js';
import { fillFields, formatNumber, formatTime } from './format.js';

const $ = (id) => document.getElementById(id);
let current = null;
let timer = null;

function showCountdown() {
    const until = current?.reservedUntil ? new Date(current.reservedUntil).getTime() : NaN;
    if (current?.acceptedAt) {
        $('desk-countdown').textContent = 'Accepted: working on it';
        return;
    }
    if (!current || current.status !== 'assigned' || Number.isNaN(until)) {
        $('desk-countdown').textContent = '';
        return;
    }
    const left = Math.max(0, Math.round((until - Date.now()) / 1000));
    const minutes = Math.floor(left / 60);
    const seconds = String(left % 60).padStart(2, '0');
    $('desk-countdown').textContent = left > 0 ? `Reservation ends in ${minutes}:${seconds}` : 'Reservation ended';
}

function show(task) {
    current = task;
    clearInterval(timer);
    $('desk-task').hidden = task === null;
    if (task === null) return;
    $('desk-task-title').textContent = `Task ${task.id}${task.subject ? `: ${task.subject}` : ''}`;
    fillFields($('desk-fields'), [
        ['Status', task.status], ['External ID', task.externalId], ['Category', task.category], ['Queue', task.queue],
        ['Priority', formatNumber(task.priority)], ['Business value', formatNumber(task.businessValue)],
        ['Due', formatTime(task.dueAt)], ['Description', task.description],
    ]);
    const open = task.status === 'assigned';
    $('desk-accept').disabled = !open || Boolean(task.acceptedAt);
    for (const id of ['desk-complete', 'desk-decline', 'desk-reject']) $(id).disabled = !open;
    showCountdown();
    timer = setInterval(showCountdown, 1000);
}

async function run(step, message) {
    $('desk-error').textContent = '';
    $('desk-message').textContent = '';
    try {
        await step();
        if (message) $('desk-message').textContent = message;
    } catch (error) {
        $('desk-error').textContent = error.message;
    }
}

const agent = () => $('desk-agent').value.trim();

export function setupDesk() {
    $('desk-form').addEventListener('submit', (event) => {
        event.preventDefault();
        run(async () => {
            const task = await api.next(agent(), Number($('desk-reserve').value) || undefined);
            show(task);
            if (task === null) $('desk-message').textContent = 'No task fits this agent now.';
        });
    });
    $('desk-accept').addEventListener('click', () => run(async () => {
        show(await api.act(current.id, 'accept', { agent: agent() }));
    }, 'Accepted.'));
    $('desk-complete').addEventListener('click', () => run(async () => {
        await api.act(current.id, 'complete', { agent: agent() });
        show(null);
    }, 'Completed.'));
    $('desk-decline').addEventListener('click', () => run(async () => {
        const reason = $('desk-reason').value.trim();
        await api.act(current.id, 'decline', reason ? { agent: agent(), reason } : { agent: agent() });
        show(null);
    }, 'Declined: the task is back in the queue.'));
    $('desk-reject').addEventListener('click', () => run(async () => {
        const reason = $('desk-reason').value.trim();
        await api.act(current.id, 'reject', reason ? { reason } : {});
        show(null);
    }, 'Rejected.'));
}
