package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Workspace is a row of the errand.workspaces directory table.
type Workspace struct {
	ID               string
	Name             string
	Slug             string
	Plan             string
	StripeCustomerID string
	CreatedAt        time.Time
}

// EnsureWorkspace returns the workspace with slug, creating it with name when
// it does not exist (dev seeding, benchmarks, tests).
func EnsureWorkspace(ctx context.Context, db DB, name, slug string) (Workspace, error) {
	var w Workspace
	// DO UPDATE (a no-op) rather than DO NOTHING so RETURNING gives the
	// existing row, also to a caller that lost a race for the same slug.
	err := db.QueryRow(ctx, `
		INSERT INTO errand.workspaces (name, slug) VALUES ($1, $2)
		ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
		RETURNING id::text, name, slug, plan, coalesce(stripe_customer_id, ''), created_at`,
		name, slug).Scan(&w.ID, &w.Name, &w.Slug, &w.Plan, &w.StripeCustomerID, &w.CreatedAt)
	if err != nil {
		return w, fmt.Errorf("ensure workspace %q: %w", slug, err)
	}
	return w, nil
}

// CurrentWorkspace reads the workspace a tenant-scoped transaction is scoped
// to (see InWorkspace).
func CurrentWorkspace(ctx context.Context, db DB) (Workspace, error) {
	var w Workspace
	err := db.QueryRow(ctx, `
		SELECT id::text, name, slug, plan, coalesce(stripe_customer_id, ''), created_at
		FROM errand.workspaces
		WHERE id = nullif(current_setting('app.current_workspace_id', true), '')::uuid`).
		Scan(&w.ID, &w.Name, &w.Slug, &w.Plan, &w.StripeCustomerID, &w.CreatedAt)
	if err != nil {
		return w, fmt.Errorf("read current workspace: %w", err)
	}
	return w, nil
}

// ForEachWorkspace is the one explicit path for work across workspaces (a
// scheduler fanning out): it lists workspace ids without any tenant scope, and
// each unit of work is then expected to scope itself with InWorkspace.
func ForEachWorkspace(ctx context.Context, db DB, fn func(id string) error) error {
	rows, err := db.Query(ctx, `SELECT id::text FROM errand.workspaces ORDER BY id`)
	if err != nil {
		return fmt.Errorf("list workspaces: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list workspaces: %w", err)
	}
	for _, id := range ids {
		if err := fn(id); err != nil {
			return err
		}
	}
	return nil
}
