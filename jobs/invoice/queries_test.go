package invoice

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// A value that cannot be read into the document fails the job at once; a
// connection lost or a query cancelled while reading is retried.
func TestOnlyAnUnreadableValueFailsTheLoadForGood(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		bad  bool
	}{
		{"a column that cannot be scanned", pgx.ScanArgError{ColumnIndex: 7, FieldName: "issued_at", Err: errors.New("cannot scan Infinity into *time.Time")}, true},
		{"a lost connection", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, false},
		{"a deadline", context.DeadlineExceeded, false},
		{"a server error", &pgconn.PgError{Code: "57014", Message: "canceling statement due to statement timeout"}, false},
		{"a terminated backend", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := loadError(fmt.Errorf("read invoice x: %w", tc.err))
			var bad *badInvoice
			if errors.As(err, &bad) != tc.bad {
				t.Errorf("%v: fails for good %v, want %v", err, !tc.bad, tc.bad)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("%v no longer wraps %v", err, tc.err)
			}
		})
	}
}

// An infinite date names the invoice and the column, and fails for good.
func TestAnInfiniteDateIsABadInvoice(t *testing.T) {
	_, err := finiteDate("7d1f7e0c-3a4b-4c5d-8e9f-0a1b2c3d4e5f", "due_at", pgtype.Date{InfinityModifier: pgtype.Infinity, Valid: true})
	var bad *badInvoice
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), "invoice 7d1f7e0c-3a4b-4c5d-8e9f-0a1b2c3d4e5f has due_at infinity") {
		t.Errorf("got %v, want a bad invoice naming its due_at", err)
	}
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	if got, err := finiteDate("x", "issued_at", pgtype.Date{Time: day, Valid: true}); err != nil || !got.Equal(day) {
		t.Errorf("a finite date: %v, %v", got, err)
	}
}
