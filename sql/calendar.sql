-- iwd business calendars: working-time arithmetic (deadlines in working hours).

-- ---------------------------------------------------------------------------------------------
-- Business calendars
-- ---------------------------------------------------------------------------------------------

-- start + minutes of working time in the calendar (working days and hours, holidays, time zone).
CREATE FUNCTION iwd.business_time_add(start timestamptz, minutes int, calendar text) RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $$
DECLARE
    c iwd.calendar;
    v_local timestamp;
    v_day date;
    v_left interval := make_interval(mins => minutes);
    v_open timestamp;
    v_close timestamp;
BEGIN
    SELECT * INTO c FROM iwd.calendar k WHERE k.name = business_time_add.calendar;
    IF NOT FOUND THEN
        PERFORM iwd._not_found('calendar', calendar);
    END IF;
    IF minutes < 0 THEN
        RAISE EXCEPTION 'minutes must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_local := start AT TIME ZONE c.time_zone;
    -- at most ten years of days: a calendar whose every day is a holiday never ends
    FOR i IN 1 .. 3660 LOOP
        v_day := v_local::date;
        IF extract(isodow FROM v_day)::int = ANY (c.work_days) AND NOT v_day = ANY (c.holidays) THEN
            v_open := v_day + c.work_start;
            v_close := v_day + c.work_end;
            v_local := greatest(v_local, v_open);
            IF v_local < v_close THEN
                IF v_local + v_left <= v_close THEN
                    RETURN (v_local + v_left) AT TIME ZONE c.time_zone;
                END IF;
                v_left := v_left - (v_close - v_local);
            END IF;
        END IF;
        v_local := (v_day + 1)::timestamp;
    END LOOP;
    RAISE EXCEPTION 'calendar "%" has no working time in the next ten years', calendar
        USING ERRCODE = 'invalid_parameter_value';
END $$;
