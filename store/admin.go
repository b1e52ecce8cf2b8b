package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Cluster-level statements for `errand dev` and the test databases. They
// run as a superuser connected to another database of the cluster.

// CreateDatabase creates the database name unless it exists.
func CreateDatabase(ctx context.Context, db DB, name string) error {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	if _, err := db.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops the database name, disconnecting its sessions.
func DropDatabase(ctx context.Context, db DB, name string) error {
	if _, err := db.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// DatabasesLike lists the databases whose names match the LIKE pattern.
func DatabasesLike(ctx context.Context, db DB, pattern string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname`, pattern)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return names, nil
}

// ProbeListen checks that a notification sent on one connection reaches a
// LISTEN on another. Behind a transaction-mode pooler it does not. It gives
// up after probeListenWait: long enough that a slow database at start (a
// busy server, parallel migrations) is not taken for a pooler, which would
// turn the completion guard off; a replica behind a pooler waits that long
// once, at start.
func ProbeListen(ctx context.Context, pool *pgxpool.Pool) error {
	ctx, cancel := context.WithTimeout(ctx, probeListenWait)
	defer cancel()
	pooled, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The probe connection may be left in an odd state (LISTEN on a pooled
	// backend): never return it to the pool.
	conn := pooled.Hijack()
	defer conn.Close(context.Background())
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	channel := "errand_probe_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if _, err := pool.Exec(ctx, `SELECT pg_notify($1, 'probe')`, channel); err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	if _, err := conn.WaitForNotification(ctx); err != nil {
		return fmt.Errorf("no notification within %s: %w", probeListenWait, err)
	}
	return nil
}

const probeListenWait = 15 * time.Second

// ExistingIndexes returns those of names that are indexes in schema, in the
// order given.
func ExistingIndexes(ctx context.Context, db DB, schema string, names []string) ([]string, error) {
	rows, err := db.Query(ctx, `
		SELECT n.name FROM unnest($2::text[]) WITH ORDINALITY AS n(name, i)
		WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_indexes x WHERE x.schemaname = $1 AND x.indexname = n.name)
		ORDER BY n.i`, schema, names)
	if err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	return out, nil
}
