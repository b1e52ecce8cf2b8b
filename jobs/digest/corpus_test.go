package digest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/errand-dev/errand/errandtest"
)

// badInput is something an app can get wrong. In sql, $1 is a workspace,
// $2 a user who is a member of it, $3 another workspace and $4 a workspace
// that does not exist. scoped runs it in a transaction scoped to $1, as an
// app's tenant-scoped connection would.
type badInput struct {
	name, sql, code, message string
	scoped                   bool
}

const insertPref = `INSERT INTO errand.notification_preferences (workspace_id, user_id, frequency, timezone, hour, weekday) VALUES `

// upsertZone makes an insert the README's upsert, which changes the zone of
// a user who has a preference (the zone's stricter check, migration 043, is
// an AFTER trigger: a plain insert for that user meets the primary key
// first).
const upsertZone = ` ON CONFLICT (workspace_id, user_id) DO UPDATE SET timezone = EXCLUDED.timezone`

var corpus = []badInput{
	{name: "an unknown timezone", sql: insertPref + `($1, $2, 'daily', 'Mars/Olympus', 8, 1)`, code: "22023",
		message: "errand: notification preference timezone must be an IANA time zone name such as Europe/Berlin, got 'Mars/Olympus'"},
	{name: "a UTC offset for a timezone", sql: insertPref + `($1, $2, 'daily', '+02:00', 8, 1)`, code: "22023", message: "timezone must be an IANA time zone name"},
	{name: "a POSIX TZ string for a timezone (UTC+3 is three hours west)", sql: insertPref + `($1, $2, 'daily', 'UTC+3', 8, 1)` + upsertZone, code: "22023", message: "got 'UTC+3'"},
	{name: "a POSIX TZ string with a made-up name", sql: insertPref + `($1, $2, 'daily', 'Foo+3', 8, 1)` + upsertZone, code: "22023", message: "got 'Foo+3'"},
	{name: "a POSIX TZ string with a slash", sql: insertPref + `($1, $2, 'daily', 'UTC+3/UTC', 8, 1)` + upsertZone, code: "22023", message: "got 'UTC+3/UTC'"},
	{name: "a POSIX TZ string with a daylight-saving name", sql: insertPref + `($1, $2, 'daily', 'EST5/EDT', 8, 1)` + upsertZone, code: "22023", message: "got 'EST5/EDT'"},
	{name: "a time zone abbreviation for a timezone", sql: insertPref + `($1, $2, 'daily', 'PST', 8, 1)` + upsertZone, code: "22023", message: "got 'PST'"},
	{name: "a timezone in lowercase (Go's zone database is case-sensitive)", sql: insertPref + `($1, $2, 'daily', 'asia/kolkata', 8, 1)` + upsertZone, code: "22023", message: "got 'asia/kolkata'"},
	{name: "a timezone with one part in lowercase", sql: insertPref + `($1, $2, 'daily', 'Asia/kolkata', 8, 1)` + upsertZone, code: "22023", message: "got 'Asia/kolkata'"},
	{name: "a timezone with a capital in the wrong place", sql: insertPref + `($1, $2, 'daily', 'America/New_york', 8, 1)` + upsertZone, code: "22023", message: "got 'America/New_york'"},
	{name: "the server's own zone by the tz database's link (localtime)", sql: insertPref + `($1, $2, 'daily', 'localtime', 8, 1)` + upsertZone, code: "22023", message: "got 'localtime'"},
	{name: "the tz database's default rules file for a timezone", sql: insertPref + `($1, $2, 'daily', 'posixrules', 8, 1)` + upsertZone, code: "22023", message: "got 'posixrules'"},
	{name: "the tz database's placeholder zone", sql: insertPref + `($1, $2, 'daily', 'Factory', 8, 1)` + upsertZone, code: "22023", message: "got 'Factory'"},
	{name: "a zone from the tz database's posix/ copy", sql: insertPref + `($1, $2, 'daily', 'posix/Europe/Berlin', 8, 1)` + upsertZone, code: "22023", message: "got 'posix/Europe/Berlin'"},
	{name: "a zone from the tz database's right/ copy", sql: insertPref + `($1, $2, 'daily', 'right/UTC', 8, 1)` + upsertZone, code: "22023", message: "got 'right/UTC'"},
	{name: "a timezone in lowercase with spaces", sql: insertPref + `($1, $2, 'daily', 'europe berlin', 8, 1)`, code: "22023", message: "got 'europe berlin'"},
	{name: "a NULL timezone", sql: insertPref + `($1, $2, 'daily', NULL, 8, 1)`, code: "22023", message: "got NULL"},
	{name: "a bad frequency", sql: insertPref + `($1, $2, 'hourly', 'UTC', 8, 1)`, code: "22023",
		message: "errand: notification preference frequency must be one of: off, daily, weekly, got 'hourly'"},
	{name: "a frequency in capitals", sql: insertPref + `($1, $2, 'Daily', 'UTC', 8, 1)`, code: "22023", message: "got 'Daily'"},
	{name: "hour 24", sql: insertPref + `($1, $2, 'daily', 'UTC', 24, 1)`, code: "23514",
		message: "errand: notification preference hour must be between 0 and 23 (local time), got 24"},
	{name: "a negative hour", sql: insertPref + `($1, $2, 'daily', 'UTC', -1, 1)`, code: "23514", message: "got -1"},
	{name: "weekday 0 (Sunday as cron counts)", sql: insertPref + `($1, $2, 'weekly', 'UTC', 8, 0)`, code: "23514",
		message: "errand: notification preference weekday must be between 1 (Monday) and 7 (Sunday), got 0"},
	{name: "weekday 8", sql: insertPref + `($1, $2, 'weekly', 'UTC', 8, 8)`, code: "23514", message: "got 8"},
	{name: "a preference of a workspace that does not exist", sql: insertPref + `($4, $2, 'daily', 'UTC', 8, 1)`, code: "23503", message: "does not exist in errand.workspaces"},
	{name: "a preference without a user", sql: insertPref + `($1, NULL, 'daily', 'UTC', 8, 1)`, code: "23502", message: "errand: notification preference user_id is required"},
	{name: "a preference of another workspace, scoped", sql: insertPref + `($3, $2, 'daily', 'UTC', 8, 1)`, scoped: true, code: "42501",
		message: "written in a transaction scoped to workspace"},
	{name: "a notification without a title", sql: `INSERT INTO errand.notifications (workspace_id, user_id, title) VALUES ($1, $2, ' ')`, code: "23502", message: "errand: notification title is required"},
	{name: "a notification of another workspace, scoped", sql: `INSERT INTO errand.notifications (workspace_id, user_id, title) VALUES ($3, $2, 'hi')`, scoped: true, code: "42501",
		message: "errand: notification for workspace"},
	{name: "a notification of a workspace that does not exist", sql: `INSERT INTO errand.notifications (workspace_id, user_id, title) VALUES ($4, $2, 'hi')`, code: "23503", message: "does not exist in errand.workspaces"},
	{name: "a digest.send without a period", sql: `INSERT INTO errand.jobs (workspace_id, kind, args) VALUES ($1, 'digest.send', jsonb_build_object('user_id', $2::text))`, code: "22023",
		message: `errand: args for kind "digest.send" are missing required field(s): period`},
}

