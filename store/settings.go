package store

import (
	"context"
	"fmt"
)

// InstanceID is this database's id (errand.settings instance_id, made by
// migration 002): it keeps keys derived from job ids, which restart in every
// database, unique across databases.
func InstanceID(ctx context.Context, db DB) (string, error) {
	var id string
	err := db.QueryRow(ctx, `SELECT value FROM errand.settings WHERE name = 'instance_id'`).Scan(&id)
	if err != nil {
		return "", fmt.Errorf("read instance_id: %w", err)
	}
	return id, nil
}
