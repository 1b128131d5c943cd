#!/usr/bin/env bash
# Email work items end to end (README, Mailboxes): a real Dovecot and a real SMTP server (tests/email/servers.sh)
# on free ports, the sidecar (ASan build) polling a tenant's mailboxes. Messages appended over IMAP with real
# MIME (multipart, quoted-printable, base64, a non-ASCII subject, HTML only) become classified tasks, a message
# fetched twice stays one task, a reply goes out over SMTP and lands in the sender's mailbox, an answer to an
# open task joins its history; faults: a wrong password, a server down, an untrusted certificate, a malformed
# message (kept aside, the mailbox goes on), a 20 MB message, and kill -9 of the sidecar in the middle of a
# mailbox of 300 messages (each message one task). Ends with "email: N passed, M failed".
set -uo pipefail
suite=email
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
work=$(work_dir email)
# shellcheck source=servers.sh
. "$(dirname "$0")/servers.sh"
mail_py() { /usr/bin/python3 "$top/tests/email/mail.py" "$@"; }
trap 'servers_stop immediate; mail_servers_stop; [ -z "${IWD_KEEP:-}" ] && rm -rf "$work"' EXIT
trap 'exit 143' TERM INT
key="tenant-key-email"

# wait_for WHAT SECONDS JQ-FILTER PATH: polls GET PATH until the filter is true (then $body holds the answer)
wait_for() {
    local what=$1 seconds=$2 filter=$3 path=$4
    for _ in $(seq 1 $((seconds * 2))); do
        req GET "$path" "$key"
        [ "$code" = 200 ] && [ "$(json "$filter" 2>/dev/null)" = true ] && return 0
        sleep 0.5
    done
    echo "# waited ${seconds}s for $what; last answer $code: ${body:0:600}"
    return 1
}
# mailbox NAME USER PASSWORD PORT TLS [HOST [EXTRA-JSON]]: PUT a mailbox on the test's Dovecot
mailbox() {
    req PUT "/mailboxes/$1" "$key" "$(jq -n --arg u "$2" --arg p "$3" --argjson port "$4" --arg tls "$5" \
        --arg host "${6:-127.0.0.1}" --argjson extra "${7:-{\}}" \
        '{imap: {host: $host, port: $port, tls: $tls, user: $u, password: $p}, pollSeconds: 1} + $extra')"
}

build_sidecar || fail_setup "the sidecar does not build"
pg_init "" && cluster_start || fail_setup "PostgreSQL did not start"
redis_start "$work" "$redis_password" || fail_setup "Redis did not start"
mail_servers_start "$work/mail" support:pw-support jose:pw-jose carol:pw-carol bulk:pw-bulk ||
    fail_setup "the mail servers did not start: $(tail -5 "$work/mail/dovecot.log" 2>/dev/null)"
sql postgres -c "CREATE DATABASE control" >/dev/null || fail_setup "no control database"
sidecar_start || fail_setup "the sidecar did not start"
provision t1 email_t1 "$key" || fail_setup "tenant t1 not provisioned"

# --- the messages ------------------------------------------------------------------------------
printf '%s\r\n' 'From: =?UTF-8?Q?Jos=C3=A9_Garc=C3=ADa?= <jose@example.test>' \
    'To: support@example.test, "Bob" <bob@example.test>' 'Cc: accounts@example.test' \
    'Subject: =?UTF-8?B?UsOpY2xhbWF0aW9uIGZhY3R1cmUg4oKs?=' 'Message-ID: <claim-1@example.test>' \
    'Date: Mon, 30 Nov 2026 11:00:00 +0100' 'MIME-Version: 1.0' 'Content-Type: multipart/mixed; boundary="B1"' '' \
    '--B1' 'Content-Type: multipart/alternative; boundary="B2"' '' '--B2' \
    'Content-Type: text/plain; charset=windows-1252' 'Content-Transfer-Encoding: quoted-printable' '' \
    'La facture n=B0 42 est erron=E9e: le montant d=FB est 120 =80.' '--B2' \
    'Content-Type: text/html; charset=utf-8' '' \
    '<p>La facture</p>' '--B2--' '--B1' 'Content-Type: application/pdf; name="facture.pdf"' \
    'Content-Disposition: attachment; filename="=?UTF-8?Q?facture_=C3=A9t=C3=A9.pdf?="' \
    'Content-Transfer-Encoding: base64' '' 'JVBERi0xLjQKJcfsj6IKNSAwIG9iago=' '--B1--' >"$work/claim.eml"
