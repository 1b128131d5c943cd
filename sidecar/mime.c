/*
 * iwd-sidecar MIME (mime.h): GMime parses and composes, libxml2 reads HTML; this file only chooses what a
 * task keeps of a message and bounds it.
 */
#include <stdio.h>
#include <string.h>

#include <gmime/gmime.h>
#include <libxml/HTMLparser.h>
#include <openssl/sha.h>

#include "mime.h"

void iwd_mime_init(void)
{
    g_mime_init();
    xmlInitParser();
}

/* A message id as "<id>" (GMime gives it without the brackets); NULL when empty. */
static json_t *bracketed(const char *id)
{
    char buf[1024];

    if (id == NULL || *id == '\0')
        return NULL;
    snprintf(buf, sizeof(buf), "<%s>", id);
    return json_string(buf);
}

/* The text as valid UTF-8, cut at max bytes on a character boundary (new reference). */
static json_t *utf8_text(const char *text, size_t max)
{
    gchar *valid = g_utf8_make_valid(text != NULL ? text : "", -1);
    size_t len = strlen(valid);
    json_t *out;

    if (len > max) {
        const gchar *end = g_utf8_find_prev_char(valid, valid + max + 1);
        len = end != NULL ? (size_t)(end - valid) : 0;
    }
    out = json_stringn(valid, len);
    g_free(valid);
    return out;
}

/* Append the mailboxes of an address list (groups flattened) as {name, address}, at most the bound. */
static void append_addresses(json_t *out, InternetAddressList *list)
{
    int n = list != NULL ? internet_address_list_length(list) : 0;

    for (int i = 0; i < n && json_array_size(out) < IWD_MIME_ADDRESSES_MAX; i++) {
        InternetAddress *a = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_GROUP(a)) {
            append_addresses(out, internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a)));
        } else if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
            const char *name = internet_address_get_name(a);
            bool named = name != NULL && *name != '\0';
            json_array_append_new(out, json_pack("{s:o, s:o}", "name", named ? utf8_text(name, 256) : json_null(),
                                                 "address", utf8_text(internet_address_mailbox_get_addr(
                                                                          INTERNET_ADDRESS_MAILBOX(a)), 256)));
        }
    }
}

/* What the HTML converter writes: text, and whether the last byte written ends a line or a space. */
typedef struct html_text {
    GString *out;
    size_t max;
} html_text_t;

static bool is_block(const xmlChar *name)
{
    static const char *const blocks[] = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                                         "blockquote", "pre", "table", "ul", "ol", "hr", "section", "article"};
    for (size_t i = 0; i < sizeof(blocks) / sizeof(*blocks); i++)
        if (xmlStrcasecmp(name, (const xmlChar *)blocks[i]) == 0)
            return true;
    return false;
}

/* The text of an HTML subtree: runs of white space as one space, a line break around block elements. */
static void html_walk(xmlNodePtr node, html_text_t *t)
{
    for (; node != NULL && t->out->len < t->max; node = node->next) {
        if (node->type == XML_TEXT_NODE || node->type == XML_CDATA_SECTION_NODE) {
            for (const xmlChar *p = node->content; p != NULL && *p != '\0'; p++) {
                bool space = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f';
                char last = t->out->len > 0 ? t->out->str[t->out->len - 1] : '\n';
                if (!space)
                    g_string_append_c(t->out, (char)*p);
                else if (last != ' ' && last != '\n')
                    g_string_append_c(t->out, ' ');
            }
        } else if (node->type == XML_ELEMENT_NODE) {
            if (xmlStrcasecmp(node->name, (const xmlChar *)"script") == 0 ||
                xmlStrcasecmp(node->name, (const xmlChar *)"style") == 0 ||
                xmlStrcasecmp(node->name, (const xmlChar *)"head") == 0)
                continue;
            html_walk(node->children, t);
            if (is_block(node->name)) {
                while (t->out->len > 0 && t->out->str[t->out->len - 1] == ' ')
                    g_string_truncate(t->out, t->out->len - 1);
                g_string_append_c(t->out, '\n');
            }
        }
    }
}

/* The text of an HTML document (g_free'd by the caller). */
static char *html_to_text(const char *html)
{
    html_text_t t = {g_string_new(NULL), IWD_MIME_BODY_MAX};
    htmlDocPtr doc = htmlReadMemory(html, (int)strlen(html), NULL, "UTF-8",
                                    HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                                        HTML_PARSE_NONET | HTML_PARSE_NOBLANKS);

    if (doc != NULL) {
        html_walk(xmlDocGetRootElement(doc), &t);
        xmlFreeDoc(doc);
    }
    while (t.out->len > 0 && (t.out->str[t.out->len - 1] == '\n' || t.out->str[t.out->len - 1] == ' '))
        g_string_truncate(t.out, t.out->len - 1);
    return g_string_free(t.out, FALSE);
}

