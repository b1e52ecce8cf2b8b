-- An endpoint URL must be one a delivery can send to.
--
-- 009's errand.webhook_url_problem accepted URLs that every delivery then
-- refused or could not reach, each attempt retried and counted toward
-- disabling the endpoint:
--
-- 1. A % not followed by two hex digits (https://example.com/%zz, /#%zz,
--    a trailing %): Go's url.Parse refuses one in the path or the fragment.
--    In the query Go sends it as it is, for the receiver to misread or
--    refuse; RFC 3986 allows it nowhere, so it is refused there too (at
--    INSERT only: an endpoint stored before keeps being delivered to).
-- 2. A host with an empty label (http://.../, http://a..b/, http://.a/):
--    no name DNS can look up. One trailing dot is DNS's root, as before.
--
-- And two messages say what is wrong: "[2606:4700::1111]x" was "an invalid
-- port 'x'"; an empty port (http://example.com:/) was refused as "invalid
-- port ''" though RFC 3986 allows it and Go delivers to the scheme's
-- default port (net/http drops the empty port from the Host header): it is
-- accepted now. jobs/webhook/guard.go's checkURL refuses the same at
-- delivery (TestSQLAndGoRefuseTheSameAddresses).
--
-- 009's body with these changes; CREATE OR REPLACE keeps its owner and the
-- trigger that calls it.
CREATE OR REPLACE FUNCTION errand.webhook_url_problem(url text) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rest text;
    v_authority text;
    v_host text;
    v_port text;
    v_addr inet;
    v_problem text;
    v_tail text;
    v_part text;
    v_bad text;
BEGIN
    IF length(url) > 2048 THEN
        RETURN format('is %s characters, at most 2048', length(url));
    END IF;
    IF url ~ '[[:space:][:cntrl:]\\]' THEN
        RETURN 'must not contain spaces, control characters or backslashes';
    END IF;
    IF url !~* '^https?://' THEN
        RETURN format('must start with http:// or https://, got %s', quote_literal(left(url, 100)));
    END IF;
    v_rest := substr(url, strpos(url, '://') + 3);
    v_authority := substring(v_rest FROM '^[^/?#]*');
    IF strpos(v_authority, '@') > 0 THEN
        RETURN 'must not carry a user or password (user:password@host)';
    END IF;
    IF v_authority LIKE '[%' THEN
        v_host := substring(v_authority FROM '^\[([^\]]*)\]');
        v_port := substring(v_authority FROM '^\[[^\]]*\](.*)$');
        IF v_host IS NULL THEN
            RETURN format('has an unterminated IPv6 address %s', quote_literal(v_authority));
        END IF;
        IF strpos(v_host, '%') > 0 THEN
            RETURN format('host [%s] carries an IPv6 zone, which only names a local link', v_host);
        END IF;
        BEGIN
            v_addr := v_host::inet;
        EXCEPTION WHEN invalid_text_representation THEN
            RETURN format('host [%s] is not a valid IPv6 address', v_host);
        END;
        IF family(v_addr) <> 6 OR masklen(v_addr) <> 128 THEN
            RETURN format('host [%s] is not a valid IPv6 address', v_host);
        END IF;
        IF v_port <> '' AND left(v_port, 1) <> ':' THEN
            RETURN format('host [%s] is followed by %s, which is not a port (a port follows a colon: [%s]:8443)',
                v_host, quote_literal(v_port), v_host);
        END IF;
    ELSE
        v_host := lower(split_part(v_authority, ':', 1));
        v_port := CASE WHEN strpos(v_authority, ':') > 0 THEN substr(v_authority, strpos(v_authority, ':')) END;
        IF v_host = '' THEN
            RETURN 'has no host';
        END IF;
        IF v_host !~ '^[a-z0-9_.-]+$' THEN
            RETURN format('host %s may hold only letters, digits, dots, dashes and underscores (write an international name in its xn-- form)', quote_literal(v_host));
        END IF;
        IF v_host ~ '(^|\.)\.' THEN
            RETURN format('host %s has an empty label (a dot at its start or two dots in a row), which no name can have', quote_literal(v_host));
        END IF;
        -- A trailing dot is DNS's root, the same host.
        v_host := regexp_replace(v_host, '\.$', '');
        IF v_host = 'localhost' OR v_host LIKE '%.localhost' THEN
            v_addr := '127.0.0.1';
        ELSE
            BEGIN
                v_addr := errand.webhook_ipv4_literal(v_host);
            EXCEPTION WHEN invalid_parameter_value THEN
                RETURN format('host %s is written as a number but is not a valid IPv4 address (%s)', v_host, SQLERRM);
            END;
        END IF;
    END IF;
    -- An empty port (a bare ':') is the scheme's default (RFC 3986, 3.2.3).
    IF v_port IS NOT NULL AND v_port NOT IN ('', ':') THEN
        IF v_port !~ '^:[0-9]{1,5}$' OR substr(v_port, 2)::int NOT BETWEEN 1 AND 65535 THEN
            RETURN format('has an invalid port %s (a port is 1 to 65535)', quote_literal(substr(v_port, 2)));
        END IF;
    END IF;
    -- A % starts an escape of two hex digits (RFC 3986, 2.1); a % itself
    -- is written %25. The first part with another names it.
    v_tail := substr(v_rest, length(v_authority) + 1);
    SELECT p.name, substring(p.text FROM '%(?![0-9A-Fa-f]{2})[^%]{0,2}') INTO v_part, v_bad
    FROM (VALUES (1, 'path', substring(v_tail FROM '^[^?#]*')),
                 (2, 'query', substring(v_tail FROM '^[^?#]*\?([^#]*)')),
                 (3, 'fragment', substring(v_tail FROM '#(.*)$'))) AS p(n, name, text)
    WHERE p.text ~ '%(?![0-9A-Fa-f]{2})'
    ORDER BY p.n LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RETURN format('has %s in its %s: a %% must start an escape of two hex digits (write a %% itself as %%25)',
            quote_literal(v_bad), v_part);
    END IF;
    IF v_addr IS NOT NULL THEN
        v_problem := errand.webhook_address_problem(v_addr);
        IF v_problem IS NOT NULL THEN
            RETURN format('host %s is %s: errand does not connect there (ERRAND_WEBHOOK_ALLOW_CIDRS lists exceptions)',
                CASE WHEN v_authority LIKE '[%' THEN '[' || v_host || ']'
                     WHEN family(v_addr) = 4 AND v_host ~ '^[0-9a-fx.]+$' AND v_host <> host(v_addr)
                     THEN format('%s (the IPv4 address %s written another way)', v_host, host(v_addr))
                     ELSE v_host END,
                v_problem);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
