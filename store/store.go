// Package store is errand's one door to PostgreSQL: the connection pool,
// workspace-scoped transactions, and every query errand runs outside River.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options tunes Open. The zero value works.
type Options struct {
	// MaxConns caps the pool; 0 means 20. River's listener holds one
	// connection for as long as the client runs, so size for it.
	MaxConns int32
	// SkipScopeCheck skips checking that tenant scoping can work, for
	// callers (migrate) that run before the tenant role exists.
	SkipScopeCheck bool
	// Session settings every connection sets when it opens (errand.replica_id
	// for the completion guard). Set by a statement after connecting, not as
	// startup parameters, which PgBouncer refuses.
	Session map[string]string
}

// Store is a pgx pool plus what errand learned about its role at Open.
type Store struct {
	pool *pgxpool.Pool
	// scopeRole is the database's tenant role, which InWorkspace switches
	// to, or "" when there is none (a plain owner that may not create roles:
	// FORCE makes row level security apply to it directly).
	scopeRole string
}

// Open connects and works out how to scope tenant transactions.
func Open(ctx context.Context, databaseURL string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse DATABASE_URL: %w", err)
	}
	if len(opts.Session) > 0 {
		names := make([]string, 0, len(opts.Session))
		values := make([]string, 0, len(opts.Session))
		for k, v := range opts.Session {
			names, values = append(names, k), append(values, v)
		}
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, `SELECT set_config(n, v, false) FROM unnest($1::text[], $2::text[]) AS s(n, v)`, names, values)
			return err
		}
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 20
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	s := &Store{pool: pool}
	if opts.SkipScopeCheck {
		return s, nil
	}
	if err := s.DetectScopeRole(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// DB is what every query function in store (and in each kind's queries
// file) takes: a *Store, a *pgxpool.Pool, a *pgx.Conn and a pgx.Tx all
// satisfy it, so one function serves a pool, a dedicated connection and a
// scoped transaction alike.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

var (
	_ DB = (*Store)(nil)
	_ DB = (*pgxpool.Pool)(nil)
	_ DB = (*pgx.Conn)(nil)
	_ DB = (pgx.Tx)(nil)
)

// Pool is the underlying pool, for River and for callers that need raw access.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Exec runs sql on the pool (DB).
func (s *Store) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return s.pool.Exec(ctx, sql, args...)
}

// Query runs sql on the pool (DB).
func (s *Store) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return s.pool.Query(ctx, sql, args...)
}

// QueryRow runs sql on the pool (DB).
func (s *Store) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return s.pool.QueryRow(ctx, sql, args...)
}

// Begin starts a transaction on the pool (DB).
func (s *Store) Begin(ctx context.Context) (pgx.Tx, error) { return s.pool.Begin(ctx) }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks the database answers within a second.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return s.pool.Ping(ctx)
}

// ScopeRole reports the role InWorkspace switches to ("" when none: a
// store opened with SkipScopeCheck, or as a superuser or BYPASSRLS role
// whose role is not set up, which DetectScopeRole refuses).
func (s *Store) ScopeRole() string { return s.scopeRole }

// TenantRole is the name of the database's own tenant role
// (errand_tenant_<16 hex digits of its instance id>), whether or not it
// exists. Roles are cluster-wide, so each database has its own: a member of
// one database's role can use nothing in another.
func TenantRole(ctx context.Context, db DB) (string, error) {
	var role string
	if err := db.QueryRow(ctx, `SELECT errand.tenant_role()`).Scan(&role); err != nil {
		return "", fmt.Errorf("read tenant role: %w", err)
	}
	return role, nil
}

