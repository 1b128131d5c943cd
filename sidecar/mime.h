/*
 * iwd-sidecar MIME: an email message decoded into what its task holds, and a reply composed, through GMime
 * (Debian's libgmime-3.0: RFC 5322 headers and addresses, RFC 2047 encoded words, MIME parts,
 * quoted-printable and base64, charsets converted to UTF-8); an HTML-only body becomes text through
 * libxml2's HTML parser. No I/O: email.c fetches and sends.
 */
#ifndef IWD_MIME_H
#define IWD_MIME_H

#include <stddef.h>

#include <jansson.h>

/* Bounds of what a message puts in its task: the rest is cut (text) or left out (list members). */
#define IWD_MIME_BODY_MAX (1024 * 1024)
#define IWD_MIME_SUBJECT_MAX 4096
#define IWD_MIME_ADDRESSES_MAX 100
#define IWD_MIME_ATTACHMENTS_MAX 100
#define IWD_MIME_REFERENCES_MAX 50

/* Set GMime up, once, before any thread uses this module. */
void iwd_mime_init(void);

/*
 * The capture document of a message's bytes (new reference): {messageId, subject, body, from, to, cc, date,
 * inReplyTo, references, attachments: [{filename, contentType, size}]}, addresses as {name, address}, ids
 * as "<id>" (a message without a Message-ID gets "<sha256 of its bytes@iwd.invalid>", the same whenever it
 * is read). NULL with why when the message is malformed: no header, no sender address.
 */
json_t *iwd_mime_decode(const char *data, size_t len, char *why, size_t size);

/*
 * A reply's message text (CRLF line ends, malloc'd): from, to (an address object {name, address}), the
 * subject answered ("Re: " added once), message_id ("<id>"), the ids it answers (in_reply_to, references:
 * a JSON array of "<id>"), the body as UTF-8 text (quoted-printable). NULL with why when an address is
 * unusable.
 */
char *iwd_mime_reply(const char *from, json_t *to, const char *subject, const char *message_id,
                     const char *in_reply_to, json_t *references, const char *body, char *why, size_t size);

#endif
