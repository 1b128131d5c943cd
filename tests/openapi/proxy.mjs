// A validating HTTP proxy for the test suites: every exchange with an iwd-sidecar's /iwd/v3 API that passes
// through it is checked against sidecar/openapi.yaml, and every violation is recorded.
//
//   IWD_OPENAPI_TOOLS=DIR node proxy.mjs SPEC PORT RECORD_DIR
//
// DIR holds the node_modules that npm ci made from this directory's package-lock.json (.tools/openapi).
//
// It is a forward proxy (curl --proxy, chromium --proxy-server): a request names its target in its
// absolute URI, so one proxy serves every sidecar a suite starts, whatever its port. Only loopback targets
// are served. Checked, per exchange under /iwd/v3:
//   - the path and method are an operation of the document (a 404 or 405 answer excepted: the suites ask
//     for unknown routes on purpose);
//   - the status is one the operation declares;
//   - the answer's media type is one the status declares (none for 204, HEAD and 304);
//   - a JSON answer matches the schema of its status;
//   - a request the sidecar accepted (2xx) matches the operation's parameters and request body: the
//     document must not refuse what the API takes. Requests the sidecar refused are the suites' bad inputs.
// An event stream (text/event-stream) is passed through as it comes; its status and media type are checked.
//
// RECORD_DIR receives exchanges.log (one line per exchange checked: "operationId status") and
// violations.log (one JSON object per line). The proxy prints "listening" once it accepts connections.
// The checks run on a worker thread, after the answer is passed on: compiling an operation's validators
// takes a while on a loaded machine, and the exchanges must not wait for it (a suite times some of them).
// GET /flush on the proxy itself (not a proxy request) answers once every exchange so far is checked.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import {createRequire} from 'node:module';
import {Worker, isMainThread, parentPort, workerData} from 'node:worker_threads';

const API_PREFIX = '/iwd/v3/';
const MAX_RECORDED_BODY = 2000; // characters of a faulty answer kept in its violation
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

const [specPath, portText, recordDir] = isMainThread ? process.argv.slice(2) : workerData;
if (!specPath || !portText || !recordDir) {
    console.error('usage: node proxy.mjs SPEC PORT RECORD_DIR');
    process.exit(2);
}

// --- the checks (the worker thread) -------------------------------------------------------------------
let api, exchangesLog, violationsLog;

async function startChecks() {
    const require = createRequire(`${process.env.IWD_OPENAPI_TOOLS}/package.json`);
    const addFormats = require('ajv-formats');
    const {OpenAPIBackend} = require('openapi-backend');
    api = new OpenAPIBackend({
        definition: path.resolve(specPath),
        strict: true,
        // the validators are compiled as operations are met; tests/openapi/run.sh lints the document
        quick: true,
        validate: true,
        // date-time, date, uuid and uri are checked as the document declares them
        customizeAjv: (ajv) => {
            addFormats(ajv, ['date-time', 'date', 'uuid', 'uri']);
            return ajv;
        },
    });
    await api.init();
    fs.mkdirSync(recordDir, {recursive: true});
    exchangesLog = fs.openSync(path.join(recordDir, 'exchanges.log'), 'a');
    violationsLog = fs.openSync(path.join(recordDir, 'violations.log'), 'a');
    parentPort.on('message', ({id, exchange, requestBody, responseBody, streamed}) => {
        try {
            check({...exchange, target: new URL(exchange.url, 'http://proxy.invalid')}, requestBody, responseBody,
                  streamed);
        } catch (e) {
            recordViolation(exchange, `the check failed: ${e.message}`);
        }
        parentPort.postMessage({checked: id});
    });
    parentPort.postMessage({ready: true});
}

function recordViolation(exchange, problem, details) {
    const entry = {method: exchange.method, url: exchange.url, status: exchange.status, problem};
    if (details !== undefined)
        entry.details = details;
    fs.writeSync(violationsLog, JSON.stringify(entry) + '\n');
}

