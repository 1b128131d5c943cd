// The REST API of iwd (/iwd/v3) as the page speaks it: every call sends the signed-in key in x-api-key,
// and a refusal becomes an ApiError carrying the API's own message ({"status":{"code","message"}}).
const PREFIX = '/iwd/v3';
const KEY_ITEM = 'iwd.apiKey';

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
};

// A query string from an object, leaving out empty values.
export function query(params) {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
        if (value !== undefined && value !== null && value !== '') q.set(name, value);
    }
    const text = q.toString();
    return text ? `?${text}` : '';
}

// One call: the parsed JSON answer (null for 204), or an ApiError.
export async function call(method, path, body, options = {}) {
    const headers = { 'x-api-key': session.key ?? '', accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(PREFIX + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: options.signal,
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

const enc = encodeURIComponent;

export const api = {
    tasks: (filters) => call('GET', `/tasks${query(filters)}`),
    task: (id) => call('GET', `/tasks/${enc(id)}`),
    history: (id) => call('GET', `/tasks/${enc(id)}/history`),
    act: (id, action, body) => call('POST', `/tasks/${enc(id)}/${action}`, body ?? {}),
    batch: (body) => call('POST', '/tasks/batch', body),
    agents: () => call('GET', '/agents'),
    next: (agent, reserveSeconds) => call('POST', `/agents/${enc(agent)}/next`, { reserveSeconds }),
    list: (resource) => call('GET', `/${resource}`),
    queueStats: () => call('GET', '/queue/stats'),
    events: (after, wait, signal) => call('GET', `/events${query({ after, wait, limit: 1000 })}`, undefined,
        { signal }),
};
