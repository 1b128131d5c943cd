-- iwd SQL API, shared helpers: input checking, the not-found error and the REST timestamp shape.
-- Every API function takes and returns jsonb in the REST shape (camelCase keys), so that each REST
-- call of iwd-sidecar is one SQL call. Errors: 22023 invalid input (naming the field), P0002
-- unknown object, 55000 illegal transition.

-- ---------------------------------------------------------------------------------------------
-- Input checking helpers
-- ---------------------------------------------------------------------------------------------

-- Raise 22023 unless doc is an object whose keys are all allowed and required ones present.
CREATE FUNCTION iwd._check_object(doc jsonb, what text, allowed text[], required text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    k text;
BEGIN
    IF doc IS NULL OR jsonb_typeof(doc) <> 'object' THEN
        RAISE EXCEPTION '% must be a JSON object', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT key INTO k FROM jsonb_object_keys(doc) AS key WHERE key <> ALL (allowed) ORDER BY key LIMIT 1;
    IF k IS NOT NULL THEN
        RAISE EXCEPTION 'unknown key "%" in %', k, what USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('Allowed keys: %s.', array_to_string(allowed, ', '));
    END IF;
    FOREACH k IN ARRAY required LOOP
        IF coalesce(jsonb_typeof(doc -> k), 'null') = 'null' THEN
            RAISE EXCEPTION '% field "%" is required', what, k USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
END $$;

-- A string member of doc of at most max_len bytes (NULL when absent or null), or 22023 naming it. Names
-- and ids take at most 256 bytes (IWD_NAME_MAX, extension/draft.h), descriptions 16 KB (IWD_TEXT_MAX).
CREATE FUNCTION iwd._str(doc jsonb, key text, what text, max_len int DEFAULT 256) RETURNS text
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION '% field "%" must be a string', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF doc ->> key = '' THEN
        RAISE EXCEPTION '% field "%" must not be empty', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(doc ->> key) > max_len THEN
        RAISE EXCEPTION '% field "%" is longer than % bytes', what, key, max_len
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It has %s bytes.', octet_length(doc ->> key));
    END IF;
    RETURN doc ->> key;
END $$;

-- An integer member of doc within [lo, hi] (NULL when absent or null), or 22023 naming it.
CREATE FUNCTION iwd._int(doc jsonb, key text, what text, lo bigint DEFAULT -2147483648,
                         hi bigint DEFAULT 2147483647) RETURNS int
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
DECLARE
    n numeric;
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(doc -> key) <> 'number' OR (doc ->> key)::numeric <> trunc((doc ->> key)::numeric) THEN
        RAISE EXCEPTION '% field "%" must be an integer', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n := (doc ->> key)::numeric;
    IF n < lo OR n > hi THEN
        RAISE EXCEPTION '% field "%" is out of range', what, key USING ERRCODE = 'invalid_parameter_value',
            DETAIL = format('The value must be between %s and %s.', lo, hi);
    END IF;
    RETURN n::int;
END $$;

-- A boolean member of doc (NULL when absent or null), or 22023 naming it.
CREATE FUNCTION iwd._bool(doc jsonb, key text, what text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
BEGIN
    IF coalesce(jsonb_typeof(doc -> key), 'null') NOT IN ('boolean', 'null') THEN
        RAISE EXCEPTION '% field "%" must be true or false', what, key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (doc -> key)::boolean;
END $$;

-- An object member of doc mapping at most max_count names (1 to max_name bytes each) to integer levels
-- in [0, hi] (NULL when absent), or 22023 naming the field. The callers pass the bounds of
-- extension/draft.h (README, Security: Limits).
CREATE FUNCTION iwd._levels(doc jsonb, key text, what text, hi int, max_count int, max_name int) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'iwd_levels' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Raise P0002 for an object that does not exist.
CREATE FUNCTION iwd._not_found(what text, name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
BEGIN
    IF what = 'task' THEN
        RAISE EXCEPTION 'task % does not exist', name USING ERRCODE = 'no_data_found';
    END IF;
    RAISE EXCEPTION '% "%" does not exist', what, name USING ERRCODE = 'no_data_found';
END $$;

-- A timestamp in the REST shape: ISO 8601 in UTC with a "Z". (Inlined, per row: left unpinned with every
-- name qualified, as are the *_json shapes below; see sql/security.sql.)
CREATE FUNCTION iwd._ts(t timestamptz) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
    SELECT pg_catalog.to_char(t AT TIME ZONE 'UTC',
                   CASE WHEN extract(microseconds FROM t)::bigint OPERATOR(pg_catalog.%) 1000000
                             OPERATOR(pg_catalog.=) 0
                        THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"' ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)
$$;
