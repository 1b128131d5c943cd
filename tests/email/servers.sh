# The email suite's and benchmark's mail servers, started in a work directory on free ports (sourced after
# scripts/lib.sh): Dovecot (Debian's dovecot-imapd) with a throwaway configuration, its users in a
# passwd-file, their mail in Maildirs under the work directory, on a plain IMAP port (STARTTLS offered) and
# an implicit-TLS port with a self-signed certificate; and an SMTP server (Debian's python3-aiosmtpd,
# tests/email/smtp_server.py) that delivers what it accepts into the recipients' Dovecot Maildirs.

mail_dir=""
imap_port=""
imaps_port=""
smtp_port=""
smtp_pid=""

# mail_servers_start DIR USER:PASSWORD...: starts Dovecot and the SMTP server for these users (a user's
# address is user@example.test)
mail_servers_start() {
    mail_dir=$1; shift
    local owner=nobody group=nogroup
    mkdir -p "$mail_dir/run" "$mail_dir/state" "$mail_dir/mail"
    chmod 755 "$mail_dir" "$mail_dir/mail"
    : >"$mail_dir/users"
    for u in "$@"; do
        echo "${u%%:*}:{PLAIN}${u#*:}::::::" >>"$mail_dir/users"
        mkdir -p "$mail_dir/mail/${u%%:*}/Maildir"/{cur,new,tmp}
    done
    if [ "$(id -u)" -eq 0 ]; then chown -R "$owner:$group" "$mail_dir/mail"; else owner=$(id -un); group=$(id -gn); fi
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout "$mail_dir/key.pem" \
        -out "$mail_dir/cert.pem" >/dev/null 2>&1 || return 1
    imap_port=$(free_port)
    imaps_port=$(free_port)
    smtp_port=$(free_port)
    cat >"$mail_dir/dovecot.conf" <<CONF
base_dir = $mail_dir/run
state_dir = $mail_dir/state
log_path = $mail_dir/dovecot.log
instance_name = iwd-email-test-$imap_port
listen = 127.0.0.1
protocols = imap
ssl = yes
ssl_cert = <$mail_dir/cert.pem
ssl_key = <$mail_dir/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
last_valid_uid = 0
mail_location = maildir:$mail_dir/mail/%u/Maildir
# throwaway mail: no fsync of each flag change and delivery (a loaded machine's fsync would measure the disk)
mail_fsync = never
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $mail_dir/users
}
userdb {
  driver = static
  args = uid=$owner gid=$group home=$mail_dir/mail/%u
}
service imap-login {
  inet_listener imap {
    port = $imap_port
  }
  inet_listener imaps {
    port = $imaps_port
    ssl = yes
  }
}
service anvil {
  chroot =
}
service imap-login {
  chroot =
}
CONF
    if [ "$(id -u)" -ne 0 ]; then
        printf 'default_login_user = %s\ndefault_internal_user = %s\n' "$owner" "$owner" >>"$mail_dir/dovecot.conf"
    fi
    dovecot -c "$mail_dir/dovecot.conf" || return 1
    # as the mail's owner (what it delivers is Dovecot's to move), from a copy it can read; Debian's
    # interpreter, for which python3-aiosmtpd is installed
    cp "$(dirname "${BASH_SOURCE[0]}")/smtp_server.py" "$mail_dir/smtp_server.py"
    chmod 644 "$mail_dir/smtp_server.py"
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && exec setpriv --reuid="$owner" --regid="$group" --clear-groups /usr/bin/python3 \
            "$mail_dir/smtp_server.py" 127.0.0.1 "$smtp_port" "$mail_dir/mail") >"$mail_dir/smtp.log" 2>&1 &
    else
        /usr/bin/python3 "$mail_dir/smtp_server.py" 127.0.0.1 "$smtp_port" "$mail_dir/mail" >"$mail_dir/smtp.log" 2>&1 &
    fi
    smtp_pid=$!
    for _ in $(seq 1 100); do
        if curl -s "imap://127.0.0.1:$imap_port" -u "${1%%:*}:${1#*:}" -X CAPABILITY >/dev/null 2>&1 &&
           python3 -c "import socket; socket.create_connection(('127.0.0.1', $smtp_port), 1)" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

mail_servers_stop() {
    [ -n "$mail_dir" ] && [ -f "$mail_dir/dovecot.conf" ] && dovecot -c "$mail_dir/dovecot.conf" stop 2>/dev/null
    [ -n "$smtp_pid" ] && kill "$smtp_pid" 2>/dev/null
    smtp_pid=""
    return 0
}

# imap_append USER PASSWORD FILE: appends a message file to the user's INBOX (curl: IMAP APPEND)
imap_append() {
    curl -sS --fail "imap://127.0.0.1:$imap_port/INBOX" -u "$1:$2" -T "$3"
}