// DetectScopeRole works out how InWorkspace scopes a transaction; Open calls
// it unless Options.SkipScopeCheck.
//
// Scoped transactions switch to the database's tenant role whenever errand's
// role may: row level security then applies to them (River's job rows
// included) and never to errand's own unscoped queries, which River's
// fetch relies on. When the role is not set up for this database (the first
// start on a restored copy, or a role an administrator has just created),
// it is set up first (errand.setup_tenant_role).
func (s *Store) DetectScopeRole(ctx context.Context) error {
	var bypass bool
	err := s.pool.QueryRow(ctx, `SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&bypass)
	if err != nil {
		return fmt.Errorf("inspect database role: %w", err)
	}
	var role string
	var ready bool
	err = s.pool.QueryRow(ctx, `
		SELECT t.name,
		       coalesce((SELECT s.value = t.name FROM errand.settings s WHERE s.name = 'tenant_role'), false)
		         AND EXISTS (SELECT 1 FROM pg_roles x WHERE x.rolname = t.name)
		FROM errand.tenant_role() AS t(name)`).Scan(&role, &ready)
	if err != nil {
		return fmt.Errorf("find this database's tenant role (errand's role needs errand's schema and tables): %w", err)
	}
	if !ready {
		if _, err := s.pool.Exec(ctx, `SELECT errand.setup_tenant_role()`); err != nil {
			return fmt.Errorf("set up tenant role %s for this database (a restored copy is set up by its owner or a superuser on its first start): %w", role, err)
		}
	}
	var usable bool
	err = s.pool.QueryRow(ctx, `
		SELECT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user)
		                OR (SELECT pg_has_role(current_user, t.oid, 'MEMBER') FROM pg_roles t WHERE t.rolname = $1), false)
		       AND EXISTS (SELECT 1 FROM pg_roles t WHERE t.rolname = $1)`, role).Scan(&usable)
	if err != nil {
		return fmt.Errorf("inspect tenant role %s: %w", role, err)
	}
	switch {
	case usable:
		s.scopeRole = role
	case bypass:
		return fmt.Errorf("errand's database role bypasses row level security, and this database's tenant role %[1]s is missing or not granted to it: "+
			"as a superuser, or the owner of errand's schema if it may create roles, run `SELECT errand.setup_tenant_role()` "+
			"(errand does this itself when it starts as such a role) and `GRANT %[1]s TO <errand's role>`; or connect as a role without BYPASSRLS", role)
	default:
		// Without its own role a scoped transaction would run as errand's
		// role, which River's table cannot hold to row level security
		// without slowing River's fetch a hundredfold: job rows (args carry
		// reset links) would not be isolated. Refuse, and say how to fix it.
		return fmt.Errorf("%w: errand's database role may not create roles, and this database's tenant role %[2]s does not exist or is not granted to it, "+
			"so a transaction scoped to one workspace could read other workspaces' jobs: ask an administrator to run "+
			"`CREATE ROLE %[2]s NOLOGIN NOINHERIT; GRANT %[2]s TO <errand's role>;` and start errand again (it grants the role its privileges itself); "+
			"or connect as a role that may create roles", ErrNoTenantRole, role)
	}
	return nil
}

// ErrNoTenantRole is returned (wrapped) by Open and DetectScopeRole when
// errand's role can neither create nor use this database's tenant role, so
// scoped transactions could not be isolated. The error names the two
// statements an administrator runs to fix it.
var ErrNoTenantRole = errors.New("no tenant role")

// ErrWorkspaceNotFound is returned (wrapped) by InWorkspace when the
// workspace does not exist (any more), or the id is empty or not a uuid.
// Retrying cannot help.
var ErrWorkspaceNotFound = errors.New("workspace not found")

// InWorkspace runs fn in a transaction where row level security shows only
// workspaceID's rows: a query that forgets `WHERE workspace_id = ...` still
// sees one tenant. The transaction commits when fn returns nil.
func (s *Store) InWorkspace(ctx context.Context, workspaceID string, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.Scope(ctx, tx, workspaceID); err != nil {
			return err
		}
		return fn(tx)
	})
}

