// The REST API of iwd (/iwd/v3) as the page speaks it: every call is an operation of sidecar/openapi.yaml
// (OP, the table generated from it), sends the signed-in key in x-api-key and, to an operation that records
// who acted, the signed-in user's name in x-iwd-user; a refusal becomes an ApiError carrying the API's own
// message ({"status":{"code","message"}}).
import { OP } from './operations.js';

const PREFIX = '/iwd/v3';
const KEY_ITEM = 'iwd.apiKey';
const USER_ITEM = 'iwd.user';
// What x-iwd-user may hold (as the sidecar checks it): 1 to 64 printable ASCII characters other than '/', no
// space at either end.
const USER_NAME = /^[!-.0-~](?:[ -.0-~]{0,62}[!-.0-~])?$/;

export class ApiError extends Error {
    constructor(status, message) {
        super(message);
        this.status = status;
    }
}

export const session = {
    get key() { return sessionStorage.getItem(KEY_ITEM); },
    set key(value) {
        if (value) sessionStorage.setItem(KEY_ITEM, value); else sessionStorage.removeItem(KEY_ITEM);
    },
    // the signed-in user's name, recorded as who did an action (none: the key's tenant)
    get user() { return sessionStorage.getItem(USER_ITEM); },
    set user(value) {
        if (value) sessionStorage.setItem(USER_ITEM, value); else sessionStorage.removeItem(USER_ITEM);
    },
};

// Why a user name cannot be sent in x-iwd-user, or null when it can (an empty name is none).
export function userNameProblem(name) {
    if (name === '' || USER_NAME.test(name)) return null;
    if (name.length > 64) return 'Your name is longer than 64 characters.';
    return 'Your name may hold letters, digits, spaces and signs (ASCII) other than "/", no space at either end.';
}

// A query string from an object, leaving out empty values.
export function query(params) {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
        if (value !== undefined && value !== null && value !== '') q.set(name, value);
    }
    const text = q.toString();
    return text ? `?${text}` : '';
}

// The path of an operation (OP, generated from sidecar/openapi.yaml) with its path parameters filled in.
export function pathOf(operation, params = {}) {
    return operation.path.replace(/\{(\w+)\}/g, (_, name) => {
        if (params[name] === undefined || params[name] === null || params[name] === '') {
            throw new ApiError(0, `${operation.id}: the ${name} is missing`);
        }
        return encodeURIComponent(params[name]);
    });
}

// One call of an operation: the parsed JSON answer (null for 204), or an ApiError. The body is sent only
// to an operation that takes one.
export async function call(operation, params, body, options = {}) {
    const headers = { 'x-api-key': session.key ?? '', accept: 'application/json' };
    if (operation.user && session.user) headers['x-iwd-user'] = session.user;
    const sent = operation.body !== 'none' && body !== undefined;
    if (sent) headers['content-type'] = 'application/json';
    const response = await fetch(PREFIX + pathOf(operation, params) + query(options.query ?? {}), {
        method: operation.method, headers, body: sent ? JSON.stringify(body) : undefined, signal: options.signal,
    });
    if (response.status === 204) return null;
    const text = await response.text();
    let document = null;
    try {
        document = text ? JSON.parse(text) : null;
    } catch {
        throw new ApiError(response.status, `the server answered ${response.status} without JSON`);
    }
    if (!response.ok) {
        const message = document?.status?.message ?? `the server answered ${response.status}`;
        throw new ApiError(response.status, message);
    }
    return document;
}

// The lifecycle actions of a task, by the name the page gives them.
const ACTIONS = {
    hold: OP.holdTask, resume: OP.resumeTask, cancel: OP.cancelTask, complete: OP.completeTask,
    reject: OP.rejectTask, restart: OP.restartTask, accept: OP.acceptTask, decline: OP.declineTask,
    reprioritize: OP.reprioritizeTask,
};

// The configuration resources: list, create or replace, delete (a rule's path also names its kind).
export const CONFIGURATION_OPERATIONS = {
    departments: { list: OP.listDepartments, put: OP.putDepartment, delete: OP.deleteDepartment },
    processes: { list: OP.listProcesses, put: OP.putProcess, delete: OP.deleteProcess },
    categories: { list: OP.listCategories, put: OP.putCategory, delete: OP.deleteCategory },
    rules: { list: OP.listRules, put: OP.putRule, delete: OP.deleteRule },
    calendars: { list: OP.listCalendars, put: OP.putCalendar, delete: OP.deleteCalendar },
};

export const api = {
    key: () => call(OP.getKey),
    tasks: (filters) => call(OP.listTasks, {}, undefined, { query: filters }),
    task: (id) => call(OP.getTask, { id }),
    history: (id) => call(OP.getTaskHistory, { id }),
    act: (id, action, body) => call(ACTIONS[action], { id }, body ?? {}),
    batch: (body) => call(OP.batchTaskAction, {}, body),
    agents: () => call(OP.listAgents),
    next: (agent, reserveSeconds) => call(OP.nextTask, { id: agent }, { reserveSeconds }),
    list: (resource) => call(CONFIGURATION_OPERATIONS[resource].list),
    save: (resource, key, definition) => call(CONFIGURATION_OPERATIONS[resource].put, key, definition),
    remove: (resource, key) => call(CONFIGURATION_OPERATIONS[resource].delete, key),
    queueStats: () => call(OP.getQueueStats),
    reportIntervals: (filters) => call(OP.getReportIntervals, {}, undefined, { query: filters }),
    categoryStats: () => call(OP.getCategoryStats),
    events: (after, wait, signal) => call(OP.getEvents, {}, undefined, { query: { after, wait, limit: 1000 }, signal }),
};