function mediaType(value) {
    return (value || '').split(';')[0].trim().toLowerCase();
}

// The declared response of an operation for a status: exact, then "4XX", then default.
function declaredResponse(operation, status) {
    const responses = operation.responses || {};
    return responses[String(status)] || responses[`${Math.floor(status / 100)}XX`] || responses.default;
}

function queryObject(search) {
    const query = {};
    for (const [key, value] of new URLSearchParams(search)) {
        if (key in query)
            query[key] = [].concat(query[key], value);
        else
            query[key] = value;
    }
    return query;
}

// Check one exchange; streamed is true when the answer was passed through (an event stream).
function check(exchange, requestBody, responseBody, streamed) {
    const {method, target, status, headers} = exchange;
    if (!target.pathname.startsWith(API_PREFIX))
        return;
    const request = {
        method,
        path: target.pathname,
        query: queryObject(target.search),
        headers: exchange.requestHeaders,
    };
    const operation = api.matchOperation(request);
    if (!operation) {
        if (status !== 404 && status !== 405)
            recordViolation(exchange, 'no operation of the document has this method and path');
        return;
    }
    fs.writeSync(exchangesLog, `${operation.operationId} ${status}\n`);
    const response = declaredResponse(operation, status);
    if (!response) {
        recordViolation(exchange, `status ${status} is not declared by ${operation.operationId}`,
                        responseBody.slice(0, MAX_RECORDED_BODY));
        return;
    }
    const declaredTypes = Object.keys(response.content || {});
    const type = mediaType(headers['content-type']);
    const bodyless = status === 204 || status === 304 || method === 'HEAD';
    if (!bodyless && declaredTypes.length > 0 && !declaredTypes.includes(type)) {
        recordViolation(exchange, `media type "${type}" is not declared for ${operation.operationId} ${status}`);
        return;
    }
    if (!bodyless && declaredTypes.length === 0 && responseBody.length > 0) {
        recordViolation(exchange, `${operation.operationId} ${status} declares no body, the answer has one`);
        return;
    }
    if (!bodyless && !streamed && type === 'application/json') {
        let document;
        try {
            document = JSON.parse(responseBody);
        } catch (e) {
            recordViolation(exchange, `the answer is not JSON: ${e.message}`, responseBody.slice(0, MAX_RECORDED_BODY));
            return;
        }
        const result = api.validator.validateResponse(document, operation, status);
        if (result.errors && result.errors.length > 0)
            recordViolation(exchange, `the answer does not match ${operation.operationId} ${status}`,
                            {errors: result.errors, body: responseBody.slice(0, MAX_RECORDED_BODY)});
    }
    if (status >= 200 && status < 300) {
        let body;
        if (requestBody.length > 0) {
            try {
                body = JSON.parse(requestBody);
            } catch {
                body = requestBody;
            }
        }
        const result = api.validator.validateRequest({...request, body}, operation);
        if (result.errors && result.errors.length > 0)
            recordViolation(exchange, `the sidecar accepted a request the document refuses (${operation.operationId})`,
                            {errors: result.errors, body: requestBody.slice(0, MAX_RECORDED_BODY)});
    }
}

// Headers that belong to one connection, not passed on.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer',
                            'transfer-encoding', 'upgrade']);

function forwardHeaders(headers) {
    const out = {};
    for (const [name, value] of Object.entries(headers))
        if (!HOP_BY_HOP.has(name))
            out[name] = value;
    return out;
}

// --- the proxy (the main thread) ----------------------------------------------------------------------
let checker, sent = 0, checked = 0;
const flushes = [];

function submit(exchange, requestBody, responseBody, streamed) {
    const {target, ...plain} = exchange;
    checker.postMessage({id: ++sent, exchange: {...plain, url: target.pathname + target.search}, requestBody,
                         responseBody, streamed});
}

