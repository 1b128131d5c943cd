/*
 * iwd-sidecar email: the tenants' mailboxes polled over IMAP and their messages captured as tasks, and the
 * replies asked through POST /tasks/{id}/reply sent over SMTP, by a thread of its own (never a worker
 * thread's loop). What it works on lives in the tenant database (sql/email.sql); the routes that configure
 * mailboxes and ask replies are routes_mailboxes.c, which wake it (tenant_work.h, IWD_WORK_EMAIL).
 */
#ifndef IWD_EMAIL_H
#define IWD_EMAIL_H

#include "tenant.h"

/* Prepare the poller before any thread starts (GMime); IWD_ERR with the reason on stderr. */
int iwd_email_init(void);

/* Start the poller's thread (after iwd_email_init and libcurl's global set-up), for as long as the process runs. */
void iwd_email_start(void);

#endif
