# Prints the statements of the install script's parts that an upgrade script runs again, so that every
# function, view, trigger, grant and comment of the new release is defined exactly as a fresh install
# defines it (Makefile: sql/iwd--A--B.sql is sql/upgrade/A--B.sql followed by this of every part):
#   CREATE FUNCTION | PROCEDURE | VIEW | TRIGGER   printed as CREATE OR REPLACE
#   GRANT, REVOKE, COMMENT, SELECT, ALTER FUNCTION | PROCEDURE | VIEW
#   DO blocks, except those that create or fill tables (CREATE TABLE | INDEX | SEQUENCE | SCHEMA, INSERT,
#   ALTER TABLE: those belong to the schema); their CREATE FUNCTION become CREATE OR REPLACE too.
# Everything else (tables, indexes, sequences, types, the rows the install inserts) is the schema: the
# hand-written prelude sql/upgrade/A--B.sql changes it. Statements are split at semicolons outside
# comments, quoted strings and identifiers, and dollar-quoted bodies; psql's backslash commands (the
# install script's \echo guard) are left out.

BEGIN { state = "sql"; stmt = "" }

# The upgrade's form of one complete statement, or "" when the upgrade leaves it to the prelude.
function rerun(text,    lead, body, head, upper) {
    lead = text
    # leading blank space and comments stay with the statement; the keywords after them decide
    while (match(lead, /^([ \t\r\n]+|--[^\n]*\n?)/) || match(lead, /^\/\*([^*]|\*+[^*\/])*\*+\//))
        lead = substr(lead, RLENGTH + 1)
    if (lead == "")
        return ""
    body = lead
    lead = substr(text, 1, length(text) - length(body))
    head = toupper(substr(body, 1, 80))
    gsub(/[ \t\r\n]+/, " ", head)
    if (head ~ /^CREATE (OR REPLACE )?(FUNCTION|PROCEDURE|VIEW|TRIGGER|CONSTRAINT TRIGGER) /) {
        if (head !~ /^CREATE OR REPLACE /)
            sub(/^[Cc][Rr][Ee][Aa][Tt][Ee]/, "CREATE OR REPLACE", body)
        return lead body
    }
    if (head ~ /^(GRANT|REVOKE|COMMENT|SELECT|ALTER (FUNCTION|PROCEDURE|VIEW)) /)
        return lead body
    if (head ~ /^DO /) {
        upper = toupper(body)
        gsub(/[ \t\r\n]+/, " ", upper)
        if (upper ~ /CREATE (TABLE|INDEX|UNIQUE INDEX|SEQUENCE|SCHEMA)|INSERT INTO|ALTER TABLE/)
            return ""
        gsub(/CREATE[ \t]+FUNCTION/, "CREATE OR REPLACE FUNCTION", body)
        return lead body
    }
    return ""
}

function emit(    out) {
    out = rerun(stmt)
    if (out != "")
        printf "%s\n", out
    stmt = ""
}

FNR == 1 { printf "\n-- from %s\n", FILENAME }

state == "sql" && /^\\/ { next }

{
    line = $0
    start = 1
    i = 1
    n = length(line)
    while (i <= n) {
        if (state == "dollar") {
            k = index(substr(line, i), tag)
            if (k == 0) { i = n + 1; break }
            i += k - 1 + length(tag)
            state = "sql"
            continue
        }
        if (state == "block") {
            k = index(substr(line, i), "*/")
            if (k == 0) { i = n + 1; break }
            i += k + 1
            state = "sql"
            continue
        }
        c = substr(line, i, 1)
        if (state == "string" || state == "estring") {
            if (state == "estring" && c == "\\") { i += 2; continue }
            if (c == "'") state = "sql"
            i++
            continue
        }
        if (state == "ident") {
            if (c == "\"") state = "sql"
            i++
            continue
        }
        # state == "sql"
        if (c == "-" && substr(line, i + 1, 1) == "-") { i = n + 1; break }
        if (c == "/" && substr(line, i + 1, 1) == "*") { state = "block"; i += 2; continue }
        if (c == "'") {
            state = (i > 1 && substr(line, i - 1, 1) ~ /[Ee]/ && (i == 2 || substr(line, i - 2, 1) !~ /[A-Za-z0-9_]/)) \
                ? "estring" : "string"
            i++
            continue
        }
        if (c == "\"") { state = "ident"; i++; continue }
        if (c == "$" && match(substr(line, i), /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/) &&
            (i == 1 || substr(line, i - 1, 1) !~ /[A-Za-z0-9_]/)) {
            tag = substr(line, i, RLENGTH)
            state = "dollar"
            i += RLENGTH
            continue
        }
        if (c == ";") {
            stmt = stmt substr(line, start, i - start + 1)
            emit()
            start = i + 1
        }
        i++
    }
    stmt = stmt substr(line, start) "\n"
}

END {
    if (stmt !~ /^[ \t\r\n]*$/ && rerun(stmt) != "") {
        printf "rerun.awk: the last statement of %s has no semicolon\n", FILENAME > "/dev/stderr"
        exit 1
    }
}