/* What the walk over a message's parts finds: the first plain and HTML bodies, the attachments. */
typedef struct parts {
    char *plain, *html; /* g_free'd */
    json_t *attachments;
} parts_t;

/* The decoded size of a part's content. */
static gint64 content_size(GMimePart *part)
{
    GMimeDataWrapper *content = g_mime_part_get_content(part);
    GMimeStream *null;
    gint64 n;

    if (content == NULL)
        return 0;
    null = g_mime_stream_null_new();
    n = g_mime_data_wrapper_write_to_stream(content, null);
    g_object_unref(null);
    return n < 0 ? 0 : n;
}

static void visit_part(GMimeObject *parent, GMimeObject *part, gpointer data)
{
    parts_t *p = data;
    GMimeContentType *type = g_mime_object_get_content_type(part);
    bool attachment;

    (void)parent;
    if (!GMIME_IS_PART(part))
        return; /* multiparts are walked into; an attached message/rfc822 is listed below by GMime's walk */
    attachment = g_mime_part_is_attachment(GMIME_PART(part)) || g_mime_part_get_filename(GMIME_PART(part)) != NULL;
    if (!attachment && GMIME_IS_TEXT_PART(part) && g_mime_content_type_is_type(type, "text", "plain") &&
        p->plain == NULL) {
        p->plain = g_mime_text_part_get_text(GMIME_TEXT_PART(part));
    } else if (!attachment && GMIME_IS_TEXT_PART(part) && g_mime_content_type_is_type(type, "text", "html") &&
               p->html == NULL) {
        p->html = g_mime_text_part_get_text(GMIME_TEXT_PART(part));
    } else if (json_array_size(p->attachments) < IWD_MIME_ATTACHMENTS_MAX &&
               (attachment || !g_mime_content_type_is_type(type, "text", "*"))) {
        char *mime_type = g_mime_content_type_get_mime_type(type);
        const char *filename = g_mime_part_get_filename(GMIME_PART(part));
        json_array_append_new(p->attachments,
                              json_pack("{s:o, s:o, s:I}", "filename",
                                        filename != NULL ? utf8_text(filename, 256) : json_null(), "contentType",
                                        utf8_text(mime_type, 256), "size", (json_int_t)content_size(GMIME_PART(part))));
        g_free(mime_type);
    }
}

/* The message's ids it answers: In-Reply-To and References, as "<id>" arrays. */
static void thread_ids(GMimeMessage *msg, json_t *doc)
{
    const char *in_reply_to = g_mime_object_get_header(GMIME_OBJECT(msg), "In-Reply-To");
    const char *references = g_mime_object_get_header(GMIME_OBJECT(msg), "References");
    json_t *refs = json_array();

    if (in_reply_to != NULL) {
        char *id = g_mime_utils_decode_message_id(in_reply_to);
        json_t *v = bracketed(id);
        json_object_set_new(doc, "inReplyTo", v != NULL ? v : json_null());
        g_free(id);
    }
    if (references != NULL) {
        GMimeReferences *list = g_mime_references_parse(NULL, references);
        int n = list != NULL ? g_mime_references_length(list) : 0;
        for (int i = n > IWD_MIME_REFERENCES_MAX ? n - IWD_MIME_REFERENCES_MAX : 0; i < n; i++) {
            json_t *v = bracketed(g_mime_references_get_message_id(list, i));
            if (v != NULL)
                json_array_append_new(refs, v);
        }
        if (list != NULL)
            g_mime_references_free(list);
    }
    json_object_set_new(doc, "references", refs);
}