// Answer the flushes waiting for the exchanges checked so far.
function answerFlushes() {
    while (flushes.length > 0 && flushes[0].upTo <= checked)
        flushes.shift().response.writeHead(200, {'content-type': 'text/plain'}).end(`${checked} checked\n`);
}

function serve(clientRequest, clientResponse) {
    if (clientRequest.url === '/flush') {
        flushes.push({upTo: sent, response: clientResponse});
        answerFlushes();
        return;
    }
    let target;
    try {
        target = new URL(clientRequest.url);
    } catch {
        clientResponse.writeHead(400, {'content-type': 'text/plain'}).end('a proxy request names an absolute URL\n');
        return;
    }
    if (target.protocol !== 'http:' || !LOOPBACK.has(target.hostname)) {
        clientResponse.writeHead(403, {'content-type': 'text/plain'}).end('only loopback http targets\n');
        return;
    }
    const requestChunks = [];
    clientRequest.on('data', (chunk) => requestChunks.push(chunk));
    clientRequest.on('end', () => {
        const requestBody = Buffer.concat(requestChunks);
        const upstream = http.request({
            host: target.hostname.replace(/^\[|\]$/g, ''),
            port: target.port || 80,
            method: clientRequest.method,
            path: target.pathname + target.search,
            headers: {...forwardHeaders(clientRequest.headers), 'content-length': String(requestBody.length)},
            agent: false,
        }, (upstreamResponse) => {
            const exchange = {
                method: clientRequest.method,
                url: target.pathname + target.search,
                target,
                status: upstreamResponse.statusCode,
                headers: upstreamResponse.headers,
                requestHeaders: clientRequest.headers,
            };
            const headers = forwardHeaders(upstreamResponse.headers);
            if (mediaType(upstreamResponse.headers['content-type']) === 'text/event-stream') {
                clientResponse.writeHead(upstreamResponse.statusCode, headers);
                clientResponse.flushHeaders();
                upstreamResponse.pipe(clientResponse);
                submit(exchange, requestBody.toString('utf8'), '', true);
                return;
            }
            const chunks = [];
            upstreamResponse.on('data', (chunk) => chunks.push(chunk));
            upstreamResponse.on('end', () => {
                const body = Buffer.concat(chunks);
                delete headers['content-length'];
                if (clientRequest.method !== 'HEAD' && upstreamResponse.statusCode !== 204 &&
                    upstreamResponse.statusCode !== 304)
                    headers['content-length'] = String(body.length);
                else if (upstreamResponse.headers['content-length'] !== undefined)
                    headers['content-length'] = upstreamResponse.headers['content-length'];
                clientResponse.writeHead(upstreamResponse.statusCode, headers);
                clientResponse.end(body);
                submit(exchange, requestBody.toString('utf8'), body.toString('utf8'), false);
            });
            upstreamResponse.on('error', () => clientResponse.destroy());
        });
        upstream.on('error', (e) => {
            if (!clientResponse.headersSent)
                clientResponse.writeHead(502, {'content-type': 'text/plain'});
            clientResponse.end(`proxy: ${e.message}\n`);
        });
        clientResponse.on('close', () => {
            if (!clientResponse.writableFinished)
                upstream.destroy();
        });
        upstream.end(requestBody);
    });
}

if (isMainThread) {
    checker = new Worker(new URL(import.meta.url), {workerData: [specPath, portText, recordDir]});
    checker.on('error', (e) => {
        console.error(`the checks stopped: ${e.stack ?? e}`);
        process.exit(1);
    });
    checker.on('message', (message) => {
        if (message.checked !== undefined) {
            checked++;
            answerFlushes();
            return;
        }
        const server = http.createServer(serve);
        server.keepAliveTimeout = 5000;
        server.listen(Number(portText), '127.0.0.1', () => console.log('listening'));
    });
    for (const signal of ['SIGTERM', 'SIGINT'])
        process.on(signal, () => process.exit(0));
} else {
    await startChecks();
}
