package digest_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/errand-dev/errand"
	"github.com/errand-dev/errand/errandtest"
)

// daemonEnv: frequent polls, so a fan-out's jobs start at once; the
// leader's own ticks off, so only the test's ticks (--schedule) move time.
var daemonEnv = map[string]string{"ERRAND_FETCH_POLL_INTERVAL": "50ms", "ERRAND_SCHEDULES": "digests=off;usage_reports=off"}

func exec(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func count(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// newUser adds a user, a member of ws, with a digest preference.
func newUser(t testing.TB, pool *pgxpool.Pool, ws, email, frequency, zone string, hour, weekday int) string {
	t.Helper()
	var id string
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.users (email) VALUES ($1) RETURNING id::text`, email).Scan(&id); err != nil {
		t.Fatal(err)
	}
	exec(t, pool, `INSERT INTO errand.workspace_members (workspace_id, user_id) VALUES ($1, $2)`, ws, id)
	exec(t, pool, `INSERT INTO errand.notification_preferences (workspace_id, user_id, frequency, timezone, hour, weekday)
		VALUES ($1, $2, $3, $4, $5, $6)`, ws, id, frequency, zone, hour, weekday)
	return id
}

func notify(t testing.TB, pool *pgxpool.Pool, ws, user, title string) {
	t.Helper()
	exec(t, pool, `INSERT INTO errand.notifications (workspace_id, user_id, kind, title, body, url)
		VALUES ($1, $2, 'comment', $3, 'body of ' || $3, 'https://app.example.com/n')`, ws, user, title)
}

// tickAt runs `errand schedules tick --at at --schedule digests`.
func tickAt(url string, at time.Time) (string, error) {
	var out bytes.Buffer
	err := errand.Main(context.Background(), []string{"schedules", "tick", "--future", "--at", at.Format(time.RFC3339), "--schedule", "digests"},
		errandtest.Env(map[string]string{"DATABASE_URL": url}), &out, &out)
	return out.String(), err
}

// tick ticks at and waits until every job has ended; it returns tick's
// status for the digests entry ("enqueued", "nothing due", ...).
func tick(t testing.TB, url string, pool *pgxpool.Pool, at time.Time) string {
	t.Helper()
	out, err := tickAt(url, at)
	if err != nil {
		t.Fatalf("tick at %s: %v\n%s", at, err, out)
	}
	waitIdle(t, pool)
	f := strings.Split(strings.TrimSpace(out), "\t")
	if len(f) < 3 {
		t.Fatalf("tick said %q", out)
	}
	return f[2]
}

// waitIdle waits until no job is pending or processing.
func waitIdle(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for count(t, pool, `SELECT count(*) FROM errand.jobs WHERE status IN ('pending', 'processing')`) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("jobs still pending after 90s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := count(t, pool, `SELECT count(*) FROM errand.jobs WHERE status = 'failed'`); n > 0 {
		var why string
		_ = pool.QueryRow(context.Background(), `SELECT kind || ': ' || coalesce(last_error, '') FROM errand.jobs WHERE status = 'failed' LIMIT 1`).Scan(&why)
		t.Fatalf("%d jobs failed: %s", n, why)
	}
}

// email is a digest email as captured in errand.emails.
type email struct {
	To      string
	Subject string
	Text    string
}

func digestEmails(t testing.TB, pool *pgxpool.Pool) []email {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT array_to_string(recipients, ','), subject, text FROM errand.emails WHERE template = 'digest' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	es, err := pgx.CollectRows(rows, pgx.RowToStructByPos[email])
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// schedule is a user's row of errand.digest_schedule.
type schedule struct {
	Zone      string
	NextDue   time.Time
	LastDue   *time.Time
	ZoneError string
}

func scheduleOf(t testing.TB, pool *pgxpool.Pool, user string) schedule {
	t.Helper()
	var s schedule
	err := pool.QueryRow(context.Background(), `SELECT zone, next_due_at, last_due_at, coalesce(zone_error, '') FROM errand.digest_schedule WHERE user_id = $1`, user).
		Scan(&s.Zone, &s.NextDue, &s.LastDue, &s.ZoneError)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func local(t time.Time, loc *time.Location) string {
	return fmt.Sprint(t.In(loc).Format("2006-01-02 15:04 MST"))
}
