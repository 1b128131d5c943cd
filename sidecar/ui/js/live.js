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
    // each start of the loop has its own generation: a loop left behind by a hide and show stops
    let generation = 0;

    async function loop(mine) {
        while (mine === generation && document.visibilityState === 'visible') {
            controller = new AbortController();
            try {
                const feed = await api.events(after ?? undefined, WAIT_S, controller.signal);
                if (mine !== generation) return;
                if (feed?.next !== undefined && feed.next !== null) after = feed.next;
                onStatus('Live');
                if ((feed?.events ?? []).length > 0) await onEvents(feed.events);
            } catch (error) {
                if (error.name === 'AbortError' || mine !== generation) return;
                onStatus(`Live updates interrupted: ${error.message}`);
                await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
            }
        }
    }

    function onVisibility() {
        generation++;
        controller?.abort();
        if (document.visibilityState === 'visible') {
            const mine = generation;
            onStatus('Catching up');
            onEvents([]).finally(() => loop(mine));
        } else {
            onStatus('Paused while the tab is hidden');
        }
    }

    document.addEventListener('visibilitychange', onVisibility);
    loop(generation);
    return () => {
        generation++;
        controller?.abort();
        document.removeEventListener('visibilitychange', onVisibility);
    };
}
