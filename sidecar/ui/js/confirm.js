// The confirmation every action passes through: a modal <dialog> (focus kept inside, Escape backs out)
// that may ask for a reason or a new priority and business value.
const $ = (id) => document.getElementById(id);

// Resolves to the action's body ({} or with reason / priority / businessValue), or null when backed out.
export function confirmAction(title, text, options = {}) {
    const dialog = $('confirm');
    $('confirm-title').textContent = title;
    $('confirm-text').textContent = text;
    $('confirm-reason-row').hidden = !options.reason;
    $('confirm-priority-row').hidden = !options.priority;
    $('confirm-reason').value = '';
    $('confirm-priority').value = '';
    $('confirm-business-value').value = '';
    return new Promise((resolve) => {
        dialog.addEventListener('close', () => {
            if (dialog.returnValue !== 'confirm') { resolve(null); return; }
            const body = {};
            if (options.reason && $('confirm-reason').value.trim()) body.reason = $('confirm-reason').value.trim();
            if (options.priority) {
                if ($('confirm-priority').value !== '') body.priority = Number($('confirm-priority').value);
                if ($('confirm-business-value').value !== '') {
                    body.businessValue = Number($('confirm-business-value').value);
                }
            }
            resolve(body);
        }, { once: true });
        dialog.returnValue = '';
        dialog.showModal();
    });
}
