package store

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// KindInfo is what the SQL contract knows about a kind: where its jobs go and
// which args fields an INSERT must carry.
type KindInfo struct {
	Kind         string
	Queue        string
	RequiredArgs []string
	// ArgEnums maps an args field to the only values it may hold.
	ArgEnums    map[string][]string
	MaxAttempts int
	Description string
}

// Publish says how PublishKinds treats a kind that is already published.
type Publish int

const (
	// Widen (every `errand run` start) may only let more through: it adds
	// kinds, values to an args field's allowed set and lifts requirements,
	// but never removes a value or adds a required field. During a rolling
	// deploy an older replica restarting cannot undo what a newer one
	// published.
	Widen Publish = iota
	// Exact (`errand migrate`, run once per deploy by the new binary)
	// publishes the kinds exactly as this binary defines them.
	Exact
)

// PublishKinds adds or updates kinds in errand.kinds. It never removes one:
// another binary (with other custom kinds) may share the database.
func PublishKinds(ctx context.Context, db DB, kinds []KindInfo, mode Publish) error {
	batch := &pgx.Batch{}
	for _, k := range kinds {
		required := k.RequiredArgs
		if required == nil {
			required = []string{}
		}
		enums := k.ArgEnums
		if enums == nil {
			enums = map[string][]string{} // '{}', not JSON null
		}
		stmt := publishExact
		if mode == Widen {
			stmt = publishWiden
		}
		batch.Queue(stmt, k.Kind, k.Queue, required, enums, k.MaxAttempts, k.Description)
	}
	// One transaction, so a binary's kinds appear together.
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return tx.SendBatch(ctx, batch).Close() })
	if err != nil {
		return fmt.Errorf("publish kinds: %w", err)
	}
	return nil
}

const publishExact = `
	INSERT INTO errand.kinds (kind, queue, required_args, arg_enums, max_attempts, description, updated_at)
	VALUES ($1, $2, $3, $4, $5, $6, now())
	ON CONFLICT (kind) DO UPDATE SET
		queue = EXCLUDED.queue,
		required_args = EXCLUDED.required_args,
		arg_enums = EXCLUDED.arg_enums,
		max_attempts = EXCLUDED.max_attempts,
		description = EXCLUDED.description,
		updated_at = now()
	WHERE (kinds.queue, kinds.required_args, kinds.arg_enums, kinds.max_attempts, kinds.description)
	   IS DISTINCT FROM (EXCLUDED.queue, EXCLUDED.required_args, EXCLUDED.arg_enums, EXCLUDED.max_attempts, EXCLUDED.description)`

// publishWiden keeps an existing kind's queue, attempts and description;
// required fields become those both require; an args field stays limited
// only if both limit it, to the values either allows (the published ones
// first, in their order, which error messages show).
const publishWiden = `
	WITH merged AS (
		SELECT
			coalesce((SELECT array_agg(r ORDER BY o) FROM unnest(k.required_args) WITH ORDINALITY AS t(r, o)
			          WHERE r = ANY ($3::text[])), '{}') AS required_args,
			coalesce((SELECT jsonb_object_agg(e.key, e.value || coalesce((
			              SELECT jsonb_agg(v ORDER BY o) FROM jsonb_array_elements($4::jsonb -> e.key) WITH ORDINALITY AS n(v, o)
			              WHERE NOT e.value @> jsonb_build_array(v)), '[]'))
			          FROM jsonb_each(k.arg_enums) AS e
			          WHERE $4::jsonb ? e.key), '{}') AS arg_enums
		FROM errand.kinds k WHERE k.kind = $1
	)
	INSERT INTO errand.kinds (kind, queue, required_args, arg_enums, max_attempts, description, updated_at)
	VALUES ($1, $2, $3, $4, $5, $6, now())
	ON CONFLICT (kind) DO UPDATE SET
		required_args = (SELECT required_args FROM merged),
		arg_enums = (SELECT arg_enums FROM merged),
		updated_at = now()
	WHERE (kinds.required_args, kinds.arg_enums)
	   IS DISTINCT FROM ((SELECT required_args FROM merged), (SELECT arg_enums FROM merged))`

// PublishMaxArgsBytes tells the SQL contract the args size limit. Widen
// (every `errand run` start) only raises it: a replica restarting with a
// smaller ERRAND_MAX_ARGS_BYTES (an older binary, a stale manifest) must
// not refuse INSERTs the others were published to accept. Exact (`errand
// migrate` with ERRAND_MAX_ARGS_BYTES set) sets it, lower included.
func PublishMaxArgsBytes(ctx context.Context, db DB, n int, mode Publish) error {
	if mode == Exact {
		return publishSetting(ctx, db, "max_args_bytes", strconv.Itoa(n))
	}
	// A value that is not a number (set by hand) is replaced: the contract
	// could not read it either.
	_, err := db.Exec(ctx, `
		INSERT INTO errand.settings (name, value) VALUES ('max_args_bytes', $1)
		ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
		WHERE CASE WHEN settings.value ~ '^[0-9]{1,18}$' THEN settings.value::bigint < EXCLUDED.value::bigint ELSE true END`,
		strconv.Itoa(n))
	if err != nil {
		return fmt.Errorf("publish max_args_bytes: %w", err)
	}
	return nil
}

// PublishWorkspaceCaps tells errand.queue_startable (metrics, KEDA's query)
// the caps this replica's fetch applies: the default per-workspace cap
// (ERRAND_WORKSPACE_CONCURRENCY, 0 for none) or, with fairness off, none at
// all. Replicas of one database should agree; the last one started wins.
func PublishWorkspaceCaps(ctx context.Context, db DB, fairness bool, defaultCap int) error {
	v := strconv.Itoa(defaultCap)
	if !fairness {
		v = "off"
	}
	return publishSetting(ctx, db, "workspace_caps", v)
}

func publishSetting(ctx context.Context, db DB, name, value string) error {
	_, err := db.Exec(ctx, `
		INSERT INTO errand.settings (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
		WHERE settings.value IS DISTINCT FROM EXCLUDED.value`, name, value)
	if err != nil {
		return fmt.Errorf("publish %s: %w", name, err)
	}
	return nil
}

// Kinds lists the published kinds.
func Kinds(ctx context.Context, db DB) ([]KindInfo, error) {
	rows, err := db.Query(ctx, `SELECT kind, queue, required_args, arg_enums, max_attempts, description FROM errand.kinds ORDER BY kind`)
	if err != nil {
		return nil, fmt.Errorf("list kinds: %w", err)
	}
	kinds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (KindInfo, error) {
		var k KindInfo
		err := row.Scan(&k.Kind, &k.Queue, &k.RequiredArgs, &k.ArgEnums, &k.MaxAttempts, &k.Description)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list kinds: %w", err)
	}
	return kinds, nil
}
