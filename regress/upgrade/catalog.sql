-- The catalog of the extension iwd in this database, one sorted line per fact, for scripts/test-upgrade.sh
-- to compare an upgraded database with a fresh install: the extension's member objects; functions
-- (signature, result, language, source, volatility, strictness, parallel safety, settings, security
-- definer, privileges); tables, views and sequences (columns in order with types, defaults, not null;
-- view definitions; sequence parameters; comments); constraints, indexes, triggers, rules, statistics
-- objects, policies, schemas, types, the rows the install script seeds, and the per-database roles.
-- Privileges are the effective ones (a NULL ACL is the owner's default); the database's own name, which
-- per-database role names carry, reads <db>, so that two databases compare equal.
\set ON_ERROR_STOP on
-- an ACL as its sorted "grantee:privilege" list ("*": grantable)
CREATE FUNCTION pg_temp.acl(acl aclitem[]) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(string_agg(g, ',' ORDER BY g), '')
    FROM (SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || ':' ||
                 a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END AS g
          FROM aclexplode(acl) a) x
$$;
WITH ext AS (
    SELECT oid, extnamespace FROM pg_extension WHERE extname = 'iwd'
),
nsp AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname IN ('iwd', 'iwd_dm')
),
facts(line) AS (
    SELECT 'extension ' || e.extname || ' schema=' || e.extnamespace::regnamespace || ' relocatable=' ||
           e.extrelocatable || ' config=' ||
           coalesce((SELECT string_agg(c.oid::regclass::text || coalesce(' where ' || nullif(cond, ''), ''), ', '
                                       ORDER BY c.oid::regclass::text)
                     FROM unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
                     JOIN pg_class c ON c.oid = x.cfg), '')
    FROM pg_extension e WHERE e.extname = 'iwd'
    UNION ALL
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
    UNION ALL
    SELECT 'schema ' || n.nspname || ' owner=' || pg_get_userbyid(s.nspowner) || ' acl=' ||
           pg_temp.acl(coalesce(s.nspacl, acldefault('n', s.nspowner)))
    FROM nsp n JOIN pg_namespace s ON s.oid = n.oid
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure || ' args=(' || pg_get_function_arguments(p.oid) ||
           ') returns=' || pg_get_function_result(p.oid) || ' kind=' || p.prokind::text ||
           ' language=' || l.lanname || ' volatility=' || p.provolatile::text || ' strict=' || p.proisstrict ||
           ' parallel=' || p.proparallel::text || ' secdef=' || p.prosecdef || ' leakproof=' || p.proleakproof ||
           ' cost=' || p.procost || ' rows=' || p.prorows ||
           ' config=' || coalesce(array_to_string(p.proconfig, ';'), '') ||
           ' owner=' || pg_get_userbyid(p.proowner) || ' acl=' ||
           pg_temp.acl(coalesce(p.proacl, acldefault('f', p.proowner))) ||
           ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') ||
           ' bin=' || coalesce(p.probin, '') || ' src=' || md5(p.prosrc) || E'\n' || p.prosrc
    FROM pg_proc p JOIN nsp n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
    UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text ||
           ' rls=' || c.relrowsecurity || ' replident=' || c.relreplident::text ||
           ' partkey=' || coalesce(pg_get_partkeydef(c.oid), '') || ' inherits=' ||
           coalesce((SELECT string_agg(i.inhparent::regclass::text, ',' ORDER BY i.inhseqno) FROM pg_inherits i
                     WHERE i.inhrelid = c.oid), '') ||
           ' options=' || coalesce(array_to_string(c.reloptions, ','), '') ||
           ' owner=' || pg_get_userbyid(c.relowner) || ' acl=' ||
           pg_temp.acl(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                     c.relowner))) ||
           ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '') ||
           CASE WHEN c.relkind IN ('v', 'm') THEN E'\n' || pg_get_viewdef(c.oid) ELSE '' END
    FROM pg_class c JOIN nsp n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
    UNION ALL
    -- columns by their position among the columns not dropped (an upgrade that drops one leaves a gap)
    SELECT 'column ' || c.oid::regclass || ' #' ||
           row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) || ' ' || a.attname || ' ' ||
           format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END ||
           coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '') ||
           CASE WHEN a.attidentity <> '' THEN ' identity ' || a.attidentity::text ELSE '' END ||
           CASE WHEN a.attgenerated <> '' THEN ' generated ' || a.attgenerated::text ELSE '' END ||
           CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                THEN ' collate ' || a.attcollation::regcollation ELSE '' END ||
           coalesce(' acl=' || pg_temp.acl(a.attacl), '') ||
           coalesce(' comment=' || col_description(c.oid, a.attnum), '')
    FROM pg_class c JOIN nsp n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
    UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass || ' type=' || s.seqtypid::regtype || ' start=' || s.seqstart ||
           ' increment=' || s.seqincrement || ' min=' || s.seqmin || ' max=' || s.seqmax || ' cache=' ||
           s.seqcache || ' cycle=' || s.seqcycle || ' owned_by=' ||
           coalesce((SELECT d.refobjid::regclass || '.' || a.attname FROM pg_depend d
                     JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                     WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                       AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')), '')
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN nsp n ON n.oid = c.relnamespace
    UNION ALL
    SELECT 'constraint ' || co.conrelid::regclass || ' ' || co.conname || ' ' || co.contype::text || ' ' ||
           pg_get_constraintdef(co.oid) || ' deferrable=' || co.condeferrable
    FROM pg_constraint co JOIN nsp n ON n.oid = co.connamespace
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) || ' valid=' || i.indisvalid ||
           ' clustered=' || i.indisclustered || ' replident=' || i.indisreplident
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN nsp n ON n.oid = c.relnamespace
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(tg.oid) || ' enabled=' || tg.tgenabled::text
    FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN nsp n ON n.oid = c.relnamespace
    WHERE NOT tg.tgisinternal
    UNION ALL
    SELECT 'rule ' || r.schemaname || '.' || r.tablename || ' ' || r.rulename || ' ' || r.definition
    FROM pg_rules r WHERE r.schemaname IN ('iwd', 'iwd_dm')
    UNION ALL
    SELECT 'statistics ' || s.oid::regclass::text || ' ' || pg_get_statisticsobjdef(s.oid)
    FROM pg_statistic_ext s JOIN nsp n ON n.oid = s.stxnamespace
    UNION ALL
    SELECT 'policy ' || po.schemaname || '.' || po.tablename || ' ' || po.policyname || ' ' || po.permissive ||
           ' ' || array_to_string(po.roles, ',') || ' ' || po.cmd || ' using=' || coalesce(po.qual, '') ||
           ' check=' || coalesce(po.with_check, '')
    FROM pg_policies po WHERE po.schemaname IN ('iwd', 'iwd_dm')
    UNION ALL
    SELECT 'type ' || t.oid::regtype || ' kind=' || t.typtype::text ||
           coalesce(' base=' || nullif(t.typbasetype, 0)::regtype, '') ||
           coalesce(' labels=' || (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum
                                   WHERE enumtypid = t.oid), '')
    FROM pg_type t JOIN nsp n ON n.oid = t.typnamespace
    WHERE t.typtype IN ('d', 'e', 'r', 'm') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class
                                                                     WHERE oid = t.typrelid) = 'c')
    UNION ALL
    SELECT 'role ' || r.rolname || ' login=' || r.rolcanlogin || ' super=' || r.rolsuper ||
           ' inherit=' || r.rolinherit || ' member_of=' ||
           coalesce((SELECT string_agg(m.roleid::regrole::text, ',' ORDER BY 1) FROM pg_auth_members m
                     WHERE m.member = r.oid), '')
    FROM pg_roles r
    WHERE r.rolname IN ('iwd_worker', iwd._role_name('iwd_app_'), iwd._role_name('iwd_gcxi_'))
    UNION ALL
    SELECT 'seed iwd_dm.job_status ' || execution_chain FROM iwd_dm.job_status
    UNION ALL
    SELECT 'seed iwd_dm.dim_priority_range ' || r::text FROM iwd_dm.dim_priority_range r
    UNION ALL
    SELECT 'seed iwd_dm.dim_business_value_range ' || r::text FROM iwd_dm.dim_business_value_range r
    UNION ALL
    SELECT 'seed iwd_dm.watermark ' || count(*) || ' rows' FROM iwd_dm.watermark
)
SELECT replace(line, current_database(), '<db>') FROM facts ORDER BY 1;