func TestBadInputIsRefusedWithAClearError(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	other := errandtest.NewWorkspace(t, pool, "globex")
	user := newUser(t, pool, ws, "ann@example.com", "off", "UTC", 8, 1)
	gone := "00000000-0000-4000-8000-000000000000"
	ctx := context.Background()
	for _, tc := range corpus {
		t.Run(tc.name, func(t *testing.T) {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if tc.scoped {
					if _, err := tx.Exec(ctx, `SELECT set_config('app.current_workspace_id', $1, true)`, ws); err != nil {
						return err
					}
				}
				sql := strings.NewReplacer("$1", "'"+ws+"'", "$2", "'"+user+"'", "$3", "'"+other+"'", "$4", "'"+gone+"'").Replace(tc.sql)
				_, err := tx.Exec(ctx, sql)
				return err
			})
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				t.Fatalf("want a PostgreSQL error, got %v", err)
			}
			if pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.message) {
				t.Errorf("got %s %q, want %s containing %q", pgErr.Code, pgErr.Message, tc.code, tc.message)
			}
		})
	}
}

// What the contract cannot tell fails the job at once, with the reason.
func TestBadArgsFailAtOnce(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	outsider := newUser(t, pool, errandtest.NewWorkspace(t, pool, "globex"), "bob@example.com", "daily", "UTC", 8, 1)
	cases := []struct{ name, args, want string }{
		{"a user id that is not a uuid", `{"user_id": "ann", "period": "2030-01-10"}`, `user_id "ann" is not a uuid`},
		{"a period that is no date", `{"user_id": "` + outsider + `", "period": "2030-02-30"}`, `period "2030-02-30" is not a date`},
		{"a period in another format", `{"user_id": "` + outsider + `", "period": "10/01/2030"}`, "must be a date such as 2026-11-27 or an ISO week such as 2026-W48"},
		{"a user of another workspace", `{"user_id": "` + outsider + `", "period": "2030-01-10"}`, "is not a member of this workspace"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id := errandtest.Enqueue(t, pool, ws, "digest.send", tc.args)
			j := errandtest.WaitJob(t, pool, id, 30*time.Second, "failed", "completed")
			if j.Status != "failed" || j.Attempt != 1 || !strings.Contains(j.LastError, tc.want) {
				t.Errorf("job %+v, want failed at once saying %q", j, tc.want)
			}
		})
	}
}

