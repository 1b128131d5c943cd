// What the page shows in the reader's own terms: times in the browser's zone, numbers grouped.
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const number = new Intl.NumberFormat();

export function formatTime(iso) {
    if (!iso) return '';
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : dateTime.format(date);
}

export function formatNumber(value) {
    return value === null || value === undefined || value === '' ? '' : number.format(Number(value));
}

// An element with its text and attributes: the page never builds HTML from strings.
export function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
        if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
    }
    for (const child of children) {
        if (child !== undefined && child !== null) node.append(child instanceof Node ? child : String(child));
    }
    return node;
}

// A <dl> of label / value pairs.
export function fillFields(list, pairs) {
    list.replaceChildren();
    for (const [label, value] of pairs) {
        if (value === undefined || value === null || value === '') continue;
        list.append(el('dt', {}, label), el('dd', {}, value));
    }
}
