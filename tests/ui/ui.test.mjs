// The Workload Manager in headless chromium (Debian's /usr/bin/chromium) driven by playwright-core:
// each check prints "ok - name" or "not ok - name: why"; tests/ui/run.sh counts them.
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.IWD_TOOLS}/package.json`);
const { chromium } = require('playwright-core');

const url = process.env.IWD_UI_URL;
const tenantKey = process.env.IWD_TENANT_KEY;
const readerKey = process.env.IWD_READER_KEY;
const artifacts = process.env.IWD_ARTIFACTS;
const LIVE_MS = 40000;
// the network errors chromium logs for refusals this test provokes on purpose (a wrong key, refused actions)
const EXPECTED_REFUSAL = /Failed to load resource: the server responded with a status of (400|401|403|409)/;

let failures = 0;
const consoleErrors = [];

async function check(name, body) {
    try {
        await body();
        console.log(`ok - ${name}`);
    } catch (error) {
        failures++;
        console.log(`not ok - ${name}: ${String(error.message).split('\n').slice(0, 3).join(' / ')}`);
    }
}

function expectEqual(actual, expected, what) {
    if (actual !== expected) {
        throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
    }
}

async function newPage(browser, viewport = { width: 1280, height: 800 }) {
    const context = await browser.newContext({ viewport, timezoneId: 'Europe/Berlin', locale: 'de-DE' });
    const page = await context.newPage();
    page.on('console', (message) => {
        if (message.type() === 'error' && !EXPECTED_REFUSAL.test(message.text())) consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => consoleErrors.push(`page error: ${error.message}`));
    await page.goto(url);
    return page;
}

// the supervisor the main page signs in as: each action it takes records "<tenant>/<name>" as who did it
const SUPERVISOR = 'Ann Supervisor';

async function signIn(page, key, user = '') {
    await page.getByLabel('API key').fill(key);
    await page.getByLabel('Your name (optional)').fill(user);
    await page.getByRole('button', { name: 'Sign in' }).click();
}

const rows = (page) => page.locator('#task-table tbody tr');
const externalIds = (page) => page.locator('#task-table tbody tr td:nth-child(3)').allTextContents();
const rowOf = (page, externalId) =>
    rows(page).filter({ has: page.getByRole('cell', { name: externalId, exact: true }) });

async function confirmDialog(page, fill = {}) {
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    if (fill.reason !== undefined) await dialog.getByLabel('Reason').fill(fill.reason);
    if (fill.priority !== undefined) await dialog.getByLabel('Priority').fill(String(fill.priority));
    await dialog.getByRole('button', { name: 'Confirm' }).click();
}

async function statusOf(page) {
    return page.locator('#panel-fields dt:text-is("Status") + dd').textContent();
}

// A REST call of the test itself (not the page's), with the tenant key.
async function rest(method, path, body) {
    const response = await fetch(new URL(`/iwd/v3${path}`, url), {
        method, headers: { 'x-api-key': tenantKey, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
    return response.json();
}

async function taskId(externalId) {
    const page = await rest('GET', '/tasks?limit=100');
    return page.tasks.find((task) => task.externalId === externalId).id;
}

// What a hidden tab reports (headless chromium keeps every page visible), and its event.
async function setVisibility(page, visibility) {
    await page.evaluate((value) => {
        Object.defineProperty(document, 'visibilityState', { value, configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
    }, visibility);
}

// through the proxy that checks the page's REST traffic against sidecar/openapi.yaml (tests/openapi), the
// loopback addresses included
const proxy = process.env.IWD_OPENAPI_PROXY ? { server: process.env.IWD_OPENAPI_PROXY, bypass: '<-loopback>' }
    : undefined;
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'], proxy });
try {
    const page = await newPage(browser);

    await check('a wrong key is refused with the API message', async () => {
        await signIn(page, 'no-such-key-0000000');
        await page.locator('#sign-in-error', { hasText: 'unknown x-api-key' }).waitFor();
    });

    await check('a name that cannot be recorded as who acted is refused at sign-in', async () => {
        await signIn(page, tenantKey, 'ann/admin');
        await page.locator('#sign-in-error', { hasText: 'other than "/"' }).waitFor();
        expectEqual(await page.locator('#nav').isHidden(), true, 'the views stay hidden');
        expectEqual(await page.evaluate(() => sessionStorage.length), 0, 'nothing kept');
    });
    if (artifacts) await page.screenshot({ path: `${artifacts}/sign-in.png` });

    await check('sign in shows the Global Task List with its headers', async () => {
        await signIn(page, tenantKey, SUPERVISOR);
        await rows(page).first().waitFor();
        const headers = (await page.locator('#task-table thead th').allTextContents()).map((h) => h.trim());
        expectEqual(headers.join('|'),
            'Select|ID|External ID|Category|Queue|Status|Priority|Business value|Due|Assigned to', 'headers');
        expectEqual(await rows(page).count(), 6, 'rows');
        const stored = await page.evaluate(() => [sessionStorage.getItem('iwd.apiKey'),
            sessionStorage.getItem('iwd.user'), localStorage.length]);
        expectEqual(stored.join(','), `${tenantKey},${SUPERVISOR},0`, 'the key and the name in session storage only');
        await page.locator('#signed-in-as', { hasText: `Signed in as ${SUPERVISOR} (tenant ui)` }).waitFor();
    });

    await check('the list is in queue order: highest priority first', async () => {
        expectEqual((await externalIds(page))[0], 'UI-6', 'first row');
    });

    await check('filter and text search narrow the list', async () => {
        await page.getByLabel('Search').fill('invoice');
        await page.getByRole('button', { name: 'Apply filters' }).click();
        await page.waitForFunction(() => document.querySelectorAll('#task-table tbody tr').length === 6);
        await page.getByLabel('Status').selectOption('held');
        await page.getByRole('button', { name: 'Apply filters' }).click();
        await page.locator('#tasks-empty').waitFor({ state: 'visible' });
        await page.getByRole('button', { name: 'Clear' }).click();
        await page.waitForFunction(() => document.querySelectorAll('#task-table tbody tr').length === 6);
    });

    await check('open a task: its fields, attributes and history', async () => {
        await rowOf(page, 'UI-2').click();
        await page.locator('#panel-title', { hasText: 'Invoice 2' }).waitFor();
        expectEqual(await statusOf(page), 'queued', 'status');
        const attributes = JSON.parse(await page.locator('#panel-attributes').textContent());
        expectEqual(attributes.amount, 2000, 'attribute amount');
        await page.locator('#panel-history li', { hasText: 'created' }).first().waitFor();
    });

    await check('hold it, with a confirmation and a reason', async () => {
        await page.getByRole('button', { name: 'Hold', exact: true }).click();
        await confirmDialog(page, { reason: 'waiting for the customer' });
        await page.locator('#panel-fields dd', { hasText: 'waiting for the customer' }).waitFor();
        expectEqual(await statusOf(page), 'held', 'status');
        await rowOf(page, 'UI-2').locator('td', { hasText: 'held' }).waitFor();
    });

    await check('the history timeline names the signed-in user as who held it', async () => {
        await page.locator('#panel-history li', { hasText: `held by ui/${SUPERVISOR} (waiting for the customer)` })
            .waitFor();
    });

    await check('an action the API refuses shows its message', async () => {
        await page.getByRole('button', { name: 'Hold', exact: true }).click();
        await confirmDialog(page);
        await page.locator('#panel-error', { hasText: /cannot hold task \d+: it is held/ }).waitFor();
    });

    await check('backing out of the confirmation does nothing', async () => {
        await page.getByRole('button', { name: 'Cancel', exact: true }).click();
        await page.getByRole('dialog').getByRole('button', { name: 'Back' }).click();
        expectEqual(await statusOf(page), 'held', 'status');
    });

    await check('resume it', async () => {
        await page.getByRole('button', { name: 'Resume', exact: true }).click();
        await confirmDialog(page);
        await page.waitForFunction(() => [...document.querySelectorAll('#panel-fields dt')]
            .find((dt) => dt.textContent === 'Status')?.nextElementSibling.textContent === 'queued');
    });
    if (artifacts) await page.screenshot({ path: `${artifacts}/task-list.png` });

    await check('reprioritize the last task and see the order change', async () => {
        const before = await externalIds(page);
        expectEqual(before[before.length - 1], 'UI-1', 'last row before');
        await rowOf(page, 'UI-1').click();
        await page.locator('#panel-title', { hasText: 'Invoice 1' }).waitFor();
        await page.getByRole('button', { name: 'Reprioritize', exact: true }).click();
        await confirmDialog(page, { priority: 99 });
        await page.waitForFunction(() =>
            document.querySelector('#task-table tbody tr td:nth-child(3)')?.textContent === 'UI-1');
    });

    await check('the task list is usable from the keyboard', async () => {
        await rows(page).nth(1).focus();
        await page.keyboard.press('Enter');
        await page.locator('#panel-title', { hasText: 'Invoice 6' }).waitFor();
    });

    await check('a second browser sees a change live', async () => {
        const second = await newPage(browser);
        await signIn(second, tenantKey);
        await second.locator('#signed-in-as', { hasText: 'Signed in to tenant ui' }).waitFor();
        await rowOf(second, 'UI-4').waitFor();
        await second.locator('#live', { hasText: 'Live' }).waitFor();
        await rowOf(page, 'UI-4').click();
        await page.locator('#panel-title', { hasText: 'Invoice 4' }).waitFor();
        await page.getByRole('button', { name: 'Hold', exact: true }).click();
        await confirmDialog(page, { reason: 'audit' });
        await rowOf(second, 'UI-4').locator('td', { hasText: 'held' }).waitFor({ timeout: LIVE_MS });
        await second.context().close();
    });

    await check('updates pause while the tab is hidden and catch up on return', async () => {
        const watcher = await newPage(browser);
        await signIn(watcher, tenantKey);
        await rowOf(watcher, 'UI-5').waitFor();
        await watcher.locator('#live', { hasText: 'Live' }).waitFor();
        let eventCalls = 0;
        watcher.on('request', (request) => { if (request.url().includes('/iwd/v3/events')) eventCalls++; });
        await setVisibility(watcher, 'hidden');
        await watcher.locator('#live', { hasText: 'Paused' }).waitFor();
        const id = await taskId('UI-5');
        await rest('POST', `/tasks/${id}/hold`, { reason: 'while hidden' });
        await watcher.waitForTimeout(3000);
        expectEqual(await rowOf(watcher, 'UI-5').locator('td:nth-child(6)').textContent(), 'queued', 'while hidden');
        expectEqual(eventCalls, 0, 'event stream calls while hidden');
        await setVisibility(watcher, 'visible');
        await rowOf(watcher, 'UI-5').locator('td', { hasText: 'held' }).waitFor({ timeout: LIVE_MS });
        await watcher.locator('#live', { hasText: 'Live' }).waitFor({ timeout: LIVE_MS });
        if (eventCalls === 0) throw new Error('no event stream call after the return');
        await rest('POST', `/tasks/${id}/resume`, {});
        await watcher.context().close();
    });

    await check('agents are listed with state, skills and load', async () => {
        await page.getByRole('button', { name: 'Agents' }).click();
        await page.locator('#agent-table tbody tr', { hasText: 'desk1' }).locator('td', { hasText: 'ready' }).waitFor();
        await page.locator('#agent-table tbody tr', { hasText: 'desk1' })
            .locator('td', { hasText: 'workitem 0 of 1' }).waitFor();
    });

    await check('the configuration is shown', async () => {
        await page.getByRole('button', { name: 'Configuration' }).click();
        await page.locator('#configuration h3', { hasText: 'Categories' }).waitFor();
        expectEqual(await page.locator('#configuration h3').count(), 5, 'groups');
    });

    await check('configuration: a new department saved', async () => {
        await page.getByRole('button', { name: 'New department' }).click();
        await page.getByLabel('Name', { exact: true }).fill('Claims');
        await page.getByLabel('Definition (JSON)').fill('{"description": "Claims handling"}');
        await page.getByRole('button', { name: 'Save' }).click();
        await page.locator('#configuration-message', { hasText: 'Saved Claims.' }).waitFor();
        await page.getByRole('button', { name: 'Edit department Claims' }).waitFor();
    });

    await check('configuration: malformed JSON and a refused field shown under the definition', async () => {
        await page.getByRole('button', { name: 'Edit department Claims' }).click();
        await page.getByLabel('Definition (JSON)').fill('{"description": ');
        await page.getByRole('button', { name: 'Save' }).click();
        await page.locator('#config-editor-error', { hasText: 'not valid JSON' }).waitFor();
        await page.getByLabel('Definition (JSON)').fill('{"colour": "blue"}');
        await page.getByRole('button', { name: 'Save' }).click();
        await page.locator('#config-editor-error', { hasText: 'colour' }).waitFor();
        expectEqual(await page.getByLabel('Definition (JSON)').getAttribute('aria-invalid'), 'true', 'aria-invalid');
    });

    await check('configuration: a department deleted after confirmation', async () => {
        await page.getByRole('button', { name: 'Delete' }).click();
        await confirmDialog(page);
        await page.locator('#configuration-message', { hasText: 'Deleted Claims.' }).waitFor();
        await page.getByRole('button', { name: 'Edit department Claims' }).waitFor({ state: 'detached' });
    });

    await check('configuration: a category\'s service-level threshold shown, a bad one refused where it belongs',
        async () => {
            await page.getByRole('button', { name: 'Edit category Claims' }).click();
            const definition = JSON.parse(await page.getByLabel('Definition (JSON)').inputValue());
            expectEqual(definition.serviceLevelSeconds, 30, 'the stored threshold');
            await page.getByLabel('Definition (JSON)').fill('{"serviceLevelSeconds": 0}');
            await page.getByRole('button', { name: 'Save' }).click();
            await page.locator('#config-editor-error', { hasText: 'serviceLevelSeconds' }).waitFor();
            await page.locator('#config-close').click();
        });

    await check('the dashboard charts the backlog by queue', async () => {
        await page.getByRole('button', { name: 'Dashboard' }).click();
        await page.locator('#backlog-chart svg rect').first().waitFor();
        await page.locator('.figure', { hasText: 'Held' }).locator('strong', { hasText: '1' }).waitFor();
    });

    await check('the dashboard charts the Data Mart: entered / completed and the service level per 15 minutes',
        async () => {
            await page.getByRole('img', { name: 'Entered and completed tasks per 15 minutes' }).waitFor();
            // the tasks of the setup may fall into two quarter hours: the columns' values are summed
            const titles = await page.locator('#flow-chart svg rect title').allTextContents();
            const sum = (series) => titles.map((title) => title.match(new RegExp(`${series}: (\\d+)$`)))
                .filter(Boolean).reduce((total, match) => total + Number(match[1]), 0);
            expectEqual(`${sum('Entered')} ${sum('Completed')}`, '9 2', 'entered and completed');
            await page.getByRole('img', { name: 'Service level per 15 minutes, in percent' }).waitFor();
            const levels = await page.locator('#service-level-chart svg rect title').allTextContents();
            if (levels.length === 0 || !levels.every((title) => /Service level %: [\d,]+ %$/.test(title))) {
                throw new Error(`service level: ${levels.join(' | ')}`);
            }
            await page.locator('#service-level-chart svg line.target').waitFor({ state: 'attached' });
        });

    await check('the dashboard\'s period: the last 7 days per hour, then back to the last day', async () => {
        await page.getByRole('combobox', { name: 'Period' }).selectOption({ label: 'Last 7 days, per hour' });
        await page.getByRole('img', { name: 'Entered and completed tasks per hour' }).waitFor();
        const titles = await page.locator('#flow-chart svg rect title').allTextContents();
        const entered = titles.map((title) => title.match(/Entered: (\d+)$/)).filter(Boolean)
            .reduce((total, match) => total + Number(match[1]), 0);
        expectEqual(entered, 9, 'entered in the last 7 days');
        await page.getByRole('img', { name: 'Service level per hour, in percent' }).waitFor();
        await page.getByRole('combobox', { name: 'Period' }).selectOption({ label: 'Last 24 hours, per 15 minutes' });
        await page.getByRole('img', { name: 'Entered and completed tasks per 15 minutes' }).waitFor();
    });

    await check('the dashboard lists the open work by category with its threshold and service level', async () => {
        const claims = page.locator('#category-table tbody tr', { hasText: 'Claims' });
        await claims.waitFor();
        const cells = (await claims.locator('td').allTextContents()).map((cell) => cell.trim());
        expectEqual(cells.join('|'), 'Claims|0|0|0|0|0|30|100 % of 1', 'the Claims row');
        const general = page.locator('#category-table tbody tr', { hasText: 'General' });
        expectEqual((await general.locator('td').nth(1).textContent()).trim(), '5',
            'General\'s queued tasks (UI-4 is held)');
    });

    await check('the dashboard narrows to one queue', async () => {
        const vip = await rest('POST', '/tasks', { externalId: 'UI-VIP', capturePoint: 'erp', queue: 'vip' });
        try {
            await page.getByRole('button', { name: 'Tasks' }).click();
            await page.getByRole('button', { name: 'Dashboard' }).click();
            await page.locator('#dashboard-queue option', { hasText: 'vip' }).waitFor({ state: 'attached' });
            const queues = await page.locator('#dashboard-queue option').allTextContents();
            expectEqual(queues.join(','), 'All queues,general,vip', 'the queue choices');
            await page.getByRole('combobox', { name: 'Queue' }).selectOption({ label: 'vip' });
            await page.locator('.figure', { hasText: 'Held' }).locator('strong', { hasText: /^0$/ }).waitFor();
            await page.locator('.figure', { hasText: 'Queued' }).locator('strong', { hasText: /^1$/ }).waitFor();
            expectEqual((await page.locator('#backlog-chart svg text').allTextContents())[0], 'vip', 'the chart');
            await page.getByRole('combobox', { name: 'Queue' }).selectOption({ label: 'All queues' });
            await page.locator('.figure', { hasText: 'Held' }).locator('strong', { hasText: /^1$/ }).waitFor();
        } finally {
            await rest('POST', `/tasks/${vip.id}/cancel`, { reason: 'dashboard test done' });
        }
    });
    if (artifacts) await page.screenshot({ path: `${artifacts}/dashboard.png` });

    await check('batch: hold the selected tasks, the count confirmed first', async () => {
        await page.getByRole('button', { name: 'Tasks' }).click();
        await page.getByRole('checkbox', { name: `Select task ${await taskId('UI-2')}` }).check();
        await page.getByRole('checkbox', { name: `Select task ${await taskId('UI-3')}` }).check();
        await page.locator('#batch-count', { hasText: '2 selected' }).waitFor();
        await page.getByRole('button', { name: 'Hold selected' }).click();
        await confirmDialog(page, { reason: 'batch audit' });
        await page.locator('#confirm-text', { hasText: '2 of 2 tasks will be held' }).waitFor();
        await confirmDialog(page);
        await page.locator('#batch-result', { hasText: '2 tasks held.' }).waitFor();
        for (const externalId of ['UI-2', 'UI-3']) {
            await rowOf(page, externalId).locator('td', { hasText: 'held' }).waitFor();
        }
        await rowOf(page, 'UI-2').click();
        await page.locator('#panel-history li', { hasText: `held by ui/${SUPERVISOR} (batch audit)` }).waitFor();
    });

    await check('batch: resume every task matching a filter', async () => {
        await page.getByLabel('Status').selectOption('held');
        await page.getByRole('button', { name: 'Apply filters' }).click();
        await page.waitForFunction(() => document.querySelectorAll('#task-table tbody tr').length === 3);
        await page.getByRole('checkbox', { name: 'All tasks matching this filter' }).check();
        await page.getByRole('button', { name: 'Resume selected' }).click();
        await page.locator('#confirm-text', { hasText: '3 of 3 tasks will be resumed' }).waitFor();
        await confirmDialog(page);
        await page.locator('#tasks-empty').waitFor({ state: 'visible' });
        await page.getByRole('button', { name: 'Clear' }).click();
        await page.waitForFunction(() => document.querySelectorAll('#task-table tbody tr').length === 6);
    });

    await check('batch: hold and resume every task matching a search, the count confirmed first', async () => {
        await page.getByLabel('Search').fill('invoice');
        await page.getByRole('button', { name: 'Apply filters' }).click();
        await page.waitForFunction(() => document.querySelectorAll('#task-table tbody tr').length === 6);
        await page.getByRole('checkbox', { name: 'All tasks matching this filter' }).check();
        await page.locator('#batch-count', { hasText: 'Every task matching the filter and the search' }).waitFor();
        await page.getByRole('button', { name: 'Hold selected' }).click();
        await confirmDialog(page, { reason: 'search audit' });
        await page.locator('#confirm-text', { hasText: '6 of 6 tasks will be held' }).waitFor();
        await confirmDialog(page);
        await page.locator('#batch-result', { hasText: '6 tasks held.' }).waitFor();
        await rowOf(page, 'UI-5').locator('td', { hasText: 'held' }).waitFor();
        await page.getByRole('checkbox', { name: 'All tasks matching this filter' }).check();
        await page.getByRole('button', { name: 'Resume selected' }).click();
        await page.locator('#confirm-text', { hasText: '6 of 6 tasks will be resumed' }).waitFor();
        await confirmDialog(page);
        await page.locator('#batch-result', { hasText: '6 tasks resumed.' }).waitFor();
        await rowOf(page, 'UI-5').locator('td', { hasText: 'queued' }).waitFor();
        await page.getByRole('button', { name: 'Clear' }).click();
        await page.waitForFunction(() => document.querySelectorAll('#task-table tbody tr').length === 6);
    });

    await check('a supervisor completes a task: its history names the signed-in supervisor', async () => {
        const task = await rest('POST', '/tasks', { externalId: 'UI-SUPERVISED', capturePoint: 'erp',
            subject: 'Supervised' });
        await page.getByLabel('Search').fill('supervised');
        await page.getByRole('button', { name: 'Apply filters' }).click();
        await rowOf(page, 'UI-SUPERVISED').click();
        await page.locator('#panel-title', { hasText: `Task ${task.id}` }).waitFor();
        await page.getByRole('button', { name: 'Complete', exact: true }).click();
        await confirmDialog(page);
        await page.locator('#panel-history li', { hasText: `completed by ui/${SUPERVISOR}` }).waitFor();
        await page.getByRole('button', { name: 'Clear' }).click();
        await page.waitForFunction(() => document.querySelectorAll('#task-table tbody tr').length === 6);
    });

    await check('an agent gets the next task, with the reservation countdown', async () => {
        await page.getByRole('button', { name: 'Agent desktop' }).click();
        await page.getByLabel('Agent ID').fill('desk1');
        await page.getByRole('button', { name: 'Get next task' }).click();
        await page.locator('#desk-task-title', { hasText: 'Invoice 1' }).waitFor();
        await page.locator('#desk-countdown', { hasText: /Reservation ends in [12]:\d\d/ }).waitFor();
    });
    if (artifacts) await page.screenshot({ path: `${artifacts}/agent-desktop.png` });

    await check('the agents view shows the reserved task in the agent\'s load', async () => {
        await page.getByRole('button', { name: 'Agents' }).click();
        await page.locator('#agent-table tbody tr', { hasText: 'desk1' })
            .locator('td', { hasText: 'workitem 1 of 1' }).waitFor();
        await page.getByRole('button', { name: 'Agent desktop' }).click();
        await page.locator('#desk-task-title', { hasText: 'Invoice 1' }).waitFor();
    });

    await check('the agent accepts and completes it', async () => {
        await page.getByRole('button', { name: 'Accept' }).click();
        await page.locator('#desk-countdown', { hasText: 'Accepted' }).waitFor();
        await page.getByRole('button', { name: 'Complete' }).click();
        await page.locator('#desk-message', { hasText: 'Completed.' }).waitFor();
        await page.getByRole('button', { name: 'Tasks' }).click();
        await page.waitForFunction(() => ![...document.querySelectorAll('#task-table tbody td:nth-child(3)')]
            .some((td) => td.textContent === 'UI-1'));
    });

    await check('the agent declines the next task: it goes back to the queue', async () => {
        await page.getByRole('button', { name: 'Agent desktop' }).click();
        await page.getByRole('button', { name: 'Get next task' }).click();
        await page.locator('#desk-task-title', { hasText: 'Invoice 6' }).waitFor();
        await page.getByRole('textbox', { name: 'Reason' }).fill('not my language');
        await page.getByRole('button', { name: 'Decline' }).click();
        await page.locator('#desk-message', { hasText: 'Declined' }).waitFor();
        await page.getByRole('button', { name: 'Tasks' }).click();
        await rowOf(page, 'UI-6').locator('td', { hasText: 'queued' }).waitFor();
    });

    await check('a read-only key is offered no action it may not perform (GET /key)', async () => {
        const reader = await newPage(browser);
        await signIn(reader, readerKey);
        await reader.locator('#read-only', { hasText: 'Read-only key' }).waitFor();
        await rowOf(reader, 'UI-3').click();
        await reader.locator('#panel-fields', { hasText: 'UI-3' }).waitFor();
        await reader.getByRole('button', { name: 'Close', exact: true }).waitFor();
        for (const name of ['Hold', 'Resume', 'Cancel', 'Complete', 'Restart', 'Reprioritize', 'Hold selected',
            'Agent desktop']) {
            expectEqual(await reader.getByRole('button', { name, exact: true }).count(), 0, `buttons named ${name}`);
        }
        await reader.getByRole('button', { name: 'Configuration' }).click();
        await reader.getByRole('heading', { name: /^Departments/ }).waitFor();
        expectEqual(await reader.getByRole('button', { name: /^(New|Edit) / }).count(), 0,
            'configuration edit buttons');
        // the read-write key is offered them
        expectEqual(await page.getByRole('button', { name: 'Agent desktop' }).count(), 1, 'its Agent desktop buttons');
        await reader.context().close();
    });

    await check('times in the browser zone, numbers grouped', async () => {
        const narrow = await newPage(browser, { width: 420, height: 800 });
        await narrow.getByLabel('API key').waitFor();
        expectEqual(await narrow.evaluate(() => sessionStorage.length), 0, 'a new browser context holds no key');
        await signIn(narrow, tenantKey);
        await rowOf(narrow, 'UI-3').click();
        await narrow.locator('#panel-title', { hasText: 'Invoice 3' }).waitFor();
        const created = await narrow.locator('#panel-fields dt:text-is("Created") + dd').textContent();
        if (!/\d{2}\.\d{2}\.\d{4}|\d{1,2}\. \w+\.? \d{4}/.test(created)) throw new Error(`created: ${created}`);
        const width = await narrow.evaluate(() => document.documentElement.scrollWidth);
        if (width > 420) throw new Error(`the page is ${width} px wide in a 420 px window`);
        if (artifacts) await narrow.screenshot({ path: `${artifacts}/narrow.png`, fullPage: true });
        await narrow.context().close();
    });

    await check('no console errors', async () => {
        if (consoleErrors.length > 0) throw new Error(consoleErrors.join(' | '));
    });
} finally {
    await browser.close();
}
process.exit(failures > 0 ? 1 : 0);
