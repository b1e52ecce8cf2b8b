package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/errand-dev/errand/internal/testdb"
	"github.com/errand-dev/errand/store"
)

// Now is the database's clock as the rows a transaction writes are
// stamped with: inside a transaction, its start.
func TestNowIsTheDatabasesTransactionStart(t *testing.T) {
	pool := testdb.Pool(t, testdb.URL(t))
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var start time.Time
		if err := tx.QueryRow(ctx, `SELECT transaction_timestamp()`).Scan(&start); err != nil {
			return err
		}
		now, err := store.Now(ctx, tx)
		if err != nil {
			return err
		}
		if !now.Equal(start) {
			t.Errorf("store.Now in a transaction = %v, want its start %v", now, start)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