// InWorkspaceBatch runs b's statements as InWorkspace would run them,
// scoped to workspaceID, but sent in one round trip instead of four (BEGIN,
// scope, the work, COMMIT): PostgreSQL runs a pipeline as one implicit
// transaction, which commits once its last statement has run. The scope is
// its first statement (errand.scope_to, which raises when the workspace
// does not exist, so nothing after it runs unscoped); an error in any
// statement rolls all of them back and is returned.
//
// read gets the results of b's statements, in order (it may leave some
// unread). The statements are all on their way before read sees a result,
// and PostgreSQL commits them whatever read does, so read cannot roll them
// back: when a result decides whether the work may commit, use
// InWorkspace. When InWorkspaceBatch returns nil, the transaction has
// committed. Meant for short, hot bookkeeping, such as the webhook kind's
// batched transactions.
func (s *Store) InWorkspaceBatch(ctx context.Context, workspaceID string, b *pgx.Batch, read func(pgx.BatchResults) error) error {
	if workspaceID == "" {
		return scopeError(workspaceID, nil, true)
	}
	full := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(b.QueuedQueries)+1)}
	full.Queue(`SELECT errand.scope_to($1, $2)`, workspaceID, s.scopeRole)
	full.QueuedQueries = append(full.QueuedQueries, b.QueuedQueries...)
	br := s.pool.SendBatch(ctx, full)
	if _, err := br.Exec(); err != nil {
		br.Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "P0002" { // errand.scope_to: no such workspace
			return scopeError(workspaceID, nil, false)
		}
		return scopeError(workspaceID, err, true)
	}
	if read != nil {
		if err := read(br); err != nil {
			br.Close()
			return err
		}
	}
	return br.Close()
}

// Scope makes an open transaction tenant-scoped to workspaceID, in one round
// trip that also checks the workspace exists. Unscope undoes it within the
// transaction.
func (s *Store) Scope(ctx context.Context, tx pgx.Tx, workspaceID string) error {
	if workspaceID == "" {
		return scopeError(workspaceID, nil, true)
	}
	var exists bool
	// The existence check runs before the role switch takes effect for it;
	// the tenant role may read workspaces either way.
	err := tx.QueryRow(ctx, `
		SELECT set_config('app.current_workspace_id', $1, true),
		       CASE WHEN $2 <> '' THEN set_config('role', $2, true) END,
		       EXISTS (SELECT 1 FROM errand.workspaces WHERE id = $1::uuid)`,
		workspaceID, s.scopeRole).Scan(nil, nil, &exists)
	return scopeError(workspaceID, err, exists)
}

// scopeError is what scoping to workspaceID came to, for Scope and
// InWorkspaceBatch alike: nil when err is nil and the workspace exists;
// ErrWorkspaceNotFound (wrapped) for an empty id, an id that is not a uuid
// or a workspace that does not exist, which retrying cannot fix; err
// wrapped otherwise.
func scopeError(workspaceID string, err error, exists bool) error {
	var pgErr *pgconn.PgError
	switch {
	case workspaceID == "":
		return fmt.Errorf("job has no workspace id: %w", ErrWorkspaceNotFound)
	case errors.As(err, &pgErr) && pgErr.Code == "22P02":
		return fmt.Errorf("workspace id %q is not a uuid: %w", workspaceID, ErrWorkspaceNotFound)
	case err != nil:
		return fmt.Errorf("scope to workspace %s: %w", workspaceID, err)
	case !exists:
		return fmt.Errorf("workspace %s: %w", workspaceID, ErrWorkspaceNotFound)
	}
	return nil
}

// Unscope returns an open transaction to errand's own role, e.g. so River can
// complete the job in the same transaction as the job's tenant writes.
func (s *Store) Unscope(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', '', true),
		CASE WHEN $1 <> '' THEN set_config('role', 'none', true) END`, s.scopeRole)
	if err != nil {
		return fmt.Errorf("unscope: %w", err)
	}
	return nil
}