printf '%s\r\n' 'From: Carol <carol@example.test>' 'To: support@example.test' 'Subject: Newsletter question' \
    'Message-ID: <html-1@example.test>' 'MIME-Version: 1.0' 'Content-Type: text/html; charset=utf-8' \
    'Content-Transfer-Encoding: base64' '' \
    "$(printf '<html><head><style>p{color:red}</style></head><body><h1>Question</h1><p>Bonjour,   <b>comment</b>'`
          `' me d&eacute;sabonner&nbsp;?</p><script>track()</script></body></html>' | base64 -w 76)" >"$work/html.eml"
printf '%s\r\n' 'From: carol@example.test' 'To: support@example.test' 'Subject: Password reset' \
    'Message-ID: <plain-1@example.test>' 'Date: Mon, 30 Nov 2026 12:00:00 +0000' '' 'I cannot log in.' \
    >"$work/plain.eml"
printf 'this is no email at all\r\njust words\r\n' >"$work/malformed.eml"

# --- configuration -----------------------------------------------------------------------------
req PUT /categories/Billing "$key" '{"name":"Billing","priority":40}'
check "category for email is created" 200 "$code"
req PUT /rules/classification/email-billing "$key" \
    '{"order":1,"when":{"all":[{"field":"mediaType","op":"=","value":"email"},
      {"field":"subject","op":"contains","value":"facture"}]},"set":{"category":"Billing"}}'
check "classification rule on email tasks is created" 200 "$code"

mailbox support support x "$imap_port" bogus
check "a mailbox with an unknown tls is refused" 400 "$code"
check_match "the refusal names the field" 'imap.tls' "$(json .status.message)"
req PUT /mailboxes/support "$key" '{"imap":{"host":"127.0.0.1","user":"support","password":42}}'
check "a password that is not a string is refused" 400 "$code"
req PUT /mailboxes/support "$key" '{"imap":{"host":"127.0.0.1","user":"support"}}'
check "a new mailbox without a password is refused" 400 "$code"
req PUT /mailboxes/support "$key" '{"imap":{"host":"127.0.0.1","user":"support","password":"p"},"color":1}'
check "an unknown member is refused" 400 "$code"
check_match "the refusal names it" 'color' "$(json .status.message)"
req PUT /mailboxes/bad%20name "$key" '{"imap":{"host":"127.0.0.1","user":"support","password":"p"}}'
check "a mailbox name with a space is refused" 400 "$code"

mailbox support support pw-support "$imap_port" none 127.0.0.1 \
    "{\"smtp\":{\"host\":\"127.0.0.1\",\"port\":$smtp_port,\"tls\":\"none\",\"from\":\"support@example.test\"}}"
check "mailbox support is created" 200 "$code"
check "its answer holds no password" 0 "$(grep -c pw-support <<<"$body")"
check "its answer says it has one" "true" "$(json .imap.hasPassword)"
check "the database holds the password sealed, not in clear" "0" \
    "$(sql email_t1 -c "SELECT count(*) FROM iwd.mailbox WHERE imap_password LIKE '%pw-support%'")"
req GET /mailboxes "$key"
check "GET /mailboxes lists it" "support" "$(json '.[0].name')"
check "GET /mailboxes holds no password" "0" "$(grep -c pw-support <<<"$body")"

# --- capture ----------------------------------------------------------------------------------
mail_py append "$imap_port" support pw-support "$work/claim.eml" "$work/html.eml" "$work/plain.eml" \
    "$work/malformed.eml" || fail_setup "messages not appended"
wait_for "three captured, one kept aside" 60 '.messagesCaptured == 3 and .messagesFailed == 1' /mailboxes/support
check "three messages are captured and the malformed one kept aside" "3 1" \
    "$(json '"\(.messagesCaptured) \(.messagesFailed)"')"
check_match "the kept-aside message's error is in the mailbox status" 'not an email message' \
    "$(json '.failedMessages[0].error')"
check_match "and in lastError" 'kept aside' "$(json .lastError)"
check "every message of the mailbox is flagged seen after its capture" 0 \
    "$(mail_py unseen "$imap_port" support pw-support)"
req GET "/tasks?capturePoint=email:support" "$key"
check "GET /tasks lists three email tasks" 3 "$(json '.tasks | length')"
claim=$(json '.tasks[] | select(.externalId == "<claim-1@example.test>") | .id')
html=$(json '.tasks[] | select(.externalId == "<html-1@example.test>") | .id')
plain=$(json '.tasks[] | select(.externalId == "<plain-1@example.test>") | .id')
req GET "/tasks/$claim" "$key"
check "the task is an email" "email" "$(json .mediaType)"
check "its subject is decoded (RFC 2047, UTF-8)" "Réclamation facture €" "$(json .subject)"
check "its body is decoded (quoted-printable, windows-1252)" \
    "La facture n° 42 est erronée: le montant dû est 120 €." \
    "$(json .description)"
check "the classification rule on email routed it" "Billing" "$(json .category)"
check "the sender is kept" "jose@example.test José García" \
    "$(json '"\(.attributes.email.from.address) \(.attributes.email.from.name)"')"
check "the recipients are kept" "support@example.test bob@example.test accounts@example.test" \
    "$(json '[.attributes.email.to[].address, .attributes.email.cc[].address] | join(" ")')"
check "the attachment is listed with name, type and decoded size" "facture été.pdf application/pdf 23" \
    "$(json '.attributes.email.attachments[0] | "\(.filename) \(.contentType) \(.size)"')"
check "the date is kept in UTC" "2026-11-30T10:00:00Z" "$(json .attributes.email.date)"
req GET "/tasks/$html" "$key"
check "an HTML-only body becomes text" "Question
Bonjour, comment me désabonner ?" "$(json .description | sed 's/\xc2\xa0/ /g')"
check "an email without a matching rule keeps the default category" "false" \
    "$(json '.category == "Billing"')"

# a message fetched twice (the same Message-ID appended again) stays one task
mail_py append "$imap_port" support pw-support "$work/claim.eml"
for _ in $(seq 1 60); do [ "$(mail_py unseen "$imap_port" support pw-support)" = 0 ] && break; sleep 0.5; done
req GET "/tasks?capturePoint=email:support" "$key"
check "a message appended twice is one task" 3 "$(json '.tasks | length')"

# --- reply ------------------------------------------------------------------------------------
req POST "/tasks/$claim/reply" "$key" \
    '{"body":"Bonjour José,\nla facture est corrigée.\n— Support","complete":true}'
check "a reply is accepted for sending" 202 "$code"
check "it is pending" "pending" "$(json .status)"
reply_id=$(json .messageId)
wait_for "the reply sent" 60 '.status == "completed"' "/tasks/$claim"
check "the reply completes the task when asked" "completed" "$(json .status)"
req GET "/tasks/$claim/replies" "$key"
check "the reply is sent" "sent" "$(json '.[0].status')"
req GET "/tasks/$claim/history" "$key"
check "the history records the reply" "true" "$(json '[.[].event] | index("email_replied") != null')"
headers=$(mail_py headers "$imap_port" jose pw-jose)
check_match "the reply is in the sender's mailbox, threaded" "In-Reply-To: <claim-1@example.test>" "$headers"
check_match "with the reply's Message-ID" "Message-I[dD]: $reply_id" "$headers"
check_match "with References" "References: <claim-1@example.test>" "$headers"
check_match "with the subject answered" "Subject: Re: =\?" "$headers"
check_match "with the body in UTF-8 quoted-printable" "corrig=C3=A9e" "$headers"
req POST "/tasks/$claim/reply" "$key" '{"body":"again"}'
check "a closed task is not answered" 400 "$code"
req POST "/tasks/$claim/reply" "$key" '{"text":"x"}'
check "a reply without a body is refused" 400 "$code"
req POST /tasks "$key" '{"externalId":"web-1","capturePoint":"web","subject":"not an email"}'
req POST "/tasks/$(json .id)/reply" "$key" '{"body":"x"}'
check_match "a task that did not come by email cannot be answered" 'did not come by email' "$(json .status.message)"

# an answer to an open task joins its history
printf '%s\r\n' 'From: carol@example.test' 'To: support@example.test' 'Subject: Re: Password reset' \
    'Message-ID: <plain-2@example.test>' 'In-Reply-To: <plain-1@example.test>' \
    'References: <plain-1@example.test>' '' 'It works again, thanks.' >"$work/answer.eml"
mail_py append "$imap_port" support pw-support "$work/answer.eml"
wait_for "the answer threaded" 60 '.messagesThreaded == 1' /mailboxes/support
check "an answer to an open task makes no new task" 3 \
    "$(sql email_t1 -c "SELECT count(*) FROM iwd.task_all WHERE capture_point = 'email:support'")"
req GET "/tasks/$plain/history" "$key"
check_match "it is in the open task's history" "^It works again, thanks." \
    "$(json '.[] | select(.event == "email_received") | .detail.body')"

# --- faults -----------------------------------------------------------------------------------
mailbox wrongpw support not-the-password "$imap_port" none
wait_for "the login refusal" 60 '.lastError != null' /mailboxes/wrongpw
check_match "a wrong password shows in the mailbox status" '[Ll]ogin' "$(json .lastError)"
mailbox down support pw-support "$(free_port)" none
wait_for "the connection refusal" 60 '.lastError != null' /mailboxes/down
check_match "a server that is down shows in the mailbox status" '[Cc]onnect' "$(json .lastError)"
mailbox untrusted support pw-support "$imaps_port" implicit localhost
wait_for "the certificate refusal" 60 '.lastError != null' /mailboxes/untrusted
check_match "an untrusted certificate shows in the mailbox status" '[Cc]ertificate|SSL' "$(json .lastError)"
for m in wrongpw down untrusted; do req DELETE "/mailboxes/$m" "$key"; done
check "a mailbox is deleted" 200 "$code"
req GET /mailboxes/untrusted "$key"
check "a deleted mailbox is gone" 404 "$code"

mail_py big "$work/big.eml" 20 || fail_setup "no big message"
mail_py append "$imap_port" support pw-support "$work/big.eml" || fail_setup "the big message not appended"
wait_for "the 20 MB message" 180 '.messagesCaptured == 4' /mailboxes/support
check "a 20 MB message is captured" 4 "$(json .messagesCaptured)"
req GET "/tasks?capturePoint=email:support&q=scans" "$key"
check "its attachment is listed, not stored" "scans.bin 20971520" \
    "$(json '.tasks[0].attributes.email.attachments[0] | "\(.filename) \(.size)"')"

# kill -9 in the middle of a mailbox: every message is one task
mail_py bulk "$imap_port" bulk pw-bulk 300 kill || fail_setup "the bulk messages not appended"
mailbox bulk bulk pw-bulk "$imap_port" none
check "mailbox bulk is created" 200 "$code"
# kill -9 as soon as a batch is between fetch and commit (its messages recorded as being fetched)
for _ in $(seq 1 3000); do
    [ "$(sql email_t1 -c "SELECT count(*) FROM iwd.mailbox_message WHERE mailbox = 'bulk' AND status = 'fetching'")" \
        -gt 0 ] && break
    sleep 0.02
done
kill -9 "$sidecar_pid"; wait "$sidecar_pid" 2>/dev/null; sidecar_pid=""
at_kill=$(sql email_t1 -c "SELECT count(*) FILTER (WHERE status = 'fetching') || ' ' ||
                                  count(*) FILTER (WHERE status = 'captured') FROM iwd.mailbox_message
                           WHERE mailbox = 'bulk'")
echo "# at kill -9: ${at_kill% *} messages being fetched, ${at_kill#* } captured"
check "the kill came between fetch and commit of some messages" "true" "$([ "${at_kill% *}" -gt 0 ] && echo true)"
sidecar_start || fail_setup "the sidecar did not start again"
wait_for "the whole bulk captured" 300 '.messagesCaptured >= 300' /mailboxes/bulk
check "every message is captured after the restart" 300 "$(json .messagesCaptured)"
check "each message is one task" "300 300" "$(sql email_t1 -c "SELECT count(*) || ' ' || count(DISTINCT external_id)
                                                         FROM iwd.task_all WHERE capture_point = 'email:bulk'")"
check "each message is flagged seen" 0 "$(mail_py unseen "$imap_port" bulk pw-bulk)"

kill -0 "$sidecar_pid" 2>/dev/null
check "the sidecar is alive at the end" 0 "$?"
grep -q "ERROR: AddressSanitizer\|runtime error" "$work/sidecar.log" && sed -n '1,40p' "$work/sidecar.log"
check "no sanitizer report" 0 "$(grep -c "ERROR: AddressSanitizer\|runtime error" "$work/sidecar.log")"
summary
