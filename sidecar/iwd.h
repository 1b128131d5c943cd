/*
 * iwd-sidecar: what every module shares, the return convention and the API's prefix.
 *
 * The error convention. A function that can fail returns IWD_OK or IWD_ERR (not 0/-1, not a bool), and its
 * comment says when IWD_ERR means that it has answered the request already; a function that answers the
 * request (a route's handler) returns IWD_OK once it has. Every error a client sees is made by
 * iwd_respond_error (http.h): a 4xx or 5xx with the body {"status":{"code":N,"message":"..."}}, 4xx for what
 * the client can fix, 5xx for what it cannot (503 with Retry-After when retrying will do, answer.h); a
 * failure the client cannot act on is logged (log.h) with what the operator needs, not sent.
 */
#ifndef IWD_H
#define IWD_H

#define IWD_OK 0
#define IWD_ERR -1

#ifndef IWD_VERSION
#error "IWD_VERSION is passed by the build (the top Makefile's EXTVERSION; see sidecar/Makefile)"
#endif
#define IWD_API_PREFIX "/iwd/v3"

#endif
