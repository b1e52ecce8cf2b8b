// Package migrations holds errand's SQL and applies it, together with River's
// own migrations, into the schema errand.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// Schema is where errand puts everything it creates, River's tables included.
const Schema = "errand"

// lockKey serialises concurrent migrations of one database (replicas starting
// at once). Advisory locks are per database, which is what we want here.
const lockKey = 0x6572_7261_6e64 // "errand"

//go:embed *.sql
var files embed.FS

// Migration is one of errand's own SQL files.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// All returns errand's migrations in order.
func All() ([]Migration, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(name, "_")
		if !ok || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("migration file %q: want NNN_name.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration file %q: %w", name, err)
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: strings.TrimSuffix(rest, ".sql"), SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Status says what is applied and what is not.
type Status struct {
	RiverApplied  []int
	RiverPending  []int
	ErrandApplied []int
	ErrandPending []int
}

// UpToDate reports whether nothing is pending.
func (s Status) UpToDate() bool { return len(s.RiverPending) == 0 && len(s.ErrandPending) == 0 }

// ErrNotMigrated is returned (wrapped) by Check when the schema is missing or
// behind.
var ErrNotMigrated = errors.New("database schema is not migrated")

// Up applies River's migrations and then errand's, in one transaction under
// an advisory lock: idempotent, and safe when several replicas start at once.
// It returns the versions it applied ("river/6", "errand/1").
func Up(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) ([]string, error) {
	// River's migrations cannot share one transaction (an enum value added by
	// one is used by the next), so the lock is a session lock held on its own
	// connection while River migrates through the pool. A crashed migrator's
	// session ends and frees the lock.
	// Its own connection, not one of the pool's: River migrates through the
	// pool, which may be small.
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(lockKey)); err != nil {
		return nil, fmt.Errorf("migrate: take lock: %w", err)
	}

	var applied []string
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+Schema); err != nil {
		return nil, fmt.Errorf("migrate: create schema %s: %w", Schema, err)
	}
	migrator, err := newRiverMigrator(pool, logger)
	if err != nil {
		return nil, err
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return nil, fmt.Errorf("migrate: river: %w", err)
	}
	for _, v := range res.Versions {
		applied = append(applied, fmt.Sprintf("river/%d", v.Version))
	}

	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS errand.errand_migrations (
			version int PRIMARY KEY,
			name text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create errand_migrations: %w", err)
		}
		done, err := appliedVersions(ctx, tx)
		if err != nil {
			return err
		}
		all, err := All()
		if err != nil {
			return err
		}
		for _, m := range all {
			if done[m.Version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("errand migration %03d_%s: %w", m.Version, m.Name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO errand.errand_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name); err != nil {
				return err
			}
			applied = append(applied, fmt.Sprintf("errand/%d", m.Version))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return applied, nil
}

// CurrentStatus reads what is applied without changing anything.
func CurrentStatus(ctx context.Context, pool *pgxpool.Pool) (Status, error) {
	var st Status
	migrator, err := newRiverMigrator(pool, nil)
	if err != nil {
		return st, err
	}
	var schemaExists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", Schema).Scan(&schemaExists); err != nil {
		return st, fmt.Errorf("read schema: %w", err)
	}
	riverDone := map[int]bool{}
	errandDone := map[int]bool{}
	if schemaExists {
		existing, err := migrator.ExistingVersions(ctx)
		if err != nil {
			return st, fmt.Errorf("read river migrations: %w", err)
		}
		for _, m := range existing {
			riverDone[m.Version] = true
		}
		var tableExists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass('errand.errand_migrations') IS NOT NULL").Scan(&tableExists); err != nil {
			return st, err
		}
		if tableExists {
			if errandDone, err = appliedVersions(ctx, pool); err != nil {
				return st, err
			}
		}
	}
	for _, m := range migrator.AllVersions() {
		if riverDone[m.Version] {
			st.RiverApplied = append(st.RiverApplied, m.Version)
		} else {
			st.RiverPending = append(st.RiverPending, m.Version)
		}
	}
	all, err := All()
	if err != nil {
		return st, err
	}
	for _, m := range all {
		if errandDone[m.Version] {
			st.ErrandApplied = append(st.ErrandApplied, m.Version)
		} else {
			st.ErrandPending = append(st.ErrandPending, m.Version)
		}
	}
	return st, nil
}

// Check returns an error wrapping ErrNotMigrated, with what is pending, when
// the database is behind this binary.
func Check(ctx context.Context, pool *pgxpool.Pool) error {
	st, err := CurrentStatus(ctx, pool)
	if err != nil {
		return err
	}
	if !st.UpToDate() {
		return fmt.Errorf("%w: pending river migrations %v, errand migrations %v; run `errand migrate` first", ErrNotMigrated, st.RiverPending, st.ErrandPending)
	}
	return nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func appliedVersions(ctx context.Context, q querier) (map[int]bool, error) {
	rows, err := q.Query(ctx, "SELECT version FROM errand.errand_migrations")
	if err != nil {
		return nil, fmt.Errorf("read errand migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("read errand migrations: %w", err)
	}
	done := make(map[int]bool, len(versions))
	for _, v := range versions {
		done[v] = true
	}
	return done, nil
}

func newRiverMigrator(pool *pgxpool.Pool, logger *slog.Logger) (*rivermigrate.Migrator[pgx.Tx], error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Schema: Schema, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("river migrator: %w", err)
	}
	return m, nil
}
