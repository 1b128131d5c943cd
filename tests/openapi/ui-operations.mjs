// The page's operation table, generated from the API document so that the two cannot drift:
//
//   IWD_OPENAPI_TOOLS=.tools/openapi node tests/openapi/ui-operations.mjs >sidecar/ui/js/operations.js
//
// The page's modules (sidecar/ui/js/*.js) name every call they make as OP.<operationId>; this writes, for
// each operationId they name, its method, its path (under /iwd/v3), whether it takes a body and whether it
// takes the acting user's header (x-iwd-user), read from sidecar/openapi.yaml. It fails, naming the module,
// when a module names an operation the document lacks.
// tests/openapi/run.sh checks that the committed table is what this writes from the current document.
import fs from 'node:fs';
import path from 'node:path';
import {createRequire} from 'node:module';
import {fileURLToPath} from 'node:url';

const require = createRequire(`${process.env.IWD_OPENAPI_TOOLS}/package.json`);
const yaml = require('js-yaml');

const top = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const uiDir = path.join(top, 'sidecar/ui/js');
const PREFIX = '/iwd/v3';
const METHODS = ['get', 'put', 'post', 'patch', 'delete'];
const USER_HEADER = 'x-iwd-user';

const document = yaml.load(fs.readFileSync(path.join(top, 'sidecar/openapi.yaml'), 'utf8'));
const operations = new Map();
for (const [route, item] of Object.entries(document.paths))
    for (const method of METHODS)
        if (item[method]?.operationId)
            operations.set(item[method].operationId, {method: method.toUpperCase(), route, operation: item[method]});

const named = new Map(); // operationId -> the first module naming it
let unknown = 0;
for (const file of fs.readdirSync(uiDir).filter((f) => f.endsWith('.js') && f !== 'operations.js').sort())
    for (const [, id] of fs.readFileSync(path.join(uiDir, file), 'utf8').matchAll(/\bOP\.([A-Za-z_$][\w$]*)/g)) {
        if (!operations.has(id)) {
            console.error(`sidecar/ui/js/${file}: OP.${id} is no operationId of sidecar/openapi.yaml`);
            unknown++;
        }
        if (!named.has(id))
            named.set(id, file);
    }
if (unknown > 0)
    process.exit(1);

// A parameter of an operation, its $ref (to #/components/parameters/...) followed.
function parameter(p) {
    return p.$ref ? p.$ref.split('/').slice(1).reduce((node, name) => node[name], document) : p;
}

const lines = [
    '// Generated from sidecar/openapi.yaml by tests/openapi/ui-operations.mjs: do not edit. The operations the',
    '// page\'s modules name (OP.<operationId>): method, path under /iwd/v3, whether a body is sent, and whether',
    `// the signed-in user is named in ${USER_HEADER}.`,
    'const TABLE = {',
];
for (const id of [...named.keys()].sort()) {
    const {method, route, operation} = operations.get(id);
    if (!route.startsWith(PREFIX + '/'))
        throw new Error(`${id}: ${route} is not under ${PREFIX}`);
    const body = operation.requestBody ? (operation.requestBody.required ? 'required' : 'optional') : 'none';
    const user = (operation.parameters ?? []).some((p) => parameter(p).in === 'header' &&
                                                         parameter(p).name === USER_HEADER);
    const at = route.slice(PREFIX.length);
    lines.push(`    ${id}: { method: '${method}', path: '${at}', body: '${body}', user: ${user} },`);
}
lines.push('};');
lines.push('export const OP = Object.freeze(Object.fromEntries(');
lines.push('    Object.entries(TABLE).map(([id, operation]) => [id, Object.freeze({ id, ...operation })])));');
process.stdout.write(lines.join('\n') + '\n');