json_t *iwd_mime_decode(const char *data, size_t len, char *why, size_t size)
{
    GMimeStream *stream = g_mime_stream_mem_new_with_buffer(data, len);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
    parts_t parts = {NULL, NULL, json_array()};
    json_t *doc = NULL, *from = json_array(), *to = json_array(), *cc = json_array(), *id;
    GDateTime *date;

    g_object_unref(parser);
    g_object_unref(stream);
    if (msg == NULL || g_mime_header_list_get_count(g_mime_object_get_header_list(GMIME_OBJECT(msg))) == 0) {
        snprintf(why, size, "not an email message: no header");
        goto done;
    }
    append_addresses(from, g_mime_message_get_from(msg));
    if (json_array_size(from) == 0)
        append_addresses(from, g_mime_message_get_sender(msg));
    if (json_array_size(from) == 0) {
        snprintf(why, size, "malformed message: no sender address (From)");
        goto done;
    }
    append_addresses(to, g_mime_message_get_to(msg));
    append_addresses(cc, g_mime_message_get_cc(msg));
    id = bracketed(g_mime_message_get_message_id(msg));
    if (id == NULL) {
        unsigned char digest[SHA256_DIGEST_LENGTH];
        char text[2 * SHA256_DIGEST_LENGTH + 32];
        SHA256((const unsigned char *)data, len, digest);
        text[0] = '<';
        for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
            snprintf(text + 1 + 2 * i, 3, "%02x", digest[i]);
        strcat(text, "@iwd.invalid>");
        id = json_string(text);
    }
    g_mime_message_foreach(msg, visit_part, &parts);
    if (GMIME_IS_PART(g_mime_message_get_mime_part(msg)) && parts.plain == NULL && parts.html == NULL &&
        json_array_size(parts.attachments) == 0)
        visit_part(NULL, g_mime_message_get_mime_part(msg), &parts);
    if (parts.plain == NULL && parts.html != NULL)
        parts.plain = html_to_text(parts.html);
    doc = json_pack("{s:o, s:o, s:o, s:o, s:O, s:O, s:o, s:O}", "messageId", id, "subject",
                    utf8_text(g_mime_message_get_subject(msg), IWD_MIME_SUBJECT_MAX), "body",
                    utf8_text(parts.plain, IWD_MIME_BODY_MAX), "from", json_incref(json_array_get(from, 0)), "to",
                    to, "cc", cc, "inReplyTo", json_null(), "attachments", parts.attachments);
    if ((date = g_mime_message_get_date(msg)) != NULL) {
        GDateTime *utc = g_date_time_to_utc(date);
        gchar *iso = utc != NULL ? g_date_time_format(utc, "%Y-%m-%dT%H:%M:%SZ") : NULL;
        if (iso != NULL)
            json_object_set_new(doc, "date", json_string(iso));
        g_free(iso);
        if (utc != NULL)
            g_date_time_unref(utc);
    }
    thread_ids(msg, doc);
done:
    json_decref(from);
    json_decref(to);
    json_decref(cc);
    json_decref(parts.attachments);
    g_free(parts.plain);
    g_free(parts.html);
    if (msg != NULL)
        g_object_unref(msg);
    return doc;
}

/* An id "<id>" without its brackets, for GMime (in buf). */
static const char *unbracketed(const char *id, char *buf, size_t size)
{
    size_t len = strlen(id);

    if (len >= 2 && id[0] == '<' && id[len - 1] == '>') {
        snprintf(buf, size, "%.*s", (int)(len - 2), id + 1);
        return buf;
    }
    return id;
}

char *iwd_mime_reply(const char *from, json_t *to, const char *subject, const char *message_id,
                     const char *in_reply_to, json_t *references, const char *body, char *why, size_t size)
{
    const char *to_address = json_string_value(json_object_get(to, "address"));
    const char *to_name = json_string_value(json_object_get(to, "name"));
    GMimeMessage *msg;
    GMimeTextPart *part;
    GMimeFormatOptions *options;
    GDateTime *now;
    GString *refs = g_string_new(NULL);
    char id[1024], *text, *out;
    size_t i;
    json_t *ref;

    if (to_address == NULL || strchr(to_address, '@') == NULL) {
        snprintf(why, size, "the task's message has no sender address to answer");
        g_string_free(refs, TRUE);
        return NULL;
    }
    msg = g_mime_message_new(TRUE);
    g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_FROM, NULL, from);
    g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, to_name, to_address);
    if (subject == NULL)
        subject = "";
    if (g_ascii_strncasecmp(subject, "Re:", 3) == 0) {
        g_mime_message_set_subject(msg, subject, "utf-8");
    } else {
        gchar *re = g_strconcat("Re: ", subject, NULL);
        g_mime_message_set_subject(msg, re, "utf-8");
        g_free(re);
    }
    g_mime_message_set_message_id(msg, unbracketed(message_id, id, sizeof(id)));
    now = g_date_time_new_now_utc();
    g_mime_message_set_date(msg, now);
    g_date_time_unref(now);
    if (in_reply_to != NULL)
        g_mime_object_set_header(GMIME_OBJECT(msg), "In-Reply-To", in_reply_to, NULL);
    json_array_foreach(references, i, ref) {
        if (json_is_string(ref))
            g_string_append_printf(refs, "%s%s", refs->len > 0 ? " " : "", json_string_value(ref));
    }
    if (refs->len > 0)
        g_mime_object_set_header(GMIME_OBJECT(msg), "References", refs->str, NULL);
    g_string_free(refs, TRUE);
    part = g_mime_text_part_new_with_subtype("plain");
    g_mime_text_part_set_text(part, body); /* in the smallest charset that holds it: us-ascii, latin-1 or utf-8 */
    g_mime_part_set_content_encoding(GMIME_PART(part), GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
    g_mime_message_set_mime_part(msg, GMIME_OBJECT(part));
    g_object_unref(part);
    options = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(options, GMIME_NEWLINE_FORMAT_DOS);
    text = g_mime_object_to_string(GMIME_OBJECT(msg), options);
    g_mime_format_options_free(options);
    g_object_unref(msg);
    out = strdup(text);
    g_free(text);
    return out;
}
