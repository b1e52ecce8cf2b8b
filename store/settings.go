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
