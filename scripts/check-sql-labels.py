#!/usr/bin/env python3
"""Checks that every CREATE FUNCTION of the given SQL scripts states its three labels: volatility
(IMMUTABLE, STABLE or VOLATILE), null behaviour (STRICT, RETURNS NULL ON NULL INPUT or CALLED ON NULL
INPUT) and parallel safety (PARALLEL SAFE, RESTRICTED or UNSAFE), and that a PARALLEL SAFE function
calls no function of the scripts that is not. Functions created by EXECUTE inside a DO block are
checked too. Prints "not ok - NAME ..." per function that fails and ends with "sql-labels: N passed, M
failed" (N, M: functions that pass and fail); exits 1 when M > 0 or no function was found.
Usage: check-sql-labels.py FILE... ("-" reads standard input)."""
import re
import sys

CREATE = re.compile(r'\bCREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+', re.I)
CALL = re.compile(r'\b(iwd|iwd_dm)\.(\w+)\s*\(')
DOLLAR = re.compile(r'\$([A-Za-z_][A-Za-z_0-9]*)?\$')
LABELS = [
    ('volatility', re.compile(r'\b(IMMUTABLE|STABLE|VOLATILE)\b', re.I)),
    ('null behaviour', re.compile(r'\b(STRICT|RETURNS\s+NULL\s+ON\s+NULL\s+INPUT|CALLED\s+ON\s+NULL\s+INPUT)\b', re.I)),
    ('parallel safety', re.compile(r'\bPARALLEL\s+(SAFE|RESTRICTED|UNSAFE)\b', re.I)),
]


def clauses(text, start):
    """The statement starting at start, up to its ';', without quoted strings, comments and the
    parenthesized argument and result lists (what remains are the name and the options); and the
    quoted strings (the body)."""
    out = []
    quoted = []
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == ';':
            break
        if text.startswith('--', i):
            j = text.find('\n', i)
            i = len(text) if j < 0 else j
            continue
        if c == "'":
            j = i + 1
            while j < len(text):
                if text[j] == "'" and text.startswith("''", j):
                    j += 2
                elif text[j] == "'":
                    break
                else:
                    j += 1
            quoted.append(text[i + 1:j])
            i = j + 1
            out.append(' ')
            continue
        m = DOLLAR.match(text, i) if c == '$' else None
        if m:
            end = text.find(m.group(0), m.end())
            quoted.append(text[m.end():end if end >= 0 else len(text)])
            i = len(text) if end < 0 else end + len(m.group(0))
            out.append(' ')
            continue
        if c == '(':
            depth += 1
        elif c == ')':
            depth -= 1
        elif depth == 0:
            out.append(c)
        i += 1
    return ''.join(out), '\n'.join(quoted)


def main(paths):
    functions = []  # (name, where, options, body)
    for path in paths:
        text = sys.stdin.read() if path == '-' else open(path, encoding='utf-8').read()
        for m in CREATE.finditer(text):
            line_start = text.rfind('\n', 0, m.start()) + 1
            if '--' in text[line_start:m.start()]:
                continue  # a comment mentioning CREATE FUNCTION
            options, body = clauses(text, m.end())
            name = options.split()[0] if options.split() else '?'
            functions.append((name, f'{path}:{text.count(chr(10), 0, m.start()) + 1}', options, body))
    parallel = {}  # name -> SAFE, RESTRICTED, UNSAFE (the least safe of a name's overloads)
    order = ['SAFE', 'RESTRICTED', 'UNSAFE']
    for name, _, options, _ in functions:
        p = LABELS[2][1].search(options)
        p = p.group(1).upper() if p else 'UNSAFE'
        parallel[name] = max(parallel.get(name, 'SAFE'), p, key=order.index)
    passed = failed = 0
    for name, where, options, body in functions:
        problems = [f'lacks {what}' for what, pattern in LABELS if not pattern.search(options)]
        if parallel[name] == 'SAFE':
            problems += [f'is PARALLEL SAFE but calls {c}, PARALLEL {parallel[c]}'
                         for c in sorted({f'{s}.{n}' for s, n in CALL.findall(body)})
                         if parallel.get(c, 'SAFE') != 'SAFE']
        if problems:
            failed += 1
            print(f'not ok - {name} ({where}): {"; ".join(problems)}')
        else:
            passed += 1
    print(f'sql-labels: {passed} passed, {failed} failed')
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:] or ['-']))
