/* iwd-sidecar Pushgateway: the Data Mart job metrics of every tenant, pushed when IWD_PUSHGATEWAY_URL is set. */
#ifndef IWD_PUSH_H
#define IWD_PUSH_H

/* The pushing thread's body: a push of every tenant each IWD_PUSH_INTERVAL seconds, for as long as the process runs. */
void *iwd_push_main(void *arg);

#endif
