/* iwd-sidecar clock: the monotonic time that timeouts, back-offs, caches and durations are measured in. */
#ifndef IWD_CLOCK_H
#define IWD_CLOCK_H

#include <stdint.h>

/* Milliseconds of the monotonic clock (CLOCK_MONOTONIC), for deadlines and expiries. */
int64_t iwd_now_ms(void);

/* The same with sub-millisecond precision, for durations reported in metrics and logs. */
double iwd_now_ms_precise(void);

#endif