// Zone names PostgreSQL has a file for are accepted, those without a '/'
// (UTC, CET, EST5EDT, Japan) and those whose name has a sign (Etc/GMT+3)
// too: only abbreviations and POSIX TZ strings are refused (above).
func TestZoneNamesWithAFileAreAccepted(t *testing.T) {
	_, pool := errandtest.MigratedDB(t)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	for i, zone := range []string{"UTC", "CET", "EST5EDT", "Japan", "Etc/GMT+3", "America/Argentina/Buenos_Aires", "America/Port-au-Prince", "Europe/Berlin"} {
		newUser(t, pool, ws, fmt.Sprintf("u%d@example.com", i), "daily", zone, 8, 1)
	}
	// And a new user's insert with a POSIX string is refused.
	var user string
	if err := pool.QueryRow(context.Background(), `INSERT INTO errand.users (email) VALUES ('new@example.com') RETURNING id::text`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	_, err := pool.Exec(context.Background(), insertPref+`($1, $2, 'daily', 'UTC+3', 8, 1)`, ws, user)
	if err == nil || !strings.Contains(err.Error(), "got 'UTC+3'") {
		t.Errorf("a new preference in UTC+3: %v, want it refused", err)
	}
}

// A preference written before migration 043 with a zone it now refuses
// (an abbreviation PostgreSQL reads as a fixed offset) keeps working: the
// tick does not move it to UTC, and an update that leaves its timezone
// alone (turning digests off, another hour) is not refused for it; a new
// zone given in an update is checked.
func TestAPreferenceWrittenBeforeTheStricterZoneCheckKeepsWorking(t *testing.T) {
	url, pool := errandtest.MigratedDB(t)
	errandtest.StartDaemon(t, url, daemonEnv)
	ws := errandtest.NewWorkspace(t, pool, "acme")
	user := newUser(t, pool, ws, "ann@example.com", "daily", "UTC", 8, 1)
	// As it was before 043: the check then let PST through.
	exec(t, pool, `ALTER TABLE errand.notification_preferences DISABLE TRIGGER notification_preferences_zone_check`)
	exec(t, pool, `UPDATE errand.notification_preferences SET timezone = 'PST' WHERE user_id = $1`, user)
	exec(t, pool, `ALTER TABLE errand.notification_preferences ENABLE TRIGGER notification_preferences_zone_check`)
	if s := scheduleOf(t, pool, user); s.Zone != "PST" {
		t.Fatalf("schedule zone %q after the old write, want PST", s.Zone)
	}
	tick(t, url, pool, time.Date(2030, 1, 10, 12, 0, 0, 0, time.UTC))
	if s := scheduleOf(t, pool, user); s.Zone != "PST" || s.ZoneError != "" {
		t.Errorf("after a tick the schedule is %+v; want PST kept, no zone error", s)
	}
	exec(t, pool, `UPDATE errand.notification_preferences SET hour = 9 WHERE user_id = $1`, user)
	exec(t, pool, `UPDATE errand.notification_preferences SET frequency = 'off' WHERE user_id = $1`, user)
	// The README's upsert, with the zone the app stored.
	exec(t, pool, `INSERT INTO errand.notification_preferences (workspace_id, user_id, frequency, timezone, hour, weekday)
		VALUES ($1, $2, 'daily', 'PST', 8, 1)
		ON CONFLICT (workspace_id, user_id) DO UPDATE SET frequency = EXCLUDED.frequency, timezone = EXCLUDED.timezone,
		    hour = EXCLUDED.hour, weekday = EXCLUDED.weekday`, ws, user)
	_, err := pool.Exec(context.Background(), `UPDATE errand.notification_preferences SET timezone = 'UTC+3' WHERE user_id = $1`, user)
	if err == nil || !strings.Contains(err.Error(), "got 'UTC+3'") {
		t.Errorf("an update to UTC+3: %v, want it refused", err)
	}
}
