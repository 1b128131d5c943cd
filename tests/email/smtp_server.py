"""The email suite's SMTP server: Debian's aiosmtpd, delivering every accepted message into the Maildir of
each recipient (user@domain -> MAIL_ROOT/user/Maildir) the way a local delivery agent does (maildir's
tmp/ then new/), where Dovecot serves it. Usage: smtp_server.py HOST PORT MAIL_ROOT"""
import mailbox
import os
import sys
import threading

from aiosmtpd.controller import Controller


class MaildirDelivery:
    def __init__(self, root):
        self.root = root

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        user = address.split("@", 1)[0]
        if not os.path.isdir(os.path.join(self.root, user, "Maildir")):
            return "550 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            box = mailbox.Maildir(os.path.join(self.root, rcpt.split("@", 1)[0], "Maildir"), create=False)
            box.add(envelope.original_content or envelope.content)
        print("delivered", envelope.mail_from, envelope.rcpt_tos, flush=True)
        return "250 delivered"


def main():
    host, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    controller = Controller(MaildirDelivery(root), hostname=host, port=port)
    controller.start()
    print("listening", host, port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
