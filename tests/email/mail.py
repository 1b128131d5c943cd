"""The email suite's and benchmark's messages: real MIME made by Python's email package, appended over IMAP
(imaplib, no flags: the messages arrive unread, as delivered mail does).
Usage:
  mail.py append PORT USER PASSWORD FILE...   append message files to USER's INBOX on 127.0.0.1:PORT
  mail.py bulk PORT USER PASSWORD N PREFIX     append N small messages, Message-ID <PREFIX-i@example.test>
  mail.py big FILE MEGABYTES                   write a message with an attachment of that size
  mail.py unseen PORT USER PASSWORD            print the number of unread messages of the INBOX
  mail.py headers PORT USER PASSWORD           print the headers of every message of the INBOX, blank-line separated
"""
import email.message
import email.utils
import imaplib
import os
import sys


def connect(port, user, password):
    imap = imaplib.IMAP4("127.0.0.1", int(port))
    imap.login(user, password)
    return imap


def append(imap, data):
    typ, answer = imap.append("INBOX", None, None, data)
    if typ != "OK":
        sys.exit("append refused: %r" % answer)


def small(i, prefix):
    m = email.message.EmailMessage()
    m["From"] = "Customer %d <customer%d@example.test>" % (i, i)
    m["To"] = "bulk@example.test"
    m["Subject"] = "Order %d: where is my parcel? – délai" % i
    m["Date"] = email.utils.formatdate(localtime=False)
    m["Message-ID"] = "<%s-%d@example.test>" % (prefix, i)
    m.set_content("Hello,\nmy order %d has not arrived yet. Could you check?\nThanks\n" % i)
    return m.as_bytes(policy=email.policy.SMTP)


def main():
    cmd = sys.argv[1]
    if cmd == "append":
        imap = connect(*sys.argv[2:5])
        for path in sys.argv[5:]:
            with open(path, "rb") as f:
                append(imap, f.read())
        imap.logout()
    elif cmd == "bulk":
        imap = connect(*sys.argv[2:5])
        for i in range(int(sys.argv[5])):
            append(imap, small(i, sys.argv[6]))
        imap.logout()
    elif cmd == "big":
        m = email.message.EmailMessage()
        m["From"] = "Archive <archive@example.test>"
        m["To"] = "support@example.test"
        m["Subject"] = "Scans of the contract"
        m["Message-ID"] = "<big-%s@example.test>" % sys.argv[3]
        m.set_content("The scans are attached.\n")
        m.add_attachment(os.urandom(int(sys.argv[3]) * 1024 * 1024), maintype="application", subtype="octet-stream",
                         filename="scans.bin")
        with open(sys.argv[2], "wb") as f:
            f.write(m.as_bytes(policy=email.policy.SMTP))
    elif cmd == "unseen":
        imap = connect(*sys.argv[2:5])
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("SEARCH", None, "UNSEEN")
        print(len(data[0].split()))
        imap.logout()
    elif cmd == "headers":
        imap = connect(*sys.argv[2:5])
        imap.select("INBOX", readonly=True)
        typ, data = imap.uid("SEARCH", None, "ALL")
        for uid in data[0].split():
            typ, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
            print(parts[0][1].decode("utf-8", "replace").replace("\r\n", "\n"))
            print()
        imap.logout()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    import email.policy  # noqa: E402 (used by small and big)
    main()
