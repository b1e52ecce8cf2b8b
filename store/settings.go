package store

import (
	"context"
	"fmt"
)

// InstanceID is this database's id (errand.settings instance_id): it keeps
// keys derived from job ids, which restart in every database, unique across
// databases. It is bound to the cluster's system identifier and the
// database's oid and renewed when they change, so a copy made with pg_dump
// (staging restored from production) gets its own; a restart keeps it.
func InstanceID(ctx context.Context, db DB) (string, error) {
	var id string
	err := db.QueryRow(ctx, `SELECT errand.instance_id()`).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("read instance_id: %w", err)
	}
	return id, nil
}

// InstanceBoundToOIDOnly reports whether the instance id is bound to the
// database's oid alone: the role that migrated errand (errand.instance_binding
// runs as it, migration 058) may not call pg_control_system(), so the
// cluster's system identifier is unknown (the binding is 'unknown/<oid>'). A
// copy in another cluster whose database gets the same oid then keeps the
// id, and the email idempotency keys with it.
func InstanceBoundToOIDOnly(ctx context.Context, db DB) (bool, error) {
	var oidOnly bool
	if err := db.QueryRow(ctx, `SELECT errand.instance_binding() LIKE 'unknown/%'`).Scan(&oidOnly); err != nil {
		return false, fmt.Errorf("read instance binding: %w", err)
	}
	return oidOnly, nil
}
