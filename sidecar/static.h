/*
 * iwd-sidecar static files: the Workload Manager page under /iwd/ui/, its files compiled into the binary
 * (gen/ui_assets.c, written from sidecar/ui/ by embed-ui.sh at build time), so that the page is always the
 * one of the running sidecar and an image ships nothing beside the binary. Nothing is read from the
 * filesystem while serving: a path is looked up in the compiled table, so no path can reach another file.
 */
#ifndef IWD_STATIC_H
#define IWD_STATIC_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

/* Where the page is served. */
#define IWD_UI_PREFIX "/iwd/ui"

/* One embedded file: its path below IWD_UI_PREFIX ("/index.html"), its bytes and length. */
typedef struct iwd_ui_file {
    const char *path;
    const unsigned char *bytes;
    size_t len;
} iwd_ui_file_t;

/* Compute the files' ETags once, before the threads serve; IWD_OK (IWD_ERR when a digest fails). */
int iwd_static_init(void);

/* Whether a request's path is the page's (IWD_UI_PREFIX or below it). */
bool iwd_static_path(h2o_req_t *req);

/*
 * Answer a request for the page: GET or HEAD of an embedded file (200, or 304 when If-None-Match holds its
 * ETag), 301 from IWD_UI_PREFIX to IWD_UI_PREFIX "/", 404 for any other path, 405 for another method; IWD_OK.
 */
int iwd_static_serve(iwd_call_t *call);

#endif
