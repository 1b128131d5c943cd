// Every member the page reads from an API document is a member the document declares:
//
//   IWD_OPENAPI_TOOLS=.tools/openapi node tests/openapi/ui-fields.mjs
//
// The page's modules (sidecar/ui/js/*.js) name the documents they read after what they are (the names
// below); each read "name.member" (or "name?.member") of such a variable is looked up in the schema of
// sidecar/openapi.yaml it stands for. Prints one line per module and read checked; exits 1 naming every
// member no schema declares.
import fs from 'node:fs';
import path from 'node:path';
import {createRequire} from 'node:module';
import {fileURLToPath} from 'node:url';

const require = createRequire(`${process.env.IWD_OPENAPI_TOOLS}/package.json`);
const yaml = require('js-yaml');

const top = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const uiDir = path.join(top, 'sidecar/ui/js');
const document = yaml.load(fs.readFileSync(path.join(top, 'sidecar/openapi.yaml'), 'utf8'));

function resolve(schema) {
    while (schema?.$ref)
        schema = schema.$ref.replace(/^#\//, '').split('/').reduce((node, key) => node[key], document);
    return schema;
}
const component = (name) => resolve({$ref: `#/components/schemas/${name}`});
const answer = (route, method) =>
    resolve(document.paths[route][method].responses['200'].content['application/json'].schema);

// The variable names of the page's modules and the schemas of what they hold.
const DOCUMENTS = {
    task: [component('Task')],
    current: [component('Task')],
    agent: [component('Agent')],
    entry: [component('HistoryEvent')],
    page: [component('TaskPage')],
    feed: [answer('/iwd/v3/events', 'get')],
    stats: [component('QueueStats')],
    queue: [resolve(component('QueueStats').properties.queues.items)],
    dry: [answer('/iwd/v3/tasks/batch', 'post')],
    done: [answer('/iwd/v3/tasks/batch', 'post')],
    item: ['Department', 'Process', 'Category', 'Rule', 'Calendar'].map(component),
    report: [component('ReportIntervals')],
    byCategory: [component('CategoryStats')],
    bucket: [resolve(component('ReportIntervals').properties.intervals.items)],
    categoryWork: [resolve(component('CategoryStats').properties.categories.items)],
};
const pattern = new RegExp(`\\b(${Object.keys(DOCUMENTS).join('|')})\\??\\.([A-Za-z_$][\\w$]*)`, 'g');

let checked = 0;
let undeclared = 0;
for (const file of fs.readdirSync(uiDir).filter((f) => f.endsWith('.js') && f !== 'operations.js').sort()) {
    const source = fs.readFileSync(path.join(uiDir, file), 'utf8');
    for (const [, name, member] of source.matchAll(pattern)) {
        const schemas = DOCUMENTS[name];
        checked++;
        if (!schemas.some((schema) => schema?.properties && member in schema.properties)) {
            console.log(`sidecar/ui/js/${file}: ${name}.${member} is declared by no schema it may hold`);
            undeclared++;
        }
    }
}
console.log(`${checked} reads of API documents checked, ${undeclared} undeclared`);
process.exit(undeclared > 0 || checked === 0 ? 1 : 0);
