// Live updates from the event stream (GET /events). EventSource cannot send the x-api-key header, so the
// page uses the stream's JSON long-poll form: each call waits up to WAIT_S for events after the last id
// seen. While the tab is hidden no call is open; on return the next call asks for everything after the
// last id (the catch-up) and the views are read again.
import { api } from './api.js';

const WAIT_S = 25;
const RETRY_MS = 3000;

export function startLive(onEvents, onStatus) {
    let after = null;
    let controller = null;
    let stopped = false;

    async function loop() {
        while (!stopped && document.visibilityState === 'visible') {
            controller = new AbortController();
            try {
                const page = await api.events(after ?? undefined, WAIT_S, controller.signal);
                const events = page?.events ?? [];
                if (page && page.next !== undefined && page.next !== null) after = page.next;
                onStatus('Live');
                if (events.length > 0) await onEvents(events);
            } catch (error) {
                if (error.name === 'AbortError') return;
                onStatus(`Live updates interrupted: ${error.message}`);
                await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
            }
        }
    }

    function onVisibility() {
        if (document.visibilityState === 'visible') {
            onStatus('Catching up');
            onEvents([]).finally(loop);
        } else {
            onStatus('Paused while the tab is hidden');
            controller?.abort();
        }
    }

    document.addEventListener('visibilitychange', onVisibility);
    loop();
    return () => {
        stopped = true;
        controller?.abort();
        document.removeEventListener('visibilitychange', onVisibility);
    };
}
